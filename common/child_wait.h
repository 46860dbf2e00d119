// Waiting for a child process on an Asio loop, never blocking it.
#pragma once
#include <chrono>
#include <functional>
#include <memory>

#include "common/asio.h"
#include "common/unique_fd.h"

namespace axl::proc {

// Waits on the loop for a spawned child: a byte on its ready pipe (if it
// has one), its exit, or the deadline, whichever comes first; then calls
// back once, unless cancelled.
class ChildWait : public std::enable_shared_from_this<ChildWait> {
 public:
  enum class Outcome { kReady, kExited, kTimedOut };
  static std::shared_ptr<ChildWait> start(boost::asio::io_context& io, int pidfd, UniqueFd ready,
                                          std::chrono::milliseconds deadline,
                                          std::function<void(Outcome)> done);
  void cancel();

 private:
  explicit ChildWait(boost::asio::io_context& io) : timer_(io) {}
  void finish(Outcome o);
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_, ready_;
  boost::asio::steady_timer timer_;
  std::function<void(Outcome)> done_;
};

}  // namespace axl::proc
