#include "hypervisor/io/virtio/inflight.h"

#include <gtest/gtest.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "hypervisor/io/virtio/virtqueue.h"

namespace axl::virtio {
namespace {

constexpr uint64_t kBase = 0x40000;  // guest-physical base of the fake RAM
constexpr uint32_t kNum = 8;
constexpr uint64_t kDesc = kBase, kAvail = kBase + 0x1000, kUsed = kBase + 0x2000;
constexpr uint64_t kData = kBase + 0x4000;

// The fixture of virtqueue_test.cc (a plain buffer as the only guest RAM
// region, a split ring at fixed addresses, the test playing the driver) plus
// an inflight region for two queues of kNum.  A "restart" is a second
// Virtqueue over the same ring and region, built with base 0 as a new
// process would be.
struct FakeGuest : ::testing::Test {
  std::vector<uint8_t> ram = std::vector<uint8_t>(0x10000);
  std::unique_ptr<iommu::GuestMemory> mem;
  iommu::DmaContext dma;
  uint16_t avail_idx = 0;
  std::optional<InflightMemory> inflight;
  InflightQueue* q = nullptr;

  void SetUp() override {
    auto m = iommu::GuestMemory::borrow({{kBase, kBase, ram}});
    ASSERT_TRUE(m.ok());
    mem = std::move(m).value();
    dma.set_memory(mem.get());
    auto im = InflightMemory::create(2, kNum);
    ASSERT_TRUE(im.ok()) << im.error().message;
    inflight.emplace(std::move(im).value());
    q = inflight->queue(0);
    ASSERT_NE(q, nullptr);
    // Every descriptor a one-segment writable buffer of its own.
    for (uint16_t i = 0; i < kNum; ++i) set_desc(kDesc, i, kData + 0x100 * i, 16, kDescFWrite);
  }
  uint8_t* at(uint64_t gpa) { return ram.data() + (gpa - kBase); }
  Virtqueue::Layout layout() { return {kNum, at(kDesc), at(kAvail), at(kUsed)}; }
  Virtqueue make(bool event_idx = false, bool indirect = true) {
    return Virtqueue(&dma, layout(), 0, event_idx, indirect);
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
  void set_used_idx(uint16_t v) { reinterpret_cast<uint16_t*>(at(kUsed))[1] = v; }
  UsedElem used(uint16_t i) {
    UsedElem e;
    memcpy(&e, at(kUsed) + 4 + 8 * (i % kNum), sizeof e);
    return e;
  }
  // Pops one chain and returns its head (-1: nothing or an error).
  int pop_head(Virtqueue& vq) {
    auto p = vq.pop();
    if (p.error != ChainError::kNone || !p.chain) return -1;
    return p.chain->head;
  }
  unsigned flags_set() {
    unsigned n = 0;
    for (uint16_t i = 0; i < kNum; ++i) n += q->desc()[i].inflight != 0;
    return n;
  }
  // The region after reject_inflight(): fresh at the used idx.
  void expect_fresh_region() {
    EXPECT_EQ(q->version, kInflightVersion);
    EXPECT_EQ(q->desc_num, kNum);
    EXPECT_EQ(q->used_idx, used_idx());
    EXPECT_EQ(flags_set(), 0u);
  }
};

TEST_F(FakeGuest, NoTrackingByDefault) {
  auto vq = make();
  EXPECT_FALSE(vq.tracking_inflight());
  EXPECT_EQ(vq.track_inflight(nullptr), 0u);
  EXPECT_FALSE(vq.tracking_inflight());
  publish(1);
  EXPECT_EQ(pop_head(vq), 1);
  vq.push(1, 0);
  EXPECT_EQ(q->version, 0);  // untouched
}

TEST_F(FakeGuest, FreshRegionIsInitialisedAndStaysClean) {
  set_used_idx(5);  // a ring that already ran: the region starts at its used idx
  avail_idx = 5;
  reinterpret_cast<uint16_t*>(at(kAvail))[1] = 5;
  auto vq = Virtqueue(&dma, layout(), 5, false, true);
  EXPECT_EQ(vq.track_inflight(q), 0u);
  EXPECT_TRUE(vq.tracking_inflight());
  EXPECT_EQ(vq.inflight_error(), nullptr);
  EXPECT_EQ(q->version, kInflightVersion);
  EXPECT_EQ(q->desc_num, kNum);
  EXPECT_EQ(q->used_idx, 5);
  EXPECT_EQ(vq.last_avail_idx(), 5);  // the constructor's base
  // Enough rounds to wrap the ring twice.
  for (uint32_t i = 0; i < 2 * kNum + 3; ++i) {
    uint16_t head = uint16_t((i * 3) % kNum);
    publish(head);
    ASSERT_EQ(pop_head(vq), head);
    EXPECT_EQ(q->desc()[head].inflight, 1);
    EXPECT_EQ(q->desc()[head].counter, i);
    vq.push(head, 16);
    EXPECT_EQ(q->desc()[head].inflight, 0);
    EXPECT_EQ(q->last_batch_head, head);
    EXPECT_EQ(q->used_idx, vq.used_idx());
  }
  EXPECT_EQ(flags_set(), 0u);
  EXPECT_EQ(used_idx(), 5 + 2 * kNum + 3);
}

TEST_F(FakeGuest, CrashRecoveryResubmitsUncompletedInPopOrder) {
  constexpr uint16_t A = 2, B = 5, C = 0, D = 7;
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(A);
    publish(B);
    publish(C);
    ASSERT_EQ(pop_head(vq), A);
    ASSERT_EQ(pop_head(vq), B);
    ASSERT_EQ(pop_head(vq), C);
    vq.push(B, 16);
    EXPECT_EQ(flags_set(), 2u);
  }                  // the process dies: nothing more is written
  auto vq = make();  // base 0, as a restarted process would be built
  EXPECT_EQ(vq.track_inflight(q), 2u);
  EXPECT_EQ(vq.inflight_error(), nullptr);
  EXPECT_EQ(vq.last_avail_idx(), 3);
  EXPECT_EQ(vq.resubmits_pending(), 2u);
  EXPECT_TRUE(vq.enable_notification());  // recovered work is waiting
  EXPECT_EQ(pop_head(vq), A);
  EXPECT_EQ(pop_head(vq), C);
  EXPECT_EQ(vq.resubmits_pending(), 0u);
  auto p = vq.pop();
  EXPECT_EQ(p.error, ChainError::kNone);
  EXPECT_FALSE(p.chain);  // B is not handed out again, nor anything new
  EXPECT_FALSE(vq.enable_notification());
  vq.push(A, 16);
  vq.push(C, 16);
  EXPECT_EQ(used_idx(), 3);
  EXPECT_EQ(used(1).id, A);
  EXPECT_EQ(used(2).id, C);
  EXPECT_EQ(flags_set(), 0u);
  EXPECT_EQ(q->used_idx, 3);
  publish(D);
  EXPECT_EQ(pop_head(vq), D);
  EXPECT_EQ(q->desc()[D].inflight, 1);
  // New pops are counted after every recovered one.
  EXPECT_GT(q->desc()[D].counter, q->desc()[C].counter);
}

TEST_F(FakeGuest, SecondCrashDuringResubmitKeepsOriginalOrder) {
  constexpr uint16_t A = 6, B = 1, C = 3;
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(A);
    publish(B);
    publish(C);
    for (int i = 0; i < 3; ++i) ASSERT_GE(pop_head(vq), 0);
  }
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 3u);
    ASSERT_EQ(pop_head(vq), A);  // handed out again, then the process dies again
  }
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 3u);
  EXPECT_EQ(pop_head(vq), A);
  EXPECT_EQ(pop_head(vq), B);
  EXPECT_EQ(pop_head(vq), C);
}

