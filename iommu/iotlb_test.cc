#include "iommu/iotlb.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace axl::iommu {
namespace {

TEST(Iotlb, UpdateLookupInvalidate) {
  Iotlb t;
  ASSERT_TRUE(t.update(0x1000, 0x2000, 0x7000'0000, Perm::kReadWrite).ok());
  auto s = t.lookup(0x1800, 0x100, Access::kRead);
  EXPECT_EQ(s.fault, Fault::kNone);
  EXPECT_EQ(s.uva, 0x7000'0800u);
  EXPECT_EQ(s.len, 0x100u);
  // Clipped at the end of the entry.
  s = t.lookup(0x2f00, 0x1000, Access::kWrite);
  EXPECT_EQ(s.fault, Fault::kNone);
  EXPECT_EQ(s.len, 0x100u);
  EXPECT_EQ(t.lookup(0x3000, 1, Access::kRead).fault, Fault::kIotlbMiss);
  EXPECT_EQ(t.lookup(0xfff, 1, Access::kRead).fault, Fault::kIotlbMiss);
  // Invalidating one byte of an entry drops the whole entry.
  EXPECT_EQ(t.invalidate(0x2abc, 1), 1u);
  EXPECT_EQ(t.lookup(0x1000, 1, Access::kRead).fault, Fault::kIotlbMiss);
  EXPECT_EQ(t.size(), 0u);
}

TEST(Iotlb, UpdateReplacesOverlappingEntries) {
  Iotlb t;
  ASSERT_TRUE(t.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0x2000, 0x1000, 0xb000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0x3000, 0x1000, 0xc000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0x1800, 0x1000, 0xf000, Perm::kWrite).ok());
  EXPECT_EQ(t.size(), 2u);  // 0x1000 and 0x2000 gone, 0x3000 kept
  EXPECT_EQ(t.lookup(0x1000, 1, Access::kRead).fault, Fault::kIotlbMiss);
  auto s = t.lookup(0x2000, 1, Access::kWrite);
  EXPECT_EQ(s.fault, Fault::kNone);
  EXPECT_EQ(s.uva, 0xf800u);
  EXPECT_EQ(t.lookup(0x3000, 1, Access::kRead).uva, 0xc000u);
}

TEST(Iotlb, InvalidateToTheEndAndAcrossEntries) {
  Iotlb t;
  ASSERT_TRUE(t.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0x5000, 0x1000, 0xb000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0xffff'ffff'ffff'f000, 0x1000, 0xc000, Perm::kRead).ok());
  EXPECT_EQ(t.invalidate(0x1fff, 0x3002), 2u);
  EXPECT_EQ(t.size(), 1u);
  // A range that runs past the top means "to the end".
  EXPECT_EQ(t.invalidate(0x8000, UINT64_MAX), 1u);
  EXPECT_EQ(t.size(), 0u);
  ASSERT_TRUE(t.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  EXPECT_EQ(t.invalidate(0, 0), 1u);  // size 0: everything from iova
}

TEST(Iotlb, RejectsBadUpdates) {
  Iotlb t;
  EXPECT_FALSE(t.update(0x1000, 0, 0xa000, Perm::kRead).ok());
  EXPECT_FALSE(t.update(0x1000, 0x1000, 0xa000, Perm::kNone).ok());
  EXPECT_FALSE(t.update(0x1000, 0x1000, 0xa000, Perm(7)).ok());
  // Wrapping IOVA range or wrapping target range.
  EXPECT_FALSE(t.update(0xffff'ffff'ffff'f000, 0x2000, 0xa000, Perm::kRead).ok());
  EXPECT_FALSE(t.update(0x1000, 0x2000, 0xffff'ffff'ffff'f000, Perm::kRead).ok());
  EXPECT_EQ(t.size(), 0u);
  // The very top page is fine.
  EXPECT_TRUE(t.update(0xffff'ffff'ffff'f000, 0x1000, 0xa000, Perm::kRead).ok());
  EXPECT_EQ(t.lookup(0xffff'ffff'ffff'ffff, 1, Access::kRead).fault, Fault::kNone);
}

TEST(Iotlb, PermissionsFromTheDevicesPointOfView) {
  Iotlb t;
  ASSERT_TRUE(t.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(t.update(0x2000, 0x1000, 0xb000, Perm::kWrite).ok());
  EXPECT_EQ(t.lookup(0x1000, 1, Access::kRead).fault, Fault::kNone);
  EXPECT_EQ(t.lookup(0x1000, 1, Access::kWrite).fault, Fault::kPermission);
  EXPECT_EQ(t.lookup(0x2000, 1, Access::kWrite).fault, Fault::kNone);
  EXPECT_EQ(t.lookup(0x2000, 1, Access::kRead).fault, Fault::kPermission);
}

// Guest RAM: gpa 0x10000 (uva 0xa000) and gpa 0x11000 (uva 0xb000), one page
// each, in separate host buffers; the IOMMU context sits in front of it.
struct Ctx : ::testing::Test {
  std::vector<uint8_t> lo = std::vector<uint8_t>(4096), hi = std::vector<uint8_t>(4096);
  std::unique_ptr<GuestMemory> mem;
  DmaContext dma;
  IommuContext iommu;
  std::vector<uint64_t> asked;
  void SetUp() override {
    std::iota(lo.begin(), lo.end(), 0);
    std::iota(hi.begin(), hi.end(), 100);
    auto m = GuestMemory::borrow({{0x10000, 0xa000, lo}, {0x11000, 0xb000, hi}});
    ASSERT_TRUE(m.ok());
    mem = std::move(m).value();
    dma.set_memory(mem.get());
    dma.set_translator(&iommu);
  }
  void with_sink() {
    iommu.set_miss_sink([this](uint64_t iova, Access) {
      asked.push_back(iova);
      return true;
    });
  }
};

TEST_F(Ctx, TranslatesThroughTheIotlbOnly) {
  // gpa addresses are not usable as IOVAs once the IOMMU is on.
  Segment gpa[] = {{0x10000, 4, false}};
  std::vector<uint8_t> buf(4);
  EXPECT_EQ(dma.copy_from_guest(gpa, 0, buf).fault, Fault::kIotlbMiss);
  ASSERT_TRUE(iommu.update(0x10000, 0x1000, 0xb000, Perm::kRead).ok());  // offset mapping
  ASSERT_TRUE(dma.copy_from_guest(gpa, 0, buf).ok());
  EXPECT_EQ(buf[0], 100);  // from `hi`: the IOVA went where the IOTLB said
  EXPECT_EQ(dma.faults(Fault::kIotlbMiss), 1u);
  EXPECT_EQ(iommu.stats().updates, 1u);
}

TEST_F(Ctx, FaultsOnUnmappedReadOnlyWrittenWriteOnlyRead) {
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(iommu.update(0x2000, 0x1000, 0xb000, Perm::kWrite).ok());
  std::vector<uint8_t> buf(8, 0xee);
  Segment unmapped[] = {{0x5000, 8, false}};
  EXPECT_EQ(dma.copy_from_guest(unmapped, 0, buf).fault, Fault::kIotlbMiss);
  Segment ro_written[] = {{0x1000, 8, true}};
  EXPECT_EQ(dma.copy_to_guest(ro_written, 0, buf).fault, Fault::kPermission);
  EXPECT_EQ(lo[0], 0);  // nothing written
  Segment wo_read[] = {{0x2000, 8, false}};
  EXPECT_EQ(dma.copy_from_guest(wo_read, 0, buf).fault, Fault::kPermission);
  EXPECT_EQ(buf[0], 0xee);
  EXPECT_EQ(dma.read(0x2000, buf), Fault::kPermission);
  EXPECT_EQ(dma.write(0x1000, buf), Fault::kPermission);
  EXPECT_EQ(dma.faults(Fault::kPermission), 4u);
  EXPECT_EQ(dma.faults(Fault::kIotlbMiss), 1u);
  EXPECT_EQ(dma.faults(), 5u);
  // The permitted directions work.
  EXPECT_EQ(dma.read(0x1000, buf), Fault::kNone);
  EXPECT_EQ(dma.write(0x2000, buf), Fault::kNone);
  EXPECT_EQ(hi[0], 0);
}

TEST_F(Ctx, StaleTranslationAfterInvalidateFaults) {
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xa000, Perm::kReadWrite).ok());
  std::vector<uint8_t> buf(4);
  ASSERT_EQ(dma.read(0x1004, buf), Fault::kNone);
  EXPECT_EQ(buf[0], 4);
  iommu.invalidate(0x1000, 0x1000);
  EXPECT_EQ(dma.read(0x1004, buf), Fault::kIotlbMiss);
  Segment s[] = {{0x1004, 4, true}};
  EXPECT_EQ(dma.copy_to_guest(s, 0, buf).fault, Fault::kIotlbMiss);
  EXPECT_EQ(iommu.stats().invalidates, 1u);
  // Re-mapped elsewhere: the new translation, never the old one.
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xb000, Perm::kReadWrite).ok());
  ASSERT_EQ(dma.read(0x1004, buf), Fault::kNone);
  EXPECT_EQ(buf[0], 104);
}

TEST_F(Ctx, MappingThatStraddlesTwoRegionsNeverReadsPastOne) {
  // One IOTLB entry over uva 0xa800..0xb800: half in `lo`, half in `hi`,
  // which are not contiguous on the host.
  ASSERT_TRUE(iommu.update(0x4000, 0x1000, 0xa800, Perm::kRead).ok());
  std::vector<uint8_t> buf(16);
  EXPECT_EQ(dma.read(0x4000, buf), Fault::kNone);  // inside `lo`
  EXPECT_EQ(dma.read(0x47f8, buf), Fault::kOutOfRange);
  // Past guest RAM altogether.
  ASSERT_TRUE(iommu.update(0x8000, 0x1000, 0xc000, Perm::kRead).ok());
  EXPECT_EQ(dma.read(0x8000, buf), Fault::kUnmapped);
}

TEST_F(Ctx, WrappingAccessFaults) {
  ASSERT_TRUE(iommu.update(0xffff'ffff'ffff'f000, 0x1000, 0xa000, Perm::kRead).ok());
  std::vector<uint8_t> buf(16);
  EXPECT_EQ(dma.read(0xffff'ffff'ffff'fff8, buf), Fault::kWrap);
  EXPECT_EQ(dma.read(0xffff'ffff'ffff'fff0, buf), Fault::kNone);
}

TEST_F(Ctx, CrossingIntoAHoleCopiesUpToTheBoundaryThenFaults) {
  // Two adjacent entries (host-discontiguous) then a hole at 0x3000.
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xb000, Perm::kRead).ok());
  ASSERT_TRUE(iommu.update(0x2000, 0x1000, 0xa000, Perm::kRead).ok());
  Segment s[] = {{0x1ff8, 0x10, false}};
  std::vector<uint8_t> buf(0x10);
  auto r = dma.copy_from_guest(s, 0, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(buf[0], uint8_t(100 + 0xff8));  // end of `hi`
  EXPECT_EQ(buf[8], 0);                     // start of `lo`
  Segment into_hole[] = {{0x2ff8, 0x10, false}};
  r = dma.copy_from_guest(into_hole, 0, buf);
  EXPECT_EQ(r.fault, Fault::kIotlbMiss);
  EXPECT_EQ(r.bytes, 8u);
  // A whole-range read copies nothing at all.
  std::vector<uint8_t> z(0x10, 0xee);
  EXPECT_EQ(dma.read(0x2ff8, z), Fault::kIotlbMiss);
  EXPECT_EQ(z[0], 0xee);
}

TEST_F(Ctx, HostRangeNeedsOneContiguousRange) {
  ASSERT_TRUE(iommu.update(0x1000, 0x800, 0xa000, Perm::kReadWrite).ok());
  ASSERT_TRUE(iommu.update(0x1800, 0x800, 0xa800, Perm::kReadWrite).ok());
  ASSERT_TRUE(iommu.update(0x2000, 0x1000, 0xb000, Perm::kRead).ok());
  uint8_t* h = nullptr;
  EXPECT_EQ(dma.host_range(0x1000, 0x1000, Access::kWrite, &h), Fault::kNone);
  EXPECT_EQ(h, lo.data());
  EXPECT_EQ(dma.host_range(0x1f00, 0x200, Access::kRead, &h), Fault::kOutOfRange);
  EXPECT_EQ(dma.host_range(0x2000, 0x10, Access::kWrite, &h), Fault::kPermission);
}

// A ring part contiguous in IOVA only (as Linux's IOMMU DMA layer allocates
// a coherent buffer): each page of it on its own, in whatever order.
TEST_F(Ctx, HostPagesTakesAnIovaRangeWhosePagesLieApart) {
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xb000, Perm::kReadWrite).ok());  // `hi`
  ASSERT_TRUE(iommu.update(0x2000, 0x1000, 0xa000, Perm::kReadWrite).ok());  // `lo`
  std::vector<uint8_t*> pages;
  uint32_t first = 0;
  EXPECT_EQ(dma.host_pages(0x1ff0, 0x20, Access::kWrite, &pages, &first), Fault::kNone);
  EXPECT_EQ(pages, (std::vector<uint8_t*>{hi.data(), lo.data()}));
  EXPECT_EQ(first, 0xff0u);
  uint8_t* h = nullptr;  // as one host range it is refused
  EXPECT_EQ(dma.host_range(0x1ff0, 0x20, Access::kWrite, &h), Fault::kOutOfRange);
  // Every byte must still be reachable, with the access asked.
  EXPECT_EQ(dma.host_pages(0x2ff0, 0x20, Access::kRead, &pages, &first), Fault::kIotlbMiss);
  ASSERT_TRUE(iommu.update(0x3000, 0x1000, 0xb000, Perm::kRead).ok());
  EXPECT_EQ(dma.host_pages(0x2ff0, 0x20, Access::kWrite, &pages, &first), Fault::kPermission);
  EXPECT_EQ(dma.host_pages(0x2ff0, 0x20, Access::kRead, &pages, &first), Fault::kNone);
  // A page that is itself split across host ranges is refused.
  ASSERT_TRUE(iommu.update(0x5000, 0x800, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(iommu.update(0x5800, 0x800, 0xb800, Perm::kRead).ok());
  EXPECT_EQ(dma.host_pages(0x5000, 0x1000, Access::kRead, &pages, &first), Fault::kOutOfRange);
}

TEST_F(Ctx, MissesAreAskedOnceAndRetried) {
  with_sink();
  Segment s[] = {{0x1010, 0x2000, false}};  // pages 0x1000, 0x2000, 0x3000
  EXPECT_EQ(dma.check(s), Fault::kPending);
  EXPECT_EQ(asked, (std::vector<uint64_t>{0x1000, 0x2000, 0x3000}));
  EXPECT_EQ(iommu.outstanding(), 3u);
  // Asking again while outstanding sends nothing new.
  EXPECT_EQ(dma.check(s), Fault::kPending);
  EXPECT_EQ(asked.size(), 3u);
  EXPECT_EQ(dma.faults(), 0u);  // waiting is not a fault
  ASSERT_TRUE(iommu.update(0x1000, 0x1000, 0xa000, Perm::kRead).ok());
  ASSERT_TRUE(iommu.update(0x2000, 0x1000, 0xb000, Perm::kRead).ok());
  iommu.miss_answered(true);
  iommu.miss_answered(true);
  iommu.miss_answered(false);                  // the front-end could not translate 0x3000
  EXPECT_EQ(dma.check(s), Fault::kIotlbMiss);  // a real fault now
  EXPECT_EQ(dma.faults(Fault::kIotlbMiss), 1u);
  EXPECT_EQ(iommu.stats().misses, 3u);
  EXPECT_EQ(iommu.stats().miss_failures, 1u);
  // Next round it is asked again (the guest may have mapped it since).
  iommu.end_retry_round();
  EXPECT_EQ(dma.check(s), Fault::kPending);
  EXPECT_EQ(asked.size(), 4u);
}

TEST_F(Ctx, ACopyNeverWaits) {
  with_sink();
  Segment s[] = {{0x1000, 4, true}};
  std::vector<uint8_t> buf(4);
  auto r = dma.copy_to_guest(s, 0, buf);
  EXPECT_EQ(r.fault, Fault::kIotlbMiss);
  EXPECT_EQ(dma.faults(Fault::kIotlbMiss), 1u);
  // read() of a descriptor table can wait, and nothing is counted.
  EXPECT_EQ(dma.read(0x5000, buf), Fault::kPending);
  EXPECT_EQ(dma.faults(), 1u);
}

TEST_F(Ctx, AccessFailAndLostChannelTurnWaitsIntoFaults) {
  with_sink();
  Segment s[] = {{0x1000, 4, false}};
  EXPECT_EQ(dma.check(s), Fault::kPending);
  iommu.access_failed(0x1000, 4);
  EXPECT_EQ(dma.check(s), Fault::kIotlbMiss);
  Segment t[] = {{0x7000, 4, false}};
  EXPECT_EQ(dma.check(t), Fault::kPending);
  iommu.fail_outstanding();
  EXPECT_EQ(iommu.outstanding(), 0u);
  EXPECT_EQ(dma.check(t), Fault::kIotlbMiss);
  // A later update for a failed page is honoured at once.
  ASSERT_TRUE(iommu.update(0x7000, 0x1000, 0xa000, Perm::kRead).ok());
  EXPECT_EQ(dma.check(t), Fault::kNone);
}

TEST_F(Ctx, WithoutASinkAMissIsAFault) {
  Segment s[] = {{0x1000, 4, false}};
  EXPECT_EQ(dma.check(s), Fault::kIotlbMiss);
  iommu.reset();
  EXPECT_EQ(iommu.stats().entries, 0u);
}

}  // namespace
}  // namespace axl::iommu
