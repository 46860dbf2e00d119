// The adaptive polling window (docs/architecture.md, "Polling"): how long a
// side of a channel keeps looking for the next piece of work before it
// sleeps.  It starts at the configured maximum (config::DriverConfig::poll_us),
// halves after a spin that found nothing (the idle back-off, down to 0: no
// spinning at all) and doubles, from at least an eighth of the maximum, when
// work woke a sleeper sooner than the maximum after it fell asleep (a spin
// that long would have caught it).  The CPU a spin may take is bounded by the
// window, and a side that saw no work takes none.
#pragma once
#include <algorithm>
#include <chrono>

namespace axl {

class PollWindow {
 public:
  PollWindow() = default;
  explicit PollWindow(std::chrono::microseconds max) : max_(max), cur_(max) {}
  bool enabled() const { return max_.count() > 0; }
  std::chrono::microseconds current() const { return cur_; }
  // A spin of current() ended without work.
  void spun_empty() { cur_ /= 2; }
  // The side slept `d` before work woke it.
  void slept(std::chrono::nanoseconds d) {
    if (enabled() && d < max_) cur_ = std::min(max_, std::max(cur_ * 2, max_ / 8));
  }

 private:
  std::chrono::microseconds max_{0};
  std::chrono::microseconds cur_{0};
};

}  // namespace axl