TEST_F(FakeGuest, ResubmitOrderFollowsCounter) {
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    for (uint16_t h : {0, 1, 2, 3}) publish(h);
    for (int i = 0; i < 4; ++i) ASSERT_GE(pop_head(vq), 0);
  }
  // Counters say 3 was taken first, then 1, 0, 2.
  q->desc()[3].counter = 10;
  q->desc()[1].counter = 20;
  q->desc()[0].counter = 30;
  q->desc()[2].counter = 40;
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 4u);
  EXPECT_EQ(pop_head(vq), 3);
  EXPECT_EQ(pop_head(vq), 1);
  EXPECT_EQ(pop_head(vq), 0);
  EXPECT_EQ(pop_head(vq), 2);
  publish(5);
  EXPECT_EQ(pop_head(vq), 5);
  EXPECT_EQ(q->desc()[5].counter, 41u);  // above the largest seen
}

TEST_F(FakeGuest, CrashBetweenUsedIdxAndFlagClearIsNotResubmitted) {
  constexpr uint16_t A = 4, B = 6;
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(A);
    publish(B);
    ASSERT_EQ(pop_head(vq), A);
    ASSERT_EQ(pop_head(vq), B);
    uint16_t region_used = q->used_idx;
    vq.push(A, 16);
    // The process died after the used idx store, before the flag was
    // cleared and the region's used_idx moved.
    q->desc()[A].inflight = 1;
    q->used_idx = region_used;
  }
  ASSERT_EQ(used_idx(), 1);
  auto vq = make();
  EXPECT_EQ(vq.track_inflight(q), 1u);
  EXPECT_EQ(vq.inflight_error(), nullptr);
  EXPECT_EQ(q->desc()[A].inflight, 0);  // repaired in the region too
  EXPECT_EQ(q->used_idx, 1);
  EXPECT_EQ(vq.last_avail_idx(), 2);
  EXPECT_EQ(pop_head(vq), B);
  EXPECT_EQ(pop_head(vq), -1);
}

