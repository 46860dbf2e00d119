// Answers the supervisor's heartbeats (common/schema/supervisor.capnp) from
// the driver's event loop: a loop that stops turning, or a stopped process,
// stops answering, which is how the supervisor tells a hang.  When the
// supervisor goes away the driver has no one to watch it and exits.
#pragma once
#include <functional>
#include <memory>

#include "common/asio.h"
#include "common/unique_fd.h"

namespace axl::driverdom {

class HeartbeatResponder {
 public:
  HeartbeatResponder(boost::asio::io_context& io, UniqueFd fd, std::function<void()> on_lost,
                     std::function<void(const std::string&)> on_fault);
  uint64_t answered() const { return answered_; }

 private:
  void arm();
  UniqueFd fd_;
  boost::asio::posix::stream_descriptor watch_;
  std::function<void()> on_lost_;
  std::function<void(const std::string&)> on_fault_;
  uint64_t answered_ = 0;
};

}  // namespace axl::driverdom
