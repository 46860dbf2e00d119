// The frontend's split-queue driver must catch a backend that lies in the
// used ring, and must kick exactly when the backend's suppression asks for it.
#include "bench/split_queue.h"

#include <gtest/gtest.h>

#include <vector>

namespace axl::bench {
namespace {

constexpr uint16_t kSize = 8;

// Rings in plain memory; the test plays the device by hand.
struct Rings {
  std::vector<VringDesc> desc = std::vector<VringDesc>(kSize);
  alignas(4) uint16_t avail[3 + kSize] = {};
  alignas(4) uint16_t used[3 + 4 * kSize] = {};

  SplitQueue queue(bool event_idx) {
    return SplitQueue(desc.data(), avail, used, kSize, event_idx);
  }
  uint16_t avail_idx() const { return avail[1]; }
  uint16_t avail_head(uint16_t i) const { return avail[2 + i % kSize]; }
  void complete(uint32_t id, uint32_t len) {
    auto* ring = reinterpret_cast<VringUsedElem*>(used + 2);
    ring[used[1] % kSize] = {id, len};
    ++used[1];
  }
  void set_avail_event(uint16_t v) { used[2 + 4 * kSize] = v; }
};

const QueueBuf kRead4k[] = {{0x1000, 16, false}, {0x2000, 4096, true}, {0x3000, 1, true}};

TEST(SplitQueue, ChainIsLinkedAndReturned) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 7).ok());
  EXPECT_EQ(r.avail_idx(), 0) << "not visible before publish";
  EXPECT_TRUE(q.publish());
  ASSERT_EQ(r.avail_idx(), 1);
  uint16_t head = r.avail_head(0);
  const VringDesc& d0 = r.desc[head];
  EXPECT_EQ(d0.flags, kDescFNext);
  const VringDesc& d1 = r.desc[d0.next];
  EXPECT_EQ(d1.flags, kDescFNext | kDescFWrite);
  EXPECT_EQ(r.desc[d1.next].flags, kDescFWrite);
  EXPECT_EQ(q.free_descs(), kSize - 3u);

  r.complete(head, 4097);
  std::vector<UsedEntry> out;
  ASSERT_TRUE(q.harvest(out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].token, 7u);
  EXPECT_EQ(out[0].len, 4097u);
  EXPECT_EQ(q.free_descs(), kSize);
  EXPECT_EQ(q.in_flight(), 0u);
}

TEST(SplitQueue, IndirectTakesOneRingDescriptor) {
  Rings r;
  auto q = r.queue(false);
  VringDesc table[3] = {};
  ASSERT_TRUE(q.add_indirect(table, 0x9000, kRead4k, 5).ok());
  EXPECT_EQ(q.free_descs(), kSize - 1u);
  q.publish();
  const VringDesc& d = r.desc[r.avail_head(0)];
  EXPECT_EQ(d.flags, kDescFIndirect);
  EXPECT_EQ(d.addr, 0x9000u);
  EXPECT_EQ(d.len, 3 * sizeof(VringDesc));
  EXPECT_EQ(table[0].next, 1);
  EXPECT_EQ(table[1].flags, kDescFNext | kDescFWrite);
  EXPECT_EQ(table[2].flags, kDescFWrite);
  r.complete(r.avail_head(0), 4098);  // more than the table lets the device write
  std::vector<UsedEntry> out;
  EXPECT_FALSE(q.harvest(out).ok());
}

TEST(SplitQueue, RefusesWhenFull) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  ASSERT_TRUE(q.add(kRead4k, 1).ok());
  EXPECT_FALSE(q.add(kRead4k, 2).ok());
}

TEST(SplitQueue, RejectsUnknownId) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  q.publish();
  r.complete(r.avail_head(0) + 1, 1);  // a descriptor inside the chain, not its head
  std::vector<UsedEntry> out;
  EXPECT_FALSE(q.harvest(out).ok());
}

TEST(SplitQueue, RejectsDuplicateCompletion) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  ASSERT_TRUE(q.add(kRead4k, 1).ok());
  q.publish();
  r.complete(r.avail_head(0), 1);
  r.complete(r.avail_head(0), 1);
  std::vector<UsedEntry> out;
  EXPECT_FALSE(q.harvest(out).ok());
}

TEST(SplitQueue, RejectsLengthBeyondWritableBuffers) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  q.publish();
  r.complete(r.avail_head(0), 4098);
  std::vector<UsedEntry> out;
  EXPECT_FALSE(q.harvest(out).ok());
}

TEST(SplitQueue, RejectsUsedIndexRunningAhead) {
  Rings r;
  auto q = r.queue(false);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  q.publish();
  r.used[1] = 5;
  std::vector<UsedEntry> out;
  EXPECT_FALSE(q.harvest(out).ok());
}

TEST(SplitQueue, NoNotifyFlagSuppressesKick) {
  Rings r;
  auto q = r.queue(false);
  r.used[0] = kUsedFNoNotify;
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  EXPECT_FALSE(q.publish());
  r.used[0] = 0;
  ASSERT_TRUE(q.add(kRead4k, 1).ok());
  EXPECT_TRUE(q.publish());
  EXPECT_FALSE(q.publish()) << "nothing new to publish";
}

TEST(SplitQueue, EventIdxKicksOnlyWhenCrossingAvailEvent) {
  Rings r;
  auto q = r.queue(true);
  r.set_avail_event(1);  // device wants a kick once avail idx passes 1
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  EXPECT_FALSE(q.publish());  // 0 -> 1 does not pass 1
  ASSERT_TRUE(q.add(kRead4k, 1).ok());
  EXPECT_TRUE(q.publish());  // 1 -> 2 does
}

TEST(SplitQueue, EnableNotifyWritesUsedEvent) {
  Rings r;
  auto q = r.queue(true);
  ASSERT_TRUE(q.add(kRead4k, 0).ok());
  q.publish();
  r.complete(r.avail_head(0), 1);
  std::vector<UsedEntry> out;
  ASSERT_TRUE(q.harvest(out).ok());
  q.enable_notify();
  EXPECT_EQ(r.avail[2 + kSize], 1) << "call on the next completion";
  q.disable_notify();
  EXPECT_NE(r.avail[2 + kSize], 1);
}

}  // namespace
}  // namespace axl::bench
