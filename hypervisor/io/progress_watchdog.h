// Progress watchdog of one device channel (docs/architecture.md, "Data
// path"): a hang is also "requests outstanding without progress past a
// deadline".  A driver whose event loop still answers heartbeats may
// have stopped completing requests; only the device sees that.  The device
// polls fd() on its thread and, when it fires, asks stall_cause() about its
// oldest outstanding request.  Requests that legitimately wait for the
// outside world (net RX buffers posted for frames that may never come) are
// not outstanding in this sense and are never handed to it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "common/unique_fd.h"

namespace axl::hv::io {

// The cause to report when request `id`, sent at `sent_ns`, is still
// outstanding at `now_ns` past `deadline_ms`; nullopt while it is not, or
// when the watchdog is disabled (deadline 0).  Clock: CLOCK_MONOTONIC ns.
std::optional<std::string> stall_cause(uint32_t deadline_ms, uint64_t now_ns, uint32_t id,
                                       uint64_t sent_ns);

class ProgressWatchdog {
 public:
  // deadline_ms == 0: disabled, fd() is -1.  The timer ticks at a quarter of
  // the deadline (10 ms .. 1 s), so a stall is seen within 1.25 deadlines.
  explicit ProgressWatchdog(uint32_t deadline_ms);
  uint32_t deadline_ms() const { return deadline_ms_; }
  int fd() const { return timer_ ? timer_.get() : -1; }
  // Drains the timer after fd() polled readable.
  void ack();

 private:
  uint32_t deadline_ms_;
  UniqueFd timer_;
};

}  // namespace axl::hv::io
