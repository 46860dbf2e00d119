// The device-kind table: a row for every kind, each row's parts consistent.
#include "hypervisor/daemon/device_kinds.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include "capnp/message.h"

namespace axl::hv {
namespace {

constexpr config::DriverKind kAll[] = {config::DriverKind::kBlk, config::DriverKind::kNet};

TEST(DeviceKinds, EveryKindHasARowNamedAsInTheConfig) {
  for (auto k : kAll) {
    const DeviceKind& d = device_kind(k);
    EXPECT_EQ(d.kind, k);
    EXPECT_STREQ(d.name, config::to_string(k));
    ChannelShape s = d.shape();
    EXPECT_GT(s.slots, 0u);
    EXPECT_EQ(s.slots & (s.slots - 1), 0u) << d.name << ": slots must be a power of two";
    EXPECT_EQ(s.slot_size % 64, 0u) << d.name;
  }
}

TEST(DeviceKinds, BlkAttachCarriesTheImageAndItsSettings) {
  DeviceRequest req;
  req.kind = config::DriverKind::kBlk;
  DriverConnection::AttachArgs args;
  EXPECT_FALSE(device_kind(req.kind).attach(req, args).ok());  // no image
  req.image.reset(::eventfd(0, EFD_CLOEXEC));
  req.blk = BlkDeviceSpec{4096, true, "disk-serial"};
  ASSERT_TRUE(device_kind(req.kind).attach(req, args).ok());
  ASSERT_EQ(args.fds.size(), 1u);
  EXPECT_EQ(args.fds[0], req.image.get());
  capnp::MallocMessageBuilder mb;
  auto at = mb.initRoot<schema::Attach>();
  args.kind_part(at);
  ASSERT_TRUE(at.isBlk());
  EXPECT_TRUE(at.getBlk().getReadOnly());
  EXPECT_EQ(std::string(at.getBlk().getSerial().cStr()), "disk-serial");
}

TEST(DeviceKinds, NetAttachCarriesTheMac) {
  DeviceRequest req;
  req.kind = config::DriverKind::kNet;
  req.net.mac = {0x52, 0x54, 0, 1, 2, 3};
  DriverConnection::AttachArgs args;
  ASSERT_TRUE(device_kind(req.kind).attach(req, args).ok());
  EXPECT_TRUE(args.fds.empty());
  capnp::MallocMessageBuilder mb;
  auto at = mb.initRoot<schema::Attach>();
  args.kind_part(at);
  ASSERT_TRUE(at.isNet());
  auto mac = at.getNet().getMac();
  ASSERT_EQ(mac.size(), 6u);
  EXPECT_EQ(mac[5], 3);
}

}  // namespace
}  // namespace axl::hv
