#include "cli/guest_exit.h"

#include <gtest/gtest.h>

namespace axl::cli {
namespace {

TEST(GuestExit, TheLastStatusCounts) {
  EXPECT_EQ(parse_guest_exit("boot\nAXL-GUEST-EXIT 3\r\nAXL-GUEST-EXIT 0\r\n").value(), 0);
  EXPECT_EQ(parse_guest_exit("AXL-GUEST-EXIT 255").value(), 255);
}

TEST(GuestExit, GarbageIsAnErrorNotACrash) {
  for (const char* bad :
       {"", "AXL-GUEST-EXIT ", "AXL-GUEST-EXIT 256\n", "AXL-GUEST-EXIT 99999999999999999999\n",
        "AXL-GUEST-EXIT -1\n", "AXL-GUEST-EXIT 7x\n", "AXL-GUEST-EXIT 1 2\n"}) {
    auto r = parse_guest_exit(bad);
    EXPECT_FALSE(r) << bad;
  }
}

}  // namespace
}  // namespace axl::cli
