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

TEST(Options, SandboxedWithConnectedSocket) {
  auto o = parse_options({"--name", "d", "--kind", "blk", "--hv-fd", "5", "--sandbox", "--host-pid",
                          "1234", "--fault-injection", "--hv-pid", "99"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->hv_fd, std::optional<int>(5));
  EXPECT_TRUE(o->sandbox);
  EXPECT_EQ(o->host_pid, std::optional<int>(1234));
  EXPECT_EQ(o->hv_pid, std::optional<int>(99));
}

TEST(Options, SandboxRejections) {
  using V = std::vector<std::string>;
  // The hypervisor's PID is for the escape hooks only.
  EXPECT_FALSE(
      parse_options(V{"--name", "d", "--kind", "blk", "--hv-fd", "5", "--hv-pid", "9"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "d", "--kind", "blk", "--hv-fd", "5", "--host-pid", "0"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "d", "--kind", "blk", "--hv-fd", "5", "--supervisor-fd", "5"})
          .ok());
  EXPECT_FALSE(parse_options(V{"--name", "d", "--kind", "blk", "--hv-fd", "1"}).ok());
}

TEST(Options, ParkedSpare) {
  using V = std::vector<std::string>;
  auto o = parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--supervisor-fd",
                           "4", "--parked", "--sandbox"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_TRUE(o->parked);
  EXPECT_FALSE(o->standby);
  // Parked waits on the health channel; its connection comes at start.
  EXPECT_FALSE(
      parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--parked"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s",
                               "--supervisor-fd", "4", "--parked", "--standby"})
                   .ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "blk", "--hv-fd", "5", "--supervisor-fd",
                               "4", "--parked"})
                   .ok());
}

TEST(Options, ErrorsNameTheOption) {
  auto o = parse_options({"--name", "x", "--kind", "net", "--hv-socket", "/s", "--tap-fd", "2"});
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.error().message.find("--tap-fd"), std::string::npos) << o.error().message;
  EXPECT_NE(o.error().message.find(">= 3"), std::string::npos) << o.error().message;
  auto k = parse_options({"--name", "x", "--kind", "scsi", "--hv-socket", "/s"});
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.error().message.find("--kind"), std::string::npos) << k.error().message;
}

TEST(Options, Rejections) {
  using V = std::vector<std::string>;
  EXPECT_FALSE(parse_options(V{}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "scsi", "--hv-socket", "/s"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--hv-socket", "/s"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net"}).ok());
  EXPECT_FALSE(parse_options(V{"--name", "x", "--kind", "net", "--hv-socket"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "x", "--kind", "net", "--hv-socket", "/s", "--tap-fd", "2"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "x", "--kind", "net", "--hv-socket", "/s", "--tap-fd", "7x"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--tap-fd", "7"}).ok());
  EXPECT_FALSE(
      parse_options(V{"--name", "x", "--kind", "blk", "--hv-socket", "/s", "--verbose", "1"}).ok());
}

}  // namespace
}  // namespace axl::driverdom