TEST_F(FakeGuest, CrashBeforeUsedIdxPublishIsResubmitted) {
  constexpr uint16_t A = 4;
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(A);
    ASSERT_EQ(pop_head(vq), A);
    // The process died inside push(), after last_batch_head was set but
    // before the used idx store: the guest never saw the completion.
    q->last_batch_head = A;
  }
  auto vq = make();
  EXPECT_EQ(vq.track_inflight(q), 1u);
  EXPECT_EQ(pop_head(vq), A);
}

TEST_F(FakeGuest, LastBatchOfSeveralIsClearedByItsNextLinks) {
  constexpr uint16_t A = 1, B = 2, C = 3;
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(A);
    publish(B);
    publish(C);
    for (int i = 0; i < 3; ++i) ASSERT_GE(pop_head(vq), 0);
    vq.push(A, 16);
    vq.push(B, 16);
    // As if A and B had been published as one batch (B -> A through
    // `next`, which push() keeps) and the process died before clearing.
    EXPECT_EQ(q->last_batch_head, B);
    EXPECT_EQ(q->desc()[B].next, A);
    q->desc()[A].inflight = 1;
    q->desc()[B].inflight = 1;
    q->used_idx = 0;
  }
  auto vq = make();
  EXPECT_EQ(vq.track_inflight(q), 1u);
  EXPECT_EQ(vq.last_avail_idx(), 3);
  EXPECT_EQ(pop_head(vq), C);
  EXPECT_EQ(pop_head(vq), -1);
}

TEST_F(FakeGuest, MalformedChainIsTrackedUntilHandedBack) {
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 0u);
  set_desc(kDesc, 2, kData, 4, kDescFNext, 2);  // a loop
  publish(2);
  auto p = vq.pop();
  EXPECT_EQ(p.error, ChainError::kTooLong);
  ASSERT_EQ(p.bad_head, 2);
  EXPECT_EQ(q->desc()[2].inflight, 1);
  vq.push(2, 0);
  EXPECT_EQ(flags_set(), 0u);
}

