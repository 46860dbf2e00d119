#include "driverdom/blk/blk_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <vector>

#include "driverdom/blk/blk_driver.h"

namespace axl::driverdom::blk {
namespace {

using channel::Op;
using channel::Request;
using channel::Response;
using channel::RespStatus;

constexpr uint32_t kSlots = 8;
constexpr uint32_t kSlotSize = 4096;
constexpr uint64_t kImageBytes = 1 << 20;

// A real channel: the test plays the hypervisor (HvEnd) on one mapping of the
// memfd, the device under test serves the other (DriverEnd), as across processes.
class BlkDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { make_device(BlkConfig{false, "axl-serial-01"}); }

  void make_device(BlkConfig cfg, uint32_t slots = kSlots) {
    char path[] = "/tmp/axl-blk-test-XXXXXX";
    UniqueFd img(::mkstemp(path));
    ASSERT_TRUE(img.valid());
    ::unlink(path);
    ASSERT_EQ(::ftruncate(img.get(), kImageBytes), 0);
    image_ = UniqueFd(::dup(img.get()));
    auto fds = channel::create(slots, kSlotSize);
    ASSERT_TRUE(fds.ok());
    auto m_hv = channel::Mapping::map(fds->mem.get(), slots, kSlotSize);
    auto m_drv = channel::Mapping::map(fds->mem.get(), slots, kSlotSize);
    ASSERT_TRUE(m_hv.ok() && m_drv.ok());
    UniqueFd req2(::dup(fds->req_kick.get())), resp2(::dup(fds->resp_kick.get()));
    hv_.reset(new channel::HvEnd(std::move(m_hv).value(), std::move(fds->req_kick),
                                 std::move(fds->resp_kick)));
    dev_.reset(new BlkDevice(
        channel::DriverEnd(std::move(m_drv).value(), std::move(req2), std::move(resp2)),
        std::move(img), std::move(cfg)));
  }

  void push(uint32_t id, Op op, uint64_t sector, uint32_t len) {
    hv_->push(Request{id, uint16_t(op), 0, sector, id * kSlotSize, len, 0});
  }

  std::vector<Response> run() {
    hv_->kick();
    while (dev_->service()) {
    }
    std::vector<Response> out;
    for (;;) {
      auto r = hv_->pop();
      EXPECT_TRUE(r.ok());
      if (!r.ok() || !r->has_value()) break;
      out.push_back(**r);
    }
    return out;
  }

  Response one(uint32_t id, Op op, uint64_t sector, uint32_t len) {
    push(id, op, sector, len);
    auto rs = run();
    EXPECT_EQ(rs.size(), 1u);
    return rs.empty() ? Response{} : rs[0];
  }

