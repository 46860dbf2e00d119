#include "hypervisor/io/virtio/virtqueue.h"

#include <gtest/gtest.h>
#include <string.h>

#include <vector>

namespace axl::virtio {
namespace {

constexpr uint64_t kBase = 0x40000;  // guest-physical base of the fake RAM
constexpr uint32_t kNum = 8;
constexpr uint64_t kDesc = kBase, kAvail = kBase + 0x1000, kUsed = kBase + 0x2000;
constexpr uint64_t kData = kBase + 0x4000;

// A plain buffer registered as the only guest RAM region, with a split ring
// at fixed addresses; the test plays the driver.
struct FakeGuest : ::testing::Test {
  std::vector<uint8_t> ram = std::vector<uint8_t>(0x10000);
  std::unique_ptr<iommu::GuestMemory> mem;
  iommu::DmaContext dma;
  uint16_t avail_idx = 0;

  void SetUp() override {
    auto m = iommu::GuestMemory::borrow({{kBase, kBase, ram}});
    ASSERT_TRUE(m.ok());
    mem = std::move(m).value();
    dma.set_memory(mem.get());
  }
  uint8_t* at(uint64_t gpa) { return ram.data() + (gpa - kBase); }
  Virtqueue make(bool event_idx = false, bool indirect = true) {
    return Virtqueue(&dma, {kNum, at(kDesc), at(kAvail), at(kUsed)}, 0, event_idx, indirect);
  }
  void set_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                uint16_t next = 0) {
    Desc d{addr, len, flags, next};
    memcpy(at(table) + 16 * i, &d, sizeof d);
  }
  void publish(uint16_t head) {
    uint16_t* avail = reinterpret_cast<uint16_t*>(at(kAvail));
    avail[2 + avail_idx % kNum] = head;
    ++avail_idx;
    avail[1] = avail_idx;
  }
  uint16_t used_idx() { return reinterpret_cast<uint16_t*>(at(kUsed))[1]; }
  UsedElem used(uint16_t i) {
    UsedElem e;
    memcpy(&e, at(kUsed) + 4 + 8 * (i % kNum), sizeof e);
    return e;
  }
  void set_used_event(uint16_t v) { reinterpret_cast<uint16_t*>(at(kAvail))[2 + kNum] = v; }
  uint16_t avail_event() { return *reinterpret_cast<uint16_t*>(at(kUsed) + 4 + 8 * kNum); }
};

TEST_F(FakeGuest, SimpleChainAndPush) {
  auto vq = make();
  EXPECT_FALSE(vq.pop().chain);
  set_desc(kDesc, 0, kData, 16, kDescFNext, 3);
  set_desc(kDesc, 3, kData + 0x100, 512, kDescFWrite | kDescFNext, 5);
  set_desc(kDesc, 5, kData + 0x400, 1, kDescFWrite);
  publish(0);
  auto p = vq.pop();
  ASSERT_EQ(p.error, ChainError::kNone);
  ASSERT_TRUE(p.chain);
  EXPECT_EQ(p.chain->head, 0);
  ASSERT_EQ(p.chain->segs.size(), 3u);
  EXPECT_EQ(p.chain->readable_bytes, 16u);
  EXPECT_EQ(p.chain->writable_bytes, 513u);
  EXPECT_TRUE(p.chain->segs[2].device_writable);
  EXPECT_FALSE(vq.pop().chain);
  vq.push(0, 513);
  EXPECT_EQ(used_idx(), 1);
  EXPECT_EQ(used(0).id, 0u);
  EXPECT_EQ(used(0).len, 513u);
  EXPECT_TRUE(vq.should_notify());
  EXPECT_FALSE(vq.should_notify());  // nothing new since
}

// Through a guest IOMMU a ring part may be contiguous in IOVA only: its
// pages lie apart in host memory (Virtqueue::RingPart).  A 512-entry ring
// has a two-page descriptor table and a used ring whose elements cross a
// page boundary; every access lands on the right page.
TEST_F(FakeGuest, RingPartsInScatteredPages) {
  constexpr uint32_t kBig = 512;
  // Each part's pages, in reverse order and apart from each other.
  std::vector<std::vector<uint8_t>> pg(6, std::vector<uint8_t>(4096 + 64));
  auto page = [&](int i) {
    return pg[i].data() + (64 - reinterpret_cast<uintptr_t>(pg[i].data()) % 64) % 64;
  };
  Virtqueue::RingPart desc, avail, used;
  desc.pages = {page(1), page(0)};  // 8 KiB of descriptors
  avail.pages = {page(2)};          // 4 + 2 * 512 + 2 bytes
  used.pages = {page(4), page(3)};  // 4 + 8 * 512 + 2 bytes: two pages
  Virtqueue vq(&dma, {kBig, desc, avail, used}, 0, /*event_idx=*/true, /*indirect=*/false);
  auto d_at = [&](uint32_t i) { return desc.at(16ull * i); };
  // Chains whose descriptors sit on either page: heads 0..511, one each.
  for (uint32_t i = 0; i < kBig; ++i) {
    Desc d{kData + 8ull * i, 8, uint16_t(kDescFWrite), 0};
    memcpy(d_at(i), &d, sizeof d);
    uint16_t head = uint16_t(kBig - 1 - i);
    memcpy(avail.at(4 + 2ull * i), &head, 2);
  }
  uint16_t idx = uint16_t(kBig);
  memcpy(avail.at(2), &idx, 2);
  for (uint32_t i = 0; i < kBig; ++i) {
    auto p = vq.pop();
    ASSERT_EQ(p.error, ChainError::kNone) << i;
    ASSERT_TRUE(p.chain) << i;
    EXPECT_EQ(p.chain->head, kBig - 1 - i);
    ASSERT_EQ(p.chain->segs.size(), 1u);
    EXPECT_EQ(p.chain->segs[0].addr, kData + 8ull * (kBig - 1 - i));
    vq.push(p.chain->head, 1000 + i);
  }
  uint16_t used_idx = 0;
  memcpy(&used_idx, used.at(2), 2);
  EXPECT_EQ(used_idx, kBig);
  for (uint32_t i = 0; i < kBig; ++i) {
    uint32_t id = 0, len = 0;
    memcpy(&id, used.at(4 + 8ull * i), 4);
    memcpy(&len, used.at(8 + 8ull * i), 4);
    EXPECT_EQ(id, kBig - 1 - i) << i;
    EXPECT_EQ(len, 1000 + i) << i;
  }
  // The element at 4 + 8 * 511 = 4092 straddles the pages: its id ends
  // the first page, its len starts the second.
  uint32_t id_at_end = 0, len_at_start = 0;
  memcpy(&id_at_end, page(4) + 4092, 4);
  memcpy(&len_at_start, page(3), 4);
  EXPECT_EQ(id_at_end, 0u);
  EXPECT_EQ(len_at_start, 1000u + 511);
  // avail_event (EVENT_IDX) after the used ring, on the second page.
  uint16_t avail_event = 0;
  memcpy(&avail_event, page(3) + (4 + 8 * kBig) - 4096, 2);
  EXPECT_EQ(avail_event, kBig);
}

TEST_F(FakeGuest, IndirectTable) {
  auto vq = make();
  constexpr uint64_t kTable = kBase + 0x3000;
  set_desc(kTable, 0, kData, 16, kDescFNext, 1);
  set_desc(kTable, 1, kData + 0x100, 64, kDescFWrite);
  set_desc(kDesc, 2, kTable, 32, kDescFIndirect);
  publish(2);
  auto p = vq.pop();
  ASSERT_EQ(p.error, ChainError::kNone);
  ASSERT_EQ(p.chain->segs.size(), 2u);
  EXPECT_EQ(p.chain->head, 2);
  EXPECT_EQ(p.chain->writable_bytes, 64u);
}

TEST_F(FakeGuest, IndirectRules) {
  constexpr uint64_t kTable = kBase + 0x3000;
  {
    auto vq = make(false, /*indirect=*/false);
    set_desc(kDesc, 0, kTable, 16, kDescFIndirect);
    set_desc(kTable, 0, kData, 16, 0);
    publish(0);
    auto p = vq.pop();
    EXPECT_EQ(p.error, ChainError::kIndirectNotNegotiated);
    EXPECT_EQ(p.bad_head, 0);
  }
  avail_idx = 0;
  auto vq = make();
  set_desc(kTable, 0, kTable, 16, kDescFIndirect);  // nested
  set_desc(kDesc, 0, kTable, 16, kDescFIndirect);
  publish(0);
  EXPECT_EQ(vq.pop().error, ChainError::kNestedIndirect);
  set_desc(kDesc, 1, kTable, 20, kDescFIndirect);  // not a multiple of 16
  publish(1);
  EXPECT_EQ(vq.pop().error, ChainError::kBadIndirect);
  set_desc(kDesc, 2, kTable, 16 * (kNum + 1), kDescFIndirect);  // longer than the queue
  publish(2);
  EXPECT_EQ(vq.pop().error, ChainError::kBadIndirect);
  set_desc(kDesc, 3, kBase + 0xfff8, 16, kDescFIndirect);  // table past guest RAM
  publish(3);
  EXPECT_EQ(vq.pop().error, ChainError::kMemory);
  // A loop inside an indirect table.
  set_desc(kTable, 0, kData, 4, kDescFNext, 1);
  set_desc(kTable, 1, kData, 4, kDescFNext, 0);
  set_desc(kDesc, 4, kTable, 32, kDescFIndirect);
  publish(4);
  EXPECT_EQ(vq.pop().error, ChainError::kTooLong);
}

TEST_F(FakeGuest, MalformedChains) {
  auto vq = make();
  set_desc(kDesc, 0, kData, 4, kDescFNext, 1);  // loop 0 -> 1 -> 0
  set_desc(kDesc, 1, kData, 4, kDescFNext, 0);
  publish(0);
  auto p = vq.pop();
  EXPECT_EQ(p.error, ChainError::kTooLong);
  EXPECT_EQ(p.bad_head, 0);

  set_desc(kDesc, 2, kData, 4, kDescFNext, kNum);  // next beyond the table
  publish(2);
  EXPECT_EQ(vq.pop().error, ChainError::kIndexOutOfRange);

  publish(kNum + 3);  // head beyond the queue
  p = vq.pop();
  EXPECT_EQ(p.error, ChainError::kHeadOutOfRange);
  EXPECT_FALSE(p.bad_head);

  set_desc(kDesc, 3, kData, 4, kDescFWrite | kDescFNext, 4);  // writable then readable
  set_desc(kDesc, 4, kData, 4, 0);
  publish(3);
  EXPECT_EQ(vq.pop().error, ChainError::kReadableAfterWritable);

  set_desc(kDesc, 5, kBase + 0xfffe, 4, 0);  // runs past guest RAM
  publish(5);
  EXPECT_EQ(vq.pop().error, ChainError::kMemory);
  set_desc(kDesc, 6, ~0ull - 1, 4, 0);  // wraps
  publish(6);
  EXPECT_EQ(vq.pop().error, ChainError::kMemory);
  EXPECT_GE(dma.faults(), 2u);

  // The queue still works after all that.
  set_desc(kDesc, 7, kData, 4, 0);
  publish(7);
  p = vq.pop();
  ASSERT_TRUE(p.chain);
  EXPECT_EQ(p.chain->head, 7);
}

TEST_F(FakeGuest, AvailIndexTooFarAheadBreaksQueue) {
  auto vq = make();
  reinterpret_cast<uint16_t*>(at(kAvail))[1] = kNum + 1;
  EXPECT_EQ(vq.pop().error, ChainError::kAvailIndex);
  EXPECT_TRUE(vq.broken());
  EXPECT_FALSE(vq.pop().chain);
}

TEST_F(FakeGuest, NoInterruptFlagWithoutEventIdx) {
  auto vq = make();
  set_desc(kDesc, 0, kData, 4, kDescFWrite);
  publish(0);
  ASSERT_TRUE(vq.pop().chain);
  reinterpret_cast<uint16_t*>(at(kAvail))[0] = kAvailFNoInterrupt;
  vq.push(0, 4);
  EXPECT_FALSE(vq.should_notify());
}

TEST_F(FakeGuest, EventIdx) {
  auto vq = make(/*event_idx=*/true);
  for (uint16_t i = 0; i < 4; ++i) {
    set_desc(kDesc, i, kData + 16 * i, 4, kDescFWrite);
    publish(i);
  }
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(vq.pop().chain);
  EXPECT_EQ(avail_event(), 4);  // kick me when idx passes 4
  EXPECT_FALSE(vq.enable_notification());
  publish(0);
  EXPECT_TRUE(vq.enable_notification());  // raced with a new buffer

  set_used_event(0);  // interrupt wanted once used idx passes 0
  vq.push(0, 4);      // used idx 1
  EXPECT_TRUE(vq.should_notify());
  vq.push(1, 4);  // used idx 2: event 0 not in (1, 2]
  EXPECT_FALSE(vq.should_notify());
  set_used_event(3);
  vq.push(2, 4);  // 3: not in (2,3]? event 3 -> need idx to pass 3
  EXPECT_FALSE(vq.should_notify());
  vq.push(3, 4);  // 4: event 3 in (3,4]
  EXPECT_TRUE(vq.should_notify());
}

TEST_F(FakeGuest, ZeroLengthDescriptorIsAccepted) {
  auto vq = make();
  set_desc(kDesc, 0, kData, 0, 0);
  publish(0);
  auto p = vq.pop();
  ASSERT_TRUE(p.chain);
  EXPECT_EQ(p.chain->readable_bytes, 0u);
}

}  // namespace
}  // namespace axl::virtio
