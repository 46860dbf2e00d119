#include "hypervisor/io/progress_watchdog.h"

#include <errno.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>

#include "common/log.h"

namespace axl::hv::io {

std::optional<std::string> stall_cause(uint32_t deadline_ms, uint64_t now_ns, uint32_t id,
                                       uint64_t sent_ns) {
  if (deadline_ms == 0 || now_ns <= sent_ns) return std::nullopt;
  uint64_t age_ms = (now_ns - sent_ns) / 1000000;
  if (age_ms <= deadline_ms) return std::nullopt;
  return "stalled: request " + std::to_string(id) + " outstanding for " + std::to_string(age_ms) +
         " ms";
}

ProgressWatchdog::ProgressWatchdog(uint32_t deadline_ms) : deadline_ms_(deadline_ms) {
  if (deadline_ms == 0) return;
  timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_) {
    AXL_ERROR("progress watchdog: timerfd: %s; stalls will go unseen", strerror(errno));
    return;
  }
  uint64_t period_ms = std::clamp<uint64_t>(deadline_ms / 4, 10, 1000);
  itimerspec its{};
  its.it_interval.tv_sec = time_t(period_ms / 1000);
  its.it_interval.tv_nsec = long(period_ms % 1000) * 1000000;
  its.it_value = its.it_interval;
  if (::timerfd_settime(timer_.get(), 0, &its, nullptr) < 0) {
    AXL_ERROR("progress watchdog: timerfd_settime: %s; stalls will go unseen", strerror(errno));
    timer_.reset();
  }
}

void ProgressWatchdog::ack() {
  uint64_t expirations;
  while (::read(timer_.get(), &expirations, sizeof expirations) < 0 && errno == EINTR) {
  }
}

}  // namespace axl::hv::io
