// When a device last moved to a fresh channel and when the new driver
// instance first completed a request: the end of an outage as the guest
// sees it (docs/architecture.md "Data path").  Times are
// CLOCK_MONOTONIC nanoseconds, comparable across processes on one host.
#pragma once
#include <time.h>

#include <atomic>
#include <cstdint>

#include "hypervisor/guest_device.h"

namespace axl::hv::io {

inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

class ServiceClock {
 public:
  void rebound() {
    first_served_ns_.store(0, std::memory_order_relaxed);
    last_rebind_ns_.store(monotonic_ns(), std::memory_order_relaxed);
    rebinds_.fetch_add(1, std::memory_order_relaxed);
  }
  // Called for every valid completion (on the device thread); only the
  // first after a rebind counts, and then it returns true.
  bool served() {
    if (first_served_ns_.load(std::memory_order_relaxed) == 0 &&
        last_rebind_ns_.load(std::memory_order_relaxed) != 0) {
      first_served_ns_.store(monotonic_ns(), std::memory_order_relaxed);
      return true;
    }
    return false;
  }
  uint64_t last_rebind_ns() const { return last_rebind_ns_.load(std::memory_order_relaxed); }
  uint64_t first_served_ns() const { return first_served_ns_.load(std::memory_order_relaxed); }
  void fill(DeviceStats& s) const {
    s.rebinds = rebinds_.load(std::memory_order_relaxed);
    s.last_rebind_ns = last_rebind_ns_.load(std::memory_order_relaxed);
    s.first_served_ns = first_served_ns_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> rebinds_{0}, last_rebind_ns_{0}, first_served_ns_{0};
};

}  // namespace axl::hv::io
