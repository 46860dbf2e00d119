// The guest-IOMMU path end to end inside one process: a synthetic front-end
// acks VIRTIO_F_ACCESS_PLATFORM, programs the device IOTLB and answers misses
// on the back-end channel, against the real blk device (make_blk_device) and
// a fake driver domain.  Ring and buffer addresses are IOVAs offset from the
// guest-physical ones, so a device that skipped translation would miss.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <mutex>
#include <numeric>

#include "hypervisor/guest_device.h"
#include "hypervisor/io/blk/device.h"
#include "hypervisor/io/net/device.h"
#include "hypervisor/io/testing/fake_driver.h"
#include "hypervisor/io/testing/frontend.h"

namespace axl::hv::io {
namespace {

using vhost_user::IotlbType;
using vhost_user::testing::Frontend;
namespace b = blk;

constexpr uint64_t kDiskBytes = 1 << 20;
constexpr uint64_t kOffset = 0x40'0000'0000;  // IOVA = gpa + kOffset

struct IommuBlk : ::testing::Test {
  std::string dir, sock;
  std::vector<uint8_t> disk = std::vector<uint8_t>(kDiskBytes);
  std::unique_ptr<testing::FakeDriver> driver;
  std::unique_ptr<GuestDevice> dev;
  Frontend fe;

  static constexpr uint64_t kHdr = Frontend::kGpaBase + 0x100000;
  static constexpr uint64_t kStatus = Frontend::kGpaBase + 0x180000;
  static constexpr uint64_t kData = Frontend::kGpaBase + 0x200000;

  void SetUp() override {
    char tmpl[] = "/tmp/axl-iommu-XXXXXX";
    dir = ::mkdtemp(tmpl);
    sock = dir + "/blk.sock";
    std::iota(disk.begin(), disk.end(), 0);
    auto shape = blk_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = std::make_unique<testing::FakeDriver>(
        std::move(*ch.drv),
        [this](channel::DriverEnd& d,
               const channel::Request& r) -> std::optional<channel::Response> {
          channel::Response resp{r.id, 0, 0, 0};
          uint64_t off = r.sector * 512;
          if (static_cast<channel::Op>(r.op) == channel::Op::kBlkRead) {
            memcpy(d.slot(r.id), disk.data() + off, r.len);
            resp.len = r.len;
          } else if (static_cast<channel::Op>(r.op) == channel::Op::kBlkWrite) {
            memcpy(disk.data() + off, d.slot(r.id), r.len);
          }
          return resp;
        });
    dev = make_blk_device(sock, BlkDeviceSpec{kDiskBytes, false, "s"}, std::move(*ch.hv));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(fe.connect(sock));
    fe.use_iommu(kOffset);
    fe.handshake(1, ~0ull);
    ASSERT_TRUE(fe.features() & virtio::bit(vhost_user::kFAccessPlatform));
  }
  void TearDown() override {
    dev.reset();
    driver.reset();
    ::rmdir(dir.c_str());
  }
  void put_hdr(uint32_t type, uint64_t sector) {
    uint8_t h[16] = {};
    memcpy(h, &type, 4);
    memcpy(h + 8, &sector, 8);
    memcpy(fe.at(kHdr), h, 16);
    *fe.at(kStatus) = 0xff;
  }
  // A 4 KiB read of sector `sector` into kData.
  uint16_t read4k(uint64_t sector) {
    put_hdr(b::kTIn, sector);
    return fe.add_chain(0, {{kHdr, 16, false}, {kData, 4096, true}, {kStatus, 1, true}});
  }
  uint8_t status() { return *fe.at(kStatus); }
};

TEST_F(IommuBlk, ReadAndWriteThroughOffsetMappings) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);     // RO: the device reads headers
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);  // WO: it writes status bytes
  ASSERT_EQ(fe.map(kData, 0x2000, 3), 0u);
  read4k(2);
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].len, 4097u);
  EXPECT_EQ(status(), b::kSOk);
  EXPECT_EQ(memcmp(fe.at(kData), disk.data() + 1024, 4096), 0);
  // Write: 4 KiB pattern to sector 8.
  memset(fe.at(kData + 0x1000), 0x5a, 4096);
  put_hdr(b::kTOut, 8);
  fe.add_chain(0, {{kHdr, 16, false}, {kData + 0x1000, 4096, false}, {kStatus, 1, true}});
  u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSOk);
  EXPECT_EQ(disk[8 * 512], 0x5a);
  EXPECT_EQ(disk[8 * 512 + 4095], 0x5a);
  auto st = dev->stats();
  EXPECT_EQ(st.iommu_faults, 0u);
  EXPECT_GE(st.iotlb_updates, 4u);  // ring + three buffers
}

