#include "common/child_wait.h"

#include <unistd.h>

namespace axl::proc {

namespace asio = boost::asio;

std::shared_ptr<ChildWait> ChildWait::start(asio::io_context& io, int pidfd, UniqueFd ready,
                                            std::chrono::milliseconds deadline,
                                            std::function<void(Outcome)> done) {
  std::shared_ptr<ChildWait> w(new ChildWait(io));
  w->done_ = std::move(done);
  w->exit_ = std::make_unique<asio::posix::stream_descriptor>(io, ::dup(pidfd));
  w->exit_->async_wait(asio::posix::stream_descriptor::wait_read,
                       [w](const boost::system::error_code& ec) {
                         if (!ec) w->finish(Outcome::kExited);
                       });
  if (ready) {
    w->ready_ = std::make_unique<asio::posix::stream_descriptor>(io, ready.release());
    w->ready_->async_wait(
        asio::posix::stream_descriptor::wait_read, [w](const boost::system::error_code& ec) {
          if (ec) return;
          char c;
          // A byte: it listens.  EOF: it closed the pipe without saying so.
          w->finish(::read(w->ready_->native_handle(), &c, 1) == 1 ? Outcome::kReady
                                                                   : Outcome::kExited);
        });
  }
  w->timer_.expires_after(deadline);
  w->timer_.async_wait([w](const boost::system::error_code& ec) {
    if (!ec) w->finish(Outcome::kTimedOut);
  });
  return w;
}

void ChildWait::cancel() {
  done_ = nullptr;
  boost::system::error_code ec;
  timer_.cancel();
  if (exit_) exit_->cancel(ec);
  if (ready_) ready_->cancel(ec);
}

void ChildWait::finish(Outcome o) {
  auto done = std::move(done_);
  cancel();
  if (done) done(o);
}

}  // namespace axl::proc