TEST_F(FakeGuest, HeadOutOfRangeStopsATrackedQueue) {
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 0u);
  publish(kNum + 1);
  EXPECT_EQ(vq.pop().error, ChainError::kHeadOutOfRange);
  // The slot can be neither in flight nor used: recovery would be off by
  // one, so the queue stops.
  EXPECT_TRUE(vq.broken());
  publish(1);
  EXPECT_FALSE(vq.pop().chain);
}

TEST_F(FakeGuest, PushWhileSuspendedTouchesNothingUntilResume) {
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 0u);
  publish(3);
  ASSERT_EQ(pop_head(vq), 3);
  vq.suspend();
  vq.push(3, 16);
  EXPECT_EQ(q->desc()[3].inflight, 1);
  EXPECT_EQ(q->used_idx, 0);
  EXPECT_EQ(used_idx(), 0);
  vq.resume(layout());
  EXPECT_EQ(q->desc()[3].inflight, 0);
  EXPECT_EQ(q->used_idx, 1);
  EXPECT_EQ(used_idx(), 1);
}

// Answers every translation with "asked of the front-end" until told.
struct PendingTranslator : iommu::IovaTranslator {
  bool pending = true;
  Span translate(uint64_t iova, uint64_t len, iommu::Access) override {
    if (pending) return {iommu::Fault::kPending, 0, 0};
    return {iommu::Fault::kNone, iova, len};  // identity: uva == gpa in this fixture
  }
};

TEST_F(FakeGuest, ResubmitWaitingOnTranslationStaysFirst) {
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(5);
    publish(6);
    ASSERT_EQ(pop_head(vq), 5);
    ASSERT_EQ(pop_head(vq), 6);
  }
  PendingTranslator t;
  dma.set_translator(&t);
  auto vq = make();
  ASSERT_EQ(vq.track_inflight(q), 2u);
  auto p = vq.pop();
  EXPECT_FALSE(p.chain);
  EXPECT_EQ(p.error, ChainError::kNone);
  EXPECT_TRUE(vq.waiting());
  EXPECT_EQ(vq.resubmits_pending(), 2u);
  EXPECT_FALSE(vq.pop().chain);  // nothing while waiting
  t.pending = false;
  vq.clear_wait();
  EXPECT_EQ(pop_head(vq), 5);
  EXPECT_EQ(pop_head(vq), 6);
  EXPECT_EQ(q->desc()[5].inflight, 1);
  dma.set_translator(nullptr);
}

// The front-end can write anything into the region.  Whatever it holds,
// recovery reads only inside the ring's kNum entries, and a region that
// cannot have been written by this back-end for this ring is started afresh:
// nothing is resubmitted, the ring resumes at the used idx (every chain not
// completed is popped again from the avail ring), inflight_error() says why.
struct Corruption {
  const char* name;
  void (*corrupt)(InflightQueue* q);
};

class CorruptRegion : public FakeGuest, public ::testing::WithParamInterface<Corruption> {};

TEST_P(CorruptRegion, NothingResubmittedRingResumesAtUsedIdx) {
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    for (uint16_t h : {0, 1, 2}) publish(h);
    for (int i = 0; i < 3; ++i) ASSERT_GE(pop_head(vq), 0);
    vq.push(1, 16);
  }
  GetParam().corrupt(q);
  auto vq = make();
  EXPECT_EQ(vq.track_inflight(q), 0u);
  ASSERT_NE(vq.inflight_error(), nullptr);
  EXPECT_EQ(vq.resubmits_pending(), 0u);
  EXPECT_EQ(vq.last_avail_idx(), 1);  // used idx
  expect_fresh_region();
  // The ring goes on from the used idx, tracked again.
  EXPECT_EQ(pop_head(vq), 1);
  EXPECT_EQ(pop_head(vq), 2);
  EXPECT_EQ(pop_head(vq), -1);
  EXPECT_EQ(flags_set(), 2u);
}

