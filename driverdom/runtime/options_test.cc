#include "driverdom/runtime/options.h"

#include <gtest/gtest.h>

namespace axl::driverdom {
namespace {

TEST(Options, NetWithTap) {
  auto o = parse_options({"--name", "nic0", "--kind", "net", "--hv-socket", "/s", "--tap-fd", "7"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->name, "nic0");
  EXPECT_EQ(o->kind, Kind::kNet);
  EXPECT_EQ(o->hv_socket, "/s");
  EXPECT_EQ(o->tap_fd, std::optional<int>(7));
}

TEST(Options, BlkWithoutTap) {
  auto o = parse_options({"--kind", "blk", "--hv-socket", "/s", "--name", "disk0"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->kind, Kind::kBlk);
  EXPECT_FALSE(o->tap_fd.has_value());
}

TEST(Options, Rejections) {
  using V = std::vector<std::string>;
  EXPECT_FALSE(parse_options(V{}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "scsi", "--hv-socket", "/s"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--hv-socket", "/s"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net", "--hv-socket"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net", "--hv-socket", "/s", "--tap-fd",
                               "2"})
                   .ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net", "--hv-socket", "/s", "--tap-fd",
                               "7x"})
                   .ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--tap-fd",
                               "7"})
                   .ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--verbose",
                               "1"})
                   .ok());
}

}  // namespace
}  // namespace axl::driverdom