TEST_F(IommuBlk, MissIsAskedAndTheAnswerCompletesTheRequest) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);
  read4k(1);  // kData is not mapped yet
  auto miss = fe.next_miss();
  ASSERT_TRUE(miss);
  EXPECT_EQ(miss->type, IotlbType::kMiss);
  EXPECT_EQ(miss->iova, fe.iova(kData));
  EXPECT_EQ(miss->perm, 2);  // the device wants to write there
  // Nothing completes while the miss is outstanding.
  EXPECT_EQ(fe.used_idx(0), 0u);
  ASSERT_EQ(fe.map(kData, 0x1000, 3), 0u);
  fe.answer_miss(true);
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSOk);
  EXPECT_EQ(memcmp(fe.at(kData), disk.data() + 512, 4096), 0);
  EXPECT_EQ(dev->stats().iotlb_misses, 1u);
  EXPECT_EQ(dev->stats().iommu_faults, 0u);
}

TEST_F(IommuBlk, UntranslatableBufferFailsTheRequestWithIoErr) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);
  memset(fe.at(kData), 0xee, 4096);
  read4k(1);
  ASSERT_TRUE(fe.next_miss());
  fe.answer_miss(false);  // the guest never mapped it
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSIoErr);
  EXPECT_EQ(*fe.at(kData), 0xee);  // nothing written
  EXPECT_GE(dev->stats().iommu_faults, 1u);
}

TEST_F(IommuBlk, ReadOnlyMappingIsNeverWrittenByTheDevice) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);
  ASSERT_EQ(fe.map(kData, 0x1000, 1), 0u);  // RO, but a read request writes it
  memset(fe.at(kData), 0xee, 4096);
  read4k(1);
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSIoErr);
  EXPECT_EQ(*fe.at(kData), 0xee);
  EXPECT_GE(dev->stats().iommu_faults, 1u);
  // A write-only header cannot be read either.
  ASSERT_EQ(fe.map(kHdr, 0x1000, 2), 0u);
  ASSERT_EQ(fe.map(kData, 0x1000, 3), 0u);
  read4k(1);
  u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSIoErr);
  EXPECT_EQ(*fe.at(kData), 0xee);
}

TEST_F(IommuBlk, InvalidationTakesEffectBeforeTheNextAccess) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);
  ASSERT_EQ(fe.map(kData, 0x1000, 3), 0u);
  read4k(1);
  ASSERT_EQ(fe.wait_used(0, 1).size(), 1u);
  EXPECT_EQ(status(), b::kSOk);
  ASSERT_EQ(fe.iotlb(IotlbType::kInvalidate, fe.iova(kData), 0x1000, 0, 0), 0u);
  memset(fe.at(kData), 0xee, 4096);
  read4k(2);
  // The stale translation is not used: the device asks again.
  auto miss = fe.next_miss();
  ASSERT_TRUE(miss);
  EXPECT_EQ(miss->iova, fe.iova(kData));
  fe.answer_miss(false);
  ASSERT_EQ(fe.wait_used(0, 1).size(), 1u);
  EXPECT_EQ(status(), b::kSIoErr);
  EXPECT_EQ(*fe.at(kData), 0xee);
  EXPECT_GE(dev->stats().iotlb_invalidates, 1u);
}

TEST_F(IommuBlk, RingInvalidationSuspendsUntilRemapped) {
  ASSERT_EQ(fe.map(kHdr, 0x1000, 1), 0u);
  ASSERT_EQ(fe.map(kStatus, 0x1000, 2), 0u);
  ASSERT_EQ(fe.map(kData, 0x1000, 3), 0u);
  // Everything invalidated (what a guest's global flush does).
  ASSERT_EQ(fe.iotlb(IotlbType::kInvalidate, 0, 0, 0, 0), 0u);
  read4k(3);
  // The ring's own pages are asked for first; nothing is touched meanwhile.
  std::vector<uint64_t> asked;
  for (;;) {
    auto miss = fe.next_miss(500);
    if (!miss) break;
    asked.push_back(miss->iova);
    // Answer by re-mapping what was asked (QEMU's behaviour).
    uint64_t gpa = miss->iova - kOffset;
    ASSERT_EQ(fe.map(gpa & ~0xfffull, 0x1000, 3), 0u);
    fe.answer_miss(true);
    if (fe.used_idx(0) == 1) break;
  }
  EXPECT_FALSE(asked.empty());
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(), b::kSOk);
  EXPECT_EQ(memcmp(fe.at(kData), disk.data() + 3 * 512, 4096), 0);
  EXPECT_EQ(dev->stats().iommu_faults, 0u);
}

