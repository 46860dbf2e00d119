// Answers the supervisor's heartbeats (common/schema/supervisor.capnp) from
// a domain's event loop (driver or vTPM): a loop that stops turning, or a
// stopped process, stops answering, which is how the supervisor tells a
// hang.  `healthy`, if given, is asked before each answer: a domain whose
// work is stuck elsewhere (a vTPM command that never ends) withholds it.
// When the supervisor's end closes, `on_lost` runs once (domains serve on:
// their data path never depends on the supervisor).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "common/asio.h"
#include "common/fault_trigger.h"
#include "common/unique_fd.h"

namespace axl {

class HeartbeatResponder {
 public:
  HeartbeatResponder(boost::asio::io_context& io, UniqueFd fd, std::function<void()> on_lost,
                     std::function<void(const std::string&, const FaultTrigger&)> on_fault,
                     std::function<bool()> healthy = {});
  uint64_t answered() const { return answered_; }

 private:
  void arm();
  UniqueFd fd_;
  boost::asio::posix::stream_descriptor watch_;
  std::function<void()> on_lost_;
  std::function<void(const std::string&, const FaultTrigger&)> on_fault_;
  std::function<bool()> healthy_;
  uint64_t answered_ = 0;
};

}  // namespace axl
