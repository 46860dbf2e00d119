// Readiness watch on an fd someone else owns, for the one Boost.Asio loop.
//
// The channel eventfds belong to DriverEnd and the TAP fd to NetDriver, so
// the watch must never close them: it hands the fd back (release()) when it
// goes away.  A readiness handler that was already queued when the watch was
// destroyed finds its liveness token cleared and does nothing.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/poll_window.h"
#include "common/result.h"

namespace axl::driverdom {

class FdWatch {
 public:
  // `on_ready` runs when the fd is readable.  It returns true when it stopped
  // early on its work budget: the watch then runs it again soon (posted)
  // instead of waiting for another readiness edge that may never come.
  // `on_error` runs once if the fd can no longer be waited on.
  FdWatch(boost::asio::io_context& io, int fd, std::string what, std::function<bool()> on_ready,
          std::function<void(const std::string&)> on_error = {});
  ~FdWatch();
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;

  // Registers the fd with the loop and waits for the first readiness.
  Status start();
  // Stops calling `on_ready` (even while the fd stays readable) until
  // resume().  Safe from inside `on_ready` and from any handler of the loop.
  void pause() { paused_ = true; }
  void resume();
  bool paused() const { return paused_; }
  // Polling (config::DriverConfig::poll_us): once on_ready has run out of
  // work, keep asking `poll` (a look at shared memory, no system call) for
  // up to the current window (at most `window`: common/poll_window.h adapts
  // it), yielding to the loop's other handlers in between, and call
  // on_ready again as soon as it answers kWork; kStop ends the spin at once
  // (the work to come is someone else's: spinning would take the CPU it
  // needs).  Then wait on the fd.  A zero window (the default) waits at once.
  enum class Poll { kWork, kIdle, kStop };
  void set_poll(std::chrono::microseconds window, std::function<Poll()> has_work) {
    poll_window_ = PollWindow(window);
    has_work_ = std::move(has_work);
  }
  // How long the spin after work lasts now.
  std::chrono::microseconds poll_window() const { return poll_window_.current(); }

 private:
  void arm();
  void fire();
  void spin();

  boost::asio::io_context& io_;
  boost::asio::posix::stream_descriptor sd_;
  std::string what_;
  std::function<bool()> on_ready_;
  std::function<void(const std::string&)> on_error_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool paused_ = false;
  bool busy_ = false;  // a wait, a posted fire or on_ready itself is pending
  PollWindow poll_window_;
  std::chrono::steady_clock::time_point slept_since_;
  std::function<Poll()> has_work_;
  std::chrono::steady_clock::time_point poll_until_;
};

// An fd the loop can wait on must be pollable; a regular file or directory
// registers "fine" with Asio and then never becomes ready, so check first.
Status check_pollable(int fd);

}  // namespace axl::driverdom