TEST_F(IommuBlk, BadIotlbMessagesAreRefused) {
  // Bad permission: the connection is closed as for any malformed message.
  vhost_user::IotlbMsg m{fe.iova(kData), 0x1000, fe.uva(kData), 7, IotlbType::kUpdate};
  ASSERT_TRUE(vhost_user::send_request(fe.sock(), vhost_user::Req::kIotlbMsg,
                                       vhost_user::kFlagNeedReply, vhost_user::encode_iotlb(m))
                  .ok());
  uint8_t buf[64];
  EXPECT_EQ(::recv(fe.sock(), buf, sizeof buf, 0), 0);
}

struct IommuNet : ::testing::Test {
  std::string dir, sock;
  std::mutex mu;
  std::vector<std::vector<uint8_t>> sent;
  std::unique_ptr<testing::FakeDriver> driver;
  std::unique_ptr<GuestDevice> dev;
  Frontend fe;
  static constexpr uint64_t kBufs = Frontend::kGpaBase + 0x100000;

  void SetUp() override {
    char tmpl[] = "/tmp/axl-iommu-XXXXXX";
    dir = ::mkdtemp(tmpl);
    sock = dir + "/net.sock";
    auto shape = net_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = std::make_unique<testing::FakeDriver>(
        std::move(*ch.drv),
        [this](channel::DriverEnd& d,
               const channel::Request& r) -> std::optional<channel::Response> {
          if (r.op == uint16_t(channel::Op::kNetRxPost)) return std::nullopt;
          std::lock_guard<std::mutex> g(mu);
          sent.emplace_back(d.slot(r.id), d.slot(r.id) + r.len);
          return channel::Response{r.id, 0, 0, 0};
        });
    dev = make_net_device(sock, NetDeviceSpec{{2, 0, 0, 0, 0, 1}}, std::move(*ch.hv));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(fe.connect(sock));
    fe.use_iommu(kOffset);
    fe.handshake(2, ~0ull);
  }
  void TearDown() override {
    dev.reset();
    driver.reset();
    ::rmdir(dir.c_str());
  }
  size_t sent_count() {
    std::lock_guard<std::mutex> g(mu);
    return sent.size();
  }
};

TEST_F(IommuNet, TxFramesFromForbiddenBuffersAreDropped) {
  memset(fe.at(kBufs), 0, 12);
  memset(fe.at(kBufs + 0x1000), 0x42, 60);
  memset(fe.at(kBufs + 0x2000), 0x43, 60);
  ASSERT_EQ(fe.map(kBufs, 0x1000, 1), 0u);           // header: RO, fine for TX
  ASSERT_EQ(fe.map(kBufs + 0x2000, 0x1000, 2), 0u);  // WO: the device may not read it
  // A frame in a page the guest never mapped: asked, refused, dropped.
  fe.add_chain(net::kTxQueue, {{kBufs, 12, false}, {kBufs + 0x1000, 60, false}});
  ASSERT_TRUE(fe.next_miss());
  fe.answer_miss(false);
  auto u = fe.wait_used(net::kTxQueue, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].len, 0u);
  // A frame in a write-only page: dropped at once.
  fe.add_chain(net::kTxQueue, {{kBufs, 12, false}, {kBufs + 0x2000, 60, false}});
  ASSERT_EQ(fe.wait_used(net::kTxQueue, 1).size(), 1u);
  EXPECT_EQ(sent_count(), 0u);
  EXPECT_GE(dev->stats().iommu_faults, 2u);
  // A readable mapping: the frame goes out, bytes intact.
  ASSERT_EQ(fe.map(kBufs + 0x1000, 0x1000, 1), 0u);
  fe.add_chain(net::kTxQueue, {{kBufs, 12, false}, {kBufs + 0x1000, 60, false}});
  ASSERT_EQ(fe.wait_used(net::kTxQueue, 1).size(), 1u);
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_EQ(sent[0].size(), 72u);
  EXPECT_EQ(sent[0][12], 0x42);
}

}  // namespace
}  // namespace axl::hv::io
