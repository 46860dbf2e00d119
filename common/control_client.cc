#include "common/control_client.h"

#include <capnp/message.h>
#include <sys/socket.h>

namespace axl::control {

namespace {
Result<ControlReply> check(wire::Received r) {
  ControlReply reply(std::move(r));
  try {
    auto rr = reply.get();
    if (!rr.getOk()) return make_error(rr.getError());
  } catch (const kj::Exception& e) {
    return make_error(std::string("malformed reply: ") + e.getDescription().cStr());
  }
  return reply;
}

class Call final : public PendingCall, public std::enable_shared_from_this<Call> {
 public:
  Call(boost::asio::io_context& io, UniqueFd sock, std::function<void(Result<ControlReply>)> done)
      : sock_(io, sock.release()), timer_(io), done_(std::move(done)) {}

  void start(int timeout_ms) {
    timer_.expires_after(std::chrono::milliseconds(timeout_ms));
    timer_.async_wait([self = shared_from_this(), timeout_ms](const boost::system::error_code& ec) {
      if (ec) return;
      self->finish(
          make_error(Errc::kTimeout, "no reply within " + std::to_string(timeout_ms) + " ms"));
    });
    wait();
  }

  void cancel() override {
    done_ = nullptr;
    boost::system::error_code ec;
    timer_.cancel();
    sock_.cancel(ec);
  }

 private:
  void wait() {
    sock_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       if (ec || !self->done_) return;
                       auto r = wire::recv(self->sock_.native_handle(), MSG_DONTWAIT);
                       if (!r && r.error().code == Errc::kWouldBlock) return self->wait();
                       if (!r) return self->finish(r.error());
                       self->finish(check(std::move(r).value()));
                     });
  }

  void finish(Result<ControlReply> r) {
    auto done = std::move(done_);
    done_ = nullptr;
    boost::system::error_code ec;
    timer_.cancel();
    sock_.cancel(ec);
    sock_.close(ec);
    if (done) done(std::move(r));
  }

  boost::asio::posix::stream_descriptor sock_;
  boost::asio::steady_timer timer_;
  std::function<void(Result<ControlReply>)> done_;
};

struct Failed final : PendingCall {
  void cancel() override { alive = false; }
  bool alive = true;
};
}  // namespace

std::shared_ptr<PendingCall> async_call(
    boost::asio::io_context& io, const std::string& socket,
    const std::function<void(schema::ControlRequest::Builder)>& fill, int timeout_ms,
    std::function<void(Result<ControlReply>)> done) {
  // A Unix socket's connect and a send of one small packet do not wait on
  // the peer's loop: only the reply is waited for, asynchronously.
  auto s = wire::connect(socket);
  Status sent;
  if (s) {
    capnp::MallocMessageBuilder mb;
    fill(mb.initRoot<schema::ControlRequest>());
    sent = wire::send(s->get(), mb);
  }
  if (!s || !sent) {
    auto f = std::make_shared<Failed>();
    Error e = !s ? s.error() : sent.error();
    boost::asio::post(io, [f, e, done = std::move(done)] {
      if (f->alive) done(e);
    });
    return f;
  }
  auto c = std::make_shared<Call>(io, std::move(s).value(), std::move(done));
  c->start(timeout_ms);
  return c;
}

Result<ControlReply> call(const std::string& socket,
                          const std::function<void(schema::ControlRequest::Builder)>& fill,
                          int timeout_ms) {
  auto s = wire::connect(socket);
  if (!s) return s.error();
  capnp::MallocMessageBuilder mb;
  fill(mb.initRoot<schema::ControlRequest>());
  if (auto st = wire::send(s->get(), mb); !st) return st.error();
  auto r = wire::recv_timeout(s->get(), timeout_ms);
  if (!r) return r.error();
  return check(std::move(r).value());
}

}  // namespace axl::control