  UniqueFd image_;
  std::unique_ptr<channel::HvEnd> hv_;
  std::unique_ptr<BlkDevice> dev_;
};

TEST_F(BlkDeviceTest, WriteThenReadBackThroughThePool) {
  memset(hv_->slot(2), 0xab, 1024);
  auto w = one(2, Op::kBlkWrite, 10, 1024);
  EXPECT_EQ(w.id, 2u);
  EXPECT_EQ(w.status, int32_t(RespStatus::kOk));
  EXPECT_EQ(w.len, 0u);

  std::vector<uint8_t> on_disk(1024);
  ASSERT_EQ(::pread(image_.get(), on_disk.data(), 1024, 10 * 512), 1024);
  EXPECT_EQ(on_disk, std::vector<uint8_t>(1024, 0xab));

  ASSERT_EQ(::pwrite(image_.get(), "hello", 5, 100 * 512), 5);
  memset(hv_->slot(5), 0, kSlotSize);
  auto r = one(5, Op::kBlkRead, 100, 512);
  EXPECT_EQ(r.status, int32_t(RespStatus::kOk));
  EXPECT_EQ(r.len, 512u);
  EXPECT_EQ(memcmp(hv_->slot(5), "hello", 5), 0);
}

TEST_F(BlkDeviceTest, BatchIsServedInRingOrderAndFlushCompletes) {
  for (uint32_t id = 0; id < kSlots - 1; ++id) {
    memset(hv_->slot(id), int(id + 1), 512);
    push(id, Op::kBlkWrite, 0, 512);  // same sector: last one must win
  }
  push(kSlots - 1, Op::kBlkFlush, 0, 0);
  auto rs = run();
  ASSERT_EQ(rs.size(), kSlots);
  for (uint32_t i = 0; i < kSlots; ++i) {
    EXPECT_EQ(rs[i].id, i);
    EXPECT_EQ(rs[i].status, int32_t(RespStatus::kOk));
  }
  uint8_t b = 0;
  ASSERT_EQ(::pread(image_.get(), &b, 1, 0), 1);
  EXPECT_EQ(b, kSlots - 1);
  EXPECT_EQ(dev_->stats().flushes, 1u);
}

TEST_F(BlkDeviceTest, GetIdIsTwentyBytesNulPadded) {
  memset(hv_->slot(1), 0x55, 64);
  auto r = one(1, Op::kBlkGetId, 0, 20);
  EXPECT_EQ(r.status, int32_t(RespStatus::kOk));
  EXPECT_EQ(r.len, 20u);
  char want[20] = "axl-serial-01";
  EXPECT_EQ(memcmp(hv_->slot(1), want, 20), 0);
  EXPECT_EQ(hv_->slot(1)[20], 0x55);  // nothing written past the id
}

TEST_F(BlkDeviceTest, GetIdTruncatesAtTwentyBytes) {
  make_device(BlkConfig{false, "0123456789abcdefghij"});
  auto r = one(0, Op::kBlkGetId, 0, 20);
  EXPECT_EQ(r.len, 20u);
  EXPECT_EQ(memcmp(hv_->slot(0), "0123456789abcdefghij", 20), 0);
}

TEST_F(BlkDeviceTest, ReadBeyondEndOfImageIsIoError) {
  auto r = one(0, Op::kBlkRead, kImageBytes / 512, 512);
  EXPECT_EQ(r.status, int32_t(RespStatus::kIoErr));
  auto partial = one(0, Op::kBlkRead, kImageBytes / 512 - 1, 1024);
  EXPECT_EQ(partial.status, int32_t(RespStatus::kIoErr));
  EXPECT_EQ(dev_->stats().io_errors, 2u);
}

TEST_F(BlkDeviceTest, BadRequestsGetErrorsNotCrashes) {
  EXPECT_EQ(one(3, Op(99), 0, 0).status, int32_t(RespStatus::kUnsupported));
  EXPECT_EQ(one(3, Op::kNetTx, 0, 64).status, int32_t(RespStatus::kUnsupported));
  EXPECT_EQ(one(3, Op::kBlkRead, 0, kSlotSize + 1).status, int32_t(RespStatus::kIoErr));
  // pool_off not matching the id's slot
  hv_->push(Request{3, uint16_t(Op::kBlkRead), 0, 0, 4 * kSlotSize, 512, 0});
  auto rs = run();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, int32_t(RespStatus::kIoErr));
  // id beyond the slots: answered with that id and an error, pool untouched
  hv_->push(Request{kSlots + 3, uint16_t(Op::kBlkRead), 0, 0, (kSlots + 3) * kSlotSize, 512, 0});
  rs = run();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].id, kSlots + 3);
  EXPECT_EQ(rs[0].status, int32_t(RespStatus::kIoErr));
  // sector * 512 overflowing off_t
  EXPECT_EQ(one(3, Op::kBlkRead, ~0ull / 2, 512).status, int32_t(RespStatus::kIoErr));
  EXPECT_EQ(dev_->stats().bad_requests, 6u);
  // and the device still serves
  EXPECT_EQ(one(3, Op::kBlkRead, 0, 512).status, int32_t(RespStatus::kOk));
}

TEST_F(BlkDeviceTest, ReadOnlyDeviceRefusesWrites) {
  make_device(BlkConfig{true, ""});
  EXPECT_EQ(one(0, Op::kBlkWrite, 0, 512).status, int32_t(RespStatus::kIoErr));
  EXPECT_EQ(one(0, Op::kBlkRead, 0, 512).status, int32_t(RespStatus::kOk));
  EXPECT_EQ(one(0, Op::kBlkFlush, 0, 0).status, int32_t(RespStatus::kOk));
}

TEST_F(BlkDeviceTest, CorruptedRingIndexBreaksTheDeviceWithoutCrashing) {
  hv_->mapping().header()->req.head.store(1000);
  hv_->kick();
  EXPECT_FALSE(dev_->service());
  EXPECT_EQ(dev_->state(), BlkDevice::State::kBroken);
  EXPECT_FALSE(dev_->service());
}

TEST_F(BlkDeviceTest, BudgetLeavesWorkForTheNextRound) {
  constexpr uint32_t kMany = BlkDevice::kBudget + BlkDevice::kBudget / 2;
  make_device(BlkConfig{}, 2 * BlkDevice::kBudget);
  for (uint32_t id = 0; id < kMany; ++id) push(id, Op::kBlkGetId, 0, 20);
  hv_->kick();
  EXPECT_TRUE(dev_->service());   // stopped on the budget, work left
  EXPECT_FALSE(dev_->service());  // the rest, without a new doorbell
  uint32_t answered = 0;
  for (;;) {
    auto r = hv_->pop();
    ASSERT_TRUE(r.ok());
    if (!r->has_value()) break;
    EXPECT_EQ((*r)->id, answered);
    ++answered;
  }
  EXPECT_EQ(answered, kMany);
}

TEST(BlkImageFd, RejectsWhatCannotBeAnImage) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  EXPECT_FALSE(check_image_fd(r.get(), true).ok());
  UniqueFd ro(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(check_image_fd(ro.get(), true).ok());
  EXPECT_FALSE(check_image_fd(ro.get(), false).ok());
}

}  // namespace
}  // namespace axl::driverdom::blk
