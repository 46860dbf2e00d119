#include "supervisor/monitor/notify.h"

#include <gtest/gtest.h>

namespace axl::monitor {
namespace {

TEST(Notice, StoreWithName) {
  auto n = parse_notice("FDSTORE=1\nFDNAME=driver.blk0.42\n");
  ASSERT_TRUE(n);
  EXPECT_TRUE(n->store);
  EXPECT_FALSE(n->remove);
  EXPECT_EQ(n->name, "driver.blk0.42");
}

TEST(Notice, RemoveAndReady) {
  auto n = parse_notice("FDSTOREREMOVE=1\nFDNAME=x");
  ASSERT_TRUE(n);
  EXPECT_TRUE(n->remove);
  auto r = parse_notice("READY=1\nSTATUS=serving");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ready);
  EXPECT_FALSE(r->store);
}

TEST(Notice, RejectsWhatItCannotHonour) {
  EXPECT_FALSE(parse_notice("FDSTORE=1"));              // no name
  EXPECT_FALSE(parse_notice("FDSTORE=1\nFDNAME=a:b"));  // ':' separates names
  EXPECT_FALSE(parse_notice("FDSTORE=1\nFDNAME=" + std::string(256, 'a')));
  EXPECT_FALSE(parse_notice("FDSTORE=1\nFDSTOREREMOVE=1\nFDNAME=a"));
  EXPECT_FALSE(parse_notice("garbage"));
  EXPECT_FALSE(parse_notice("=1"));
}

}  // namespace
}  // namespace axl::monitor
