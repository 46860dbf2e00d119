#include "driverdom/blk/blk_device.h"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <string>
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
// memfd, the device under test serves the other (DriverEnd), as across
// processes.  Every test runs twice: requests served in place, and through
// the I/O ring (the parameter), as BlkDriver reaps it.
class BlkDeviceTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      auto r = IoRing::create();
      // A kernel without io_uring, or with it disabled (kernel.io_uring_disabled).
      if (!r.ok()) GTEST_SKIP() << "no io_uring on this host: " << r.error().message;
      ring_ = std::move(r).value();
    }
    make_device(BlkConfig{false, "axl-serial-01"});
  }

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
    if (ring_) {
      ASSERT_TRUE(dev_->use_ring(ring_.get(), 7).ok());
      ASSERT_TRUE(dev_->uses_ring());
    }
  }

  // What BlkDriver does when the ring's fd turns readable.
  void reap_all() {
    while (ring_ && dev_->in_flight()) {
      for (const IoRing::Completion& c : ring_->reap(true)) {
        EXPECT_EQ(c.tag >> 32, 7u);
        dev_->complete(uint32_t(c.tag), c.res);
      }
      dev_->kick();
    }
  }

  void push(uint32_t id, Op op, uint64_t sector, uint32_t len) {
    hv_->push(Request{id, uint16_t(op), 0, sector, id * kSlotSize, len, 0});
  }

  // Rings the doorbell and lets the device serve until it stops.
  void serve() {
    hv_->kick();
    while (dev_->service()) {
    }
  }

  std::vector<Response> run() {
    serve();
    return collect();
  }

  // Every response, once the ring has none left in flight.
  std::vector<Response> collect() {
    reap_all();
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

  std::unique_ptr<IoRing> ring_;  // declared first: outlives the device
  UniqueFd image_;
  std::unique_ptr<channel::HvEnd> hv_;
  std::unique_ptr<BlkDevice> dev_;
};

