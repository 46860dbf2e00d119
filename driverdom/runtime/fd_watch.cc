#include "driverdom/runtime/fd_watch.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

#include <boost/asio/post.hpp>

#include "common/log.h"
#include "common/unique_fd.h"

namespace axl::driverdom {

namespace asio = boost::asio;

FdWatch::FdWatch(asio::io_context& io, int fd, std::string what, std::function<bool()> on_ready,
                 std::function<void(const std::string&)> on_error)
    : io_(io),
      sd_(io),
      what_(std::move(what)),
      on_ready_(std::move(on_ready)),
      on_error_(std::move(on_error)) {
  boost::system::error_code ec;
  sd_.assign(fd, ec);
  if (ec)
    AXL_WARN("cannot register %s (fd %d) with the loop: %s", what_.c_str(), fd,
             ec.message().c_str());
}

FdWatch::~FdWatch() {
  *alive_ = false;
  if (sd_.is_open()) {
    boost::system::error_code ec;
    sd_.cancel(ec);
    sd_.release();  // the fd belongs to someone else
  }
}

Status FdWatch::start() {
  if (!sd_.is_open()) return make_error("cannot watch " + what_);
  arm();
  return {};
}

void FdWatch::resume() {
  if (!paused_) return;
  paused_ = false;
  if (!busy_) arm();
}

void FdWatch::arm() {
  if (paused_) return;
  busy_ = true;
  if (poll_window_.enabled()) slept_since_ = std::chrono::steady_clock::now();
  std::shared_ptr<bool> alive = alive_;
  sd_.async_wait(asio::posix::stream_descriptor::wait_read,
                 [this, alive](const boost::system::error_code& ec) {
                   if (!*alive) return;
                   busy_ = false;
                   if (ec == asio::error::operation_aborted) return;
                   if (paused_) return;  // resume() waits again
                   if (ec) {
                     AXL_ERROR("waiting on %s failed: %s", what_.c_str(), ec.message().c_str());
                     if (on_error_) on_error_(ec.message());
                     return;
                   }
                   if (poll_window_.enabled())
                     poll_window_.slept(std::chrono::steady_clock::now() - slept_since_);
                   fire();
                 });
}

void FdWatch::fire() {
  std::shared_ptr<bool> alive = alive_;
  busy_ = true;
  bool more = on_ready_();
  // on_ready_ may have destroyed this watch (a detach, the control socket closing).
  if (!*alive) return;
  busy_ = false;
  if (paused_) return;
  if (more) {
    busy_ = true;
    asio::post(io_, [this, alive] {
      if (!*alive) return;
      busy_ = false;
      if (!paused_) fire();
    });
  } else if (poll_window_.current().count() > 0 && has_work_) {
    poll_until_ = std::chrono::steady_clock::now() + poll_window_.current();
    spin();
  } else {
    arm();
  }
}

void FdWatch::spin() {
  std::shared_ptr<bool> alive = alive_;
  busy_ = true;
  asio::post(io_, [this, alive] {
    if (!*alive) return;
    busy_ = false;
    if (paused_) return;
    const Poll p = has_work_();
    if (p == Poll::kWork)
      fire();
    else if (p == Poll::kIdle && std::chrono::steady_clock::now() < poll_until_)
      spin();
    else {
      if (p == Poll::kIdle) poll_window_.spun_empty();  // the idle back-off
      arm();
    }
  });
}

Status check_pollable(int fd) {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return make_error(std::string("epoll_create1: ") + strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
    return make_error("fd " + std::to_string(fd) + " cannot be polled: " + strerror(errno));
  return {};
}

}  // namespace axl::driverdom
