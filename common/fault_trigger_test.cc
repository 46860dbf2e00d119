#include "common/fault_trigger.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace axl {
namespace {

// The index of the tick that fires, or -1 within `limit`.
int fires_at(const FaultTrigger& t, int limit = 100000) {
  TriggerState s(t);
  for (int i = 0; i < limit; ++i)
    if (s.tick()) return i;
  return -1;
}

TEST(FaultTrigger, AfterNRequestsTheNextFires) {
  EXPECT_TRUE(FaultTrigger{}.immediate());
  EXPECT_FALSE((FaultTrigger{5, 0, 0}).immediate());
  EXPECT_EQ(fires_at({0, 0, 0}), 0);
  EXPECT_EQ(fires_at({5, 0, 0}), 5);
  EXPECT_EQ(fires_at({5, 1, 0}), 5);
}

TEST(FaultTrigger, ProbabilityIsSeededAndReproducible) {
  EXPECT_EQ(fires_at({3, 0.01, 42}), fires_at({3, 0.01, 42}));
  // Different seeds pick different requests (over many seeds, not all alike),
  // never before `after`, and the mean lands near 1/p.
  std::vector<int> at;
  double sum = 0;
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    int i = fires_at({10, 0.05, seed});
    ASSERT_GE(i, 10);
    at.push_back(i);
    sum += i - 10;
  }
  EXPECT_NE(std::count(at.begin(), at.end(), at[0]), long(at.size()));
  const double mean = sum / double(at.size());  // geometric: (1 - p) / p = 19
  EXPECT_GT(mean, 14);
  EXPECT_LT(mean, 25);
}

TEST(FaultTrigger, ProbabilityOutsideZeroToOneIsRefused) {
  EXPECT_TRUE((FaultTrigger{0, 0.5, 0}).check().ok());
  EXPECT_TRUE((FaultTrigger{0, 1, 0}).check().ok());
  EXPECT_EQ((FaultTrigger{0, 1.5, 0}).check().error().message,
            "probability must be between 0 and 1");
  EXPECT_FALSE((FaultTrigger{0, -0.1, 0}).check().ok());
  EXPECT_FALSE((FaultTrigger{0, std::nan(""), 0}).check().ok());
}

}  // namespace
}  // namespace axl