INSTANTIATE_TEST_SUITE_P(
    Inflight, CorruptRegion,
    ::testing::Values(
        Corruption{"DescNumNotRingSize", [](InflightQueue* q) { q->desc_num = kNum * 2; }},
        Corruption{"DescNumHuge", [](InflightQueue* q) { q->desc_num = 0xffff; }},
        Corruption{"UnknownVersion", [](InflightQueue* q) { q->version = 7; }},
        Corruption{"AllFlagsSet",
                   [](InflightQueue* q) {
                     for (uint16_t i = 0; i < kNum; ++i) q->desc()[i].inflight = 1;
                   }},
        Corruption{"FlagNotZeroOrOne", [](InflightQueue* q) { q->desc()[4].inflight = 0x80; }},
        Corruption{"BatchHeadBeyondRing",
                   [](InflightQueue* q) {
                     q->used_idx = 0;  // used idx is 1: a batch of one to clear
                     q->last_batch_head = 0xfff0;
                   }},
        Corruption{"BatchNextBeyondRing",
                   [](InflightQueue* q) {
                     q->used_idx = 0xffff;  // a batch of two
                     q->last_batch_head = 1;
                     q->desc()[1].next = kNum;
                   }},
        Corruption{"RegionUsedIdxAhead", [](InflightQueue* q) { q->used_idx = 40; }}),
    [](const ::testing::TestParamInfo<Corruption>& i) { return std::string(i.param.name); });

TEST_F(FakeGuest, GarbageCountersAndPaddingAreNotCorruption) {
  {
    auto vq = make();
    ASSERT_EQ(vq.track_inflight(q), 0u);
    publish(3);
    ASSERT_EQ(pop_head(vq), 3);
  }
  for (uint16_t i = 0; i < kNum; ++i) {
    q->desc()[i].counter = ~uint64_t(0) - i;
    memset(q->desc()[i].padding, 0xee, sizeof q->desc()[i].padding);
    q->desc()[i].next = 0xbeef;
  }
  q->features = ~uint64_t(0);
  auto vq = make();
  EXPECT_EQ(vq.track_inflight(q), 1u);
  EXPECT_EQ(vq.inflight_error(), nullptr);
  EXPECT_EQ(pop_head(vq), 3);
}

TEST(InflightMemory, QueueBytes) {
  EXPECT_EQ(inflight_queue_bytes(1), 64u);
  EXPECT_EQ(inflight_queue_bytes(2), 64u);   // 16 + 32 = 48
  EXPECT_EQ(inflight_queue_bytes(8), 192u);  // 144 rounded up
  EXPECT_EQ(inflight_queue_bytes(256), 4160u);
  EXPECT_EQ(inflight_queue_bytes(32768), 524352u);
}

TEST(InflightMemory, CreateAndMapShareBytes) {
  auto a = InflightMemory::create(2, 8);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->size(), 2 * 192u);
  EXPECT_EQ(a->offset(), 0u);
  EXPECT_EQ(a->queues(), 2);
  EXPECT_EQ(a->queue_size(), 8);
  EXPECT_GE(a->fd(), 0);
  EXPECT_EQ(a->queue(2), nullptr);
  ASSERT_NE(a->queue(1), nullptr);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(a->queue(1)) - reinterpret_cast<uint8_t*>(a->queue(0)), 192);
  // Zeroed: every queue fresh.
  EXPECT_EQ(a->queue(0)->version, 0);
  EXPECT_EQ(a->queue(1)->desc()[7].counter, 0u);
  // Sealed: the front-end cannot shrink it under the mapping.
  EXPECT_LT(::ftruncate(a->fd(), 0), 0);

  a->queue(1)->desc()[3].counter = 42;
  auto b = InflightMemory::map(UniqueFd(::dup(a->fd())), a->size(), 0, 2, 8);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->queue(1)->desc()[3].counter, 42u);
  b->queue(0)->used_idx = 9;
  EXPECT_EQ(a->queue(0)->used_idx, 9);

  // Move keeps the mapping; the moved-from object has none.
  InflightMemory c = std::move(b).value();
  EXPECT_EQ(c.queue(0)->used_idx, 9);
}

