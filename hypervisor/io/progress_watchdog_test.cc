#include "hypervisor/io/progress_watchdog.h"

#include <gtest/gtest.h>
#include <poll.h>

namespace axl::hv::io {
namespace {

constexpr uint64_t kMs = 1000000;

TEST(StallCause, OnlyPastTheDeadline) {
  EXPECT_FALSE(stall_cause(1000, 5000 * kMs, 3, 4500 * kMs));  // 500 ms old
  EXPECT_FALSE(stall_cause(1000, 5000 * kMs, 3, 4000 * kMs));  // exactly the deadline
  auto c = stall_cause(1000, 5000 * kMs, 17, 3000 * kMs);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, "stalled: request 17 outstanding for 2000 ms");
}

TEST(StallCause, DisabledOrClockBehind) {
  EXPECT_FALSE(stall_cause(0, 100000 * kMs, 1, 0));            // io_timeout_ms = 0
  EXPECT_FALSE(stall_cause(1000, 1000 * kMs, 1, 9000 * kMs));  // sent "after" now
}

TEST(ProgressWatchdog, DisabledHasNoFd) {
  ProgressWatchdog w(0);
  EXPECT_EQ(w.fd(), -1);
  EXPECT_EQ(w.deadline_ms(), 0u);
}

TEST(ProgressWatchdog, TicksUntilAcked) {
  ProgressWatchdog w(40);  // ticks every 10 ms
  ASSERT_GE(w.fd(), 0);
  pollfd p{w.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  w.ack();
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0);     // drained
  ASSERT_EQ(::poll(&p, 1, 2000), 1);  // and it keeps ticking
}

}  // namespace
}  // namespace axl::hv::io