TEST_P(BlkDeviceTest, WriteThenReadBackThroughThePool) {
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

TEST_P(BlkDeviceTest, BatchIsServedAndTheFlushCompletesLast) {
  // In place, requests run in ring order, so writes to one sector land in
  // that order.  On the ring they are in flight together and may complete in
  // any order (as virtio allows, and as a real disk does), so each writes
  // its own sector there; the flush still completes after all of them.
  const bool in_order = !GetParam();
  for (uint32_t id = 0; id < kSlots - 1; ++id) {
    memset(hv_->slot(id), int(id + 1), 512);
    push(id, Op::kBlkWrite, in_order ? 0 : id, 512);
  }
  push(kSlots - 1, Op::kBlkFlush, 0, 0);
  auto rs = run();
  ASSERT_EQ(rs.size(), kSlots);
  std::vector<bool> seen(kSlots);
  for (uint32_t i = 0; i < kSlots; ++i) {
    if (in_order) {
      EXPECT_EQ(rs[i].id, i);
    }
    ASSERT_LT(rs[i].id, kSlots);
    seen[rs[i].id] = true;
    EXPECT_EQ(rs[i].status, int32_t(RespStatus::kOk));
  }
  EXPECT_EQ(seen, std::vector<bool>(kSlots, true));
  EXPECT_EQ(rs.back().id, kSlots - 1);  // the flush
  for (uint32_t id = 0; id < kSlots - 1; ++id) {
    uint8_t b = 0;
    ASSERT_EQ(::pread(image_.get(), &b, 1, in_order ? 0 : id * 512), 1);
    EXPECT_EQ(b, in_order ? kSlots - 1 : id + 1);
  }
  EXPECT_EQ(dev_->stats().flushes, 1u);
  EXPECT_EQ(dev_->stats().queued, in_order ? 0u : uint64_t(kSlots));
}

TEST_P(BlkDeviceTest, GetIdIsTwentyBytesNulPadded) {
  memset(hv_->slot(1), 0x55, 64);
  auto r = one(1, Op::kBlkGetId, 0, 20);
  EXPECT_EQ(r.status, int32_t(RespStatus::kOk));
  EXPECT_EQ(r.len, 20u);
  char want[20] = "axl-serial-01";
  EXPECT_EQ(memcmp(hv_->slot(1), want, 20), 0);
  EXPECT_EQ(hv_->slot(1)[20], 0x55);  // nothing written past the id
}

TEST_P(BlkDeviceTest, GetIdTruncatesAtTwentyBytes) {
  make_device(BlkConfig{false, "0123456789abcdefghij"});
  auto r = one(0, Op::kBlkGetId, 0, 20);
  EXPECT_EQ(r.len, 20u);
  EXPECT_EQ(memcmp(hv_->slot(0), "0123456789abcdefghij", 20), 0);
}

TEST_P(BlkDeviceTest, ReadBeyondEndOfImageIsIoError) {
  auto r = one(0, Op::kBlkRead, kImageBytes / 512, 512);
  EXPECT_EQ(r.status, int32_t(RespStatus::kIoErr));
  auto partial = one(0, Op::kBlkRead, kImageBytes / 512 - 1, 1024);
  EXPECT_EQ(partial.status, int32_t(RespStatus::kIoErr));
  EXPECT_EQ(dev_->stats().io_errors, 2u);
}

TEST_P(BlkDeviceTest, BadRequestsGetErrorsNotCrashes) {
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

TEST_P(BlkDeviceTest, ReadOnlyDeviceRefusesWrites) {
  make_device(BlkConfig{true, ""});
  EXPECT_EQ(one(0, Op::kBlkWrite, 0, 512).status, int32_t(RespStatus::kIoErr));
  EXPECT_EQ(one(0, Op::kBlkRead, 0, 512).status, int32_t(RespStatus::kOk));
  EXPECT_EQ(one(0, Op::kBlkFlush, 0, 0).status, int32_t(RespStatus::kOk));
}

TEST_P(BlkDeviceTest, CorruptedRingIndexBreaksTheDeviceWithoutCrashing) {
  hv_->mapping().header()->req.head.store(1000);
  hv_->kick();
  EXPECT_FALSE(dev_->service());
  EXPECT_EQ(dev_->state(), BlkDevice::State::kBroken);
  EXPECT_FALSE(dev_->service());
}

TEST_P(BlkDeviceTest, BudgetLeavesWorkForTheNextRound) {
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

INSTANTIATE_TEST_SUITE_P(Engines, BlkDeviceTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "IoRing" : "InPlace");
                         });

// The ring: many requests in flight at once, completed out of order, every
// byte where it belongs.
class BlkDeviceRingTest : public BlkDeviceTest {};

TEST_P(BlkDeviceRingTest, ManyRequestsInFlightKeepEveryByteInPlace) {
  constexpr uint32_t kMany = 64;
  make_device(BlkConfig{}, kMany);
  // Seeded pattern: request i writes 4 KiB at sector 8 * (kMany - i), each
  // byte a function of its offset on the disk.
  auto pattern = [](uint64_t off) { return uint8_t((off * 2654435761u) >> 13); };
  for (uint32_t id = 0; id < kMany; ++id) {
    const uint64_t sector = 8ull * (kMany - id);
    for (uint32_t k = 0; k < kSlotSize; ++k) hv_->slot(id)[k] = pattern(sector * 512 + k);
    push(id, Op::kBlkWrite, sector, kSlotSize);
  }
  serve();
  EXPECT_EQ(dev_->in_flight(), kMany);  // every one handed over before any completed
  auto ws = collect();
  ASSERT_EQ(ws.size(), kMany);
  for (const Response& w : ws) EXPECT_EQ(w.status, int32_t(RespStatus::kOk)) << w.id;
  // Read them back through the device into other slots, and check them.
  for (uint32_t id = 0; id < kMany; ++id) {
    memset(hv_->slot(id), 0, kSlotSize);
    push(id, Op::kBlkRead, 8ull * (id + 1), kSlotSize);
  }
  auto rs = run();
  ASSERT_EQ(rs.size(), kMany);
  for (const Response& r : rs) {
    ASSERT_EQ(r.status, int32_t(RespStatus::kOk)) << r.id;
    ASSERT_EQ(r.len, kSlotSize);
    const uint64_t base = 8ull * (r.id + 1) * 512;
    for (uint32_t k = 0; k < kSlotSize; ++k)
      ASSERT_EQ(hv_->slot(r.id)[k], pattern(base + k)) << "id " << r.id << " byte " << k;
  }
  EXPECT_EQ(dev_->stats().queued, 2u * kMany);
  EXPECT_EQ(dev_->stats().io_errors, 0u);
}

TEST_P(BlkDeviceRingTest, AnIdAlreadyInFlightIsRefused) {
  push(3, Op::kBlkRead, 0, 512);
  push(3, Op::kBlkRead, 8, 512);  // the hypervisor reused a busy slot
  auto rs = run();
  ASSERT_EQ(rs.size(), 2u);
  int ok = 0, err = 0;
  for (const Response& r : rs) (r.status == int32_t(RespStatus::kOk) ? ok : err) += 1;
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(err, 1);
  EXPECT_EQ(dev_->stats().bad_requests, 1u);
  EXPECT_EQ(dev_->in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(IoRing, BlkDeviceRingTest, ::testing::Values(true));

// The ring's restrictions (io_ring.h): read, write and fsync on a registered
// file, and nothing else, whoever submits it.
TEST(IoRing, RefusesEveryOperationButReadWriteFsyncOnARegisteredFile) {
  auto ring = IoRing::create();
  if (!ring.ok()) GTEST_SKIP() << "no io_uring on this host: " << ring.error().message;
  char path[] = "/tmp/axl-ring-test-XXXXXX";
  UniqueFd f(::mkstemp(path));
  ASSERT_TRUE(f.valid());
  ::unlink(path);
  auto idx = (*ring)->add_file(f.get());
  ASSERT_TRUE(idx.ok()) << idx.error().message;
  char out[6] = "ring!", in[6] = {};
  (*ring)->write(*idx, 512, out, 5, 1);
  (*ring)->fsync(*idx, 2);
  (*ring)->submit();
  int got = 0;
  while (got < 2)
    for (const auto& c : (*ring)->reap(true)) {
      EXPECT_EQ(c.res, c.tag == 1 ? 5 : 0) << c.tag;
      ++got;
    }
  (*ring)->read(*idx, 512, in, 5, 3);
  (*ring)->submit();
  auto r = (*ring)->reap(true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].res, 5);
  EXPECT_STREQ(in, "ring!");

  // A host file to open, and the image through its ordinary fd.
  char target[] = "/tmp/axl-ring-target-XXXXXX";
  UniqueFd t(::mkstemp(target));
  ASSERT_TRUE(t.valid());
  // Removed however the test ends (a failed ASSERT returns early).
  struct Unlink {
    const char* path;
    ~Unlink() { ::unlink(path); }
  } remove_target{target};
  std::string line = (*ring)->try_forbidden(target, f.get());
  EXPECT_NE(line.find("denied: EACCES"), std::string::npos) << line;
  std::vector<IoRing::Completion> esc;
  while (esc.size() < 2)
    for (const auto& c : (*ring)->reap(true)) esc.push_back(c);
  for (const auto& c : esc) {
    EXPECT_GE(c.tag, IoRing::kEscapeTag);
    EXPECT_EQ(c.res, -EACCES) << IoRing::escape_result(c);
    EXPECT_NE(IoRing::escape_result(c).find("denied: EACCES"), std::string::npos);
  }
  (*ring)->remove_file(*idx);
  // A removed file is no longer reachable through its index.
  (*ring)->read(*idx, 512, in, 5, 4);
  (*ring)->submit();
  r = (*ring)->reap(true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].res, -EBADF);
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