TEST(InflightMemory, MapAtAnOffset) {
  long page = ::sysconf(_SC_PAGESIZE);
  UniqueFd fd(::memfd_create("inflight-test", MFD_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), page + 64), 0);
  uint16_t v = 0x1234;
  ASSERT_EQ(::pwrite(fd.get(), &v, sizeof v, page + 14), ssize_t(sizeof v));  // used_idx
  auto m = InflightMemory::map(std::move(fd), 64, uint64_t(page), 1, 1);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->offset(), uint64_t(page));
  EXPECT_EQ(m->queue(0)->used_idx, 0x1234);
}

TEST(InflightMemory, MapRefusesWhatDoesNotFit) {
  auto a = InflightMemory::create(2, 8);
  ASSERT_TRUE(a.ok());
  auto try_map = [&](uint64_t size, uint64_t offset, uint16_t queues, uint16_t qsize) {
    auto m = InflightMemory::map(UniqueFd(::dup(a->fd())), size, offset, queues, qsize);
    EXPECT_FALSE(m.ok());
    return m.ok() ? std::string() : m.error().message;
  };
  EXPECT_NE(try_map(2 * 192 - 64, 0, 2, 8).find("mmap_size"), std::string::npos);
  EXPECT_NE(try_map(2 * 192 + 64, 0, 2, 8).find("mmap_size"), std::string::npos);
  EXPECT_NE(try_map(192, 100, 1, 8).find("page aligned"), std::string::npos);
  EXPECT_NE(try_map(2 * 192, 0, 2, 6).find("power of two"), std::string::npos);
  EXPECT_NE(try_map(0, 0, 0, 8).find("queues"), std::string::npos);
  EXPECT_NE(try_map(17 * 192, 0, 17, 8).find("queues"), std::string::npos);
  EXPECT_FALSE(InflightMemory::map(UniqueFd(), 192, 0, 1, 8).ok());
  // The file is 384 bytes: more than that, or any of it past an offset.
  EXPECT_NE(try_map(4 * 192, 0, 4, 8).find("smaller"), std::string::npos);
  EXPECT_NE(try_map(192, uint64_t(::sysconf(_SC_PAGESIZE)), 1, 8).find("smaller"),
            std::string::npos);
  EXPECT_NE(try_map(192, ~uint64_t(0) & ~uint64_t(0xfffff), 1, 8).find("smaller"),
            std::string::npos);
  // An fd that is no file of that size at all.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[1]);
  auto m = InflightMemory::map(UniqueFd(p[0]), 192, 0, 1, 8);
  EXPECT_FALSE(m.ok());

  EXPECT_FALSE(InflightMemory::create(0, 8).ok());
  EXPECT_FALSE(InflightMemory::create(1, 0).ok());
  EXPECT_FALSE(InflightMemory::create(1, 3).ok());
}

TEST(InflightMemory, ResetQueueZeroesOnlyThatQueue) {
  auto m = InflightMemory::create(3, 8);
  ASSERT_TRUE(m.ok());
  size_t bytes = inflight_queue_bytes(8);
  for (uint16_t i = 0; i < 3; ++i) memset(m->queue(i), 0xab, bytes);
  m->reset_queue(1);
  m->reset_queue(3);  // out of range: nothing
  auto all = [&](uint16_t i, uint8_t v) {
    auto* b = reinterpret_cast<uint8_t*>(m->queue(i));
    for (size_t k = 0; k < bytes; ++k)
      if (b[k] != v) return false;
    return true;
  };
  EXPECT_TRUE(all(0, 0xab));
  EXPECT_TRUE(all(1, 0));
  EXPECT_TRUE(all(2, 0xab));
}

}  // namespace
}  // namespace axl::virtio
