#include "iommu/dma.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace axl::iommu {
namespace {

// Two adjacent guest-physical regions backed by separate host buffers, so a
// range that straddles them is not contiguous on the host.
struct Fixture : ::testing::Test {
  std::vector<uint8_t> lo = std::vector<uint8_t>(4096), hi = std::vector<uint8_t>(4096);
  std::unique_ptr<GuestMemory> mem;
  DmaContext dma;
  void SetUp() override {
    std::iota(lo.begin(), lo.end(), 0);
    std::iota(hi.begin(), hi.end(), 100);
    auto m = GuestMemory::borrow({{0x10000, 0xa000, lo}, {0x11000, 0xb000, hi}});
    ASSERT_TRUE(m.ok());
    mem = std::move(m).value();
    dma.set_memory(mem.get());
  }
};

TEST_F(Fixture, CopiesAcrossSegmentsWithOffset) {
  Segment segs[] = {{0x10000, 4, false}, {0x10100, 8, false}, {0x11000, 16, true}};
  std::vector<uint8_t> out(6);
  auto r = dma.copy_from_guest(segs, 2, out);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.bytes, 6u);
  EXPECT_EQ(out, (std::vector<uint8_t>{2, 3, 0, 1, 2, 3}));

  std::vector<uint8_t> in = {9, 8, 7};
  auto w = dma.copy_to_guest(segs, 12 + 5, in);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(hi[5], 9);
  EXPECT_EQ(hi[7], 7);
  EXPECT_EQ(dma.faults(), 0u);
}

TEST_F(Fixture, ShortChainCopiesWhatExists) {
  Segment segs[] = {{0x10000, 4, false}};
  std::vector<uint8_t> out(10);
  auto r = dma.copy_from_guest(segs, 1, out);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.bytes, 3u);
}

TEST_F(Fixture, ZeroLength) {
  Segment segs[] = {{0x10000, 0, false}, {0x10010, 4, false}};
  std::vector<uint8_t> out(4);
  auto r = dma.copy_from_guest(segs, 0, out);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(out[0], 16);
  EXPECT_TRUE(dma.copy_from_guest(segs, 0, std::span<uint8_t>()).ok());
  EXPECT_EQ(dma.check(segs), Fault::kNone);
}

TEST_F(Fixture, WrongDirection) {
  Segment ro[] = {{0x10000, 8, false}};
  Segment wo[] = {{0x10000, 8, true}};
  std::vector<uint8_t> buf(4, 0xee);
  EXPECT_EQ(dma.copy_to_guest(ro, 0, buf).fault, Fault::kDirection);
  EXPECT_EQ(lo[0], 0);  // nothing written
  EXPECT_EQ(dma.copy_from_guest(wo, 0, buf).fault, Fault::kDirection);
  EXPECT_EQ(dma.faults(Fault::kDirection), 2u);
}

TEST_F(Fixture, OutOfRangeAndUnmapped) {
  Segment past[] = {{0x10ff0, 32, true}};  // starts in lo, runs into hi
  std::vector<uint8_t> buf(32);
  EXPECT_EQ(dma.copy_to_guest(past, 0, buf).fault, Fault::kOutOfRange);
  EXPECT_EQ(dma.check(past), Fault::kOutOfRange);
  Segment nowhere[] = {{0x9000, 4, false}};
  EXPECT_EQ(dma.copy_from_guest(nowhere, 0, buf).fault, Fault::kUnmapped);
  Segment end[] = {{0x12000, 1, false}};
  EXPECT_EQ(dma.check(end), Fault::kUnmapped);
  EXPECT_EQ(dma.faults(Fault::kOutOfRange), 2u);
  EXPECT_EQ(dma.faults(Fault::kUnmapped), 2u);
}

TEST_F(Fixture, StraddlingTwoRegionsIsRejectedEvenIfAdjacent) {
  // gpa 0x10ffc..0x11004 is backed on both sides, but by two host buffers:
  // one segment must translate into one region.
  Segment s[] = {{0x10ffc, 8, false}};
  std::vector<uint8_t> buf(8);
  EXPECT_EQ(dma.copy_from_guest(s, 0, buf).fault, Fault::kOutOfRange);
  // Split at the boundary it is fine.
  Segment ok[] = {{0x10ffc, 4, false}, {0x11000, 4, false}};
  auto r = dma.copy_from_guest(ok, 0, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(buf[3], uint8_t(4095));
  EXPECT_EQ(buf[4], 100);
}

TEST_F(Fixture, WrappingAddress) {
  Segment s[] = {{~0ull - 3, 16, false}};
  std::vector<uint8_t> buf(16);
  EXPECT_EQ(dma.copy_from_guest(s, 0, buf).fault, Fault::kWrap);
  EXPECT_EQ(dma.check(s), Fault::kWrap);
  EXPECT_EQ(dma.read(~0ull - 3, buf), Fault::kWrap);
}

TEST_F(Fixture, RawReadWriteAllOrNothing) {
  std::vector<uint8_t> buf(8, 0x55);
  EXPECT_EQ(dma.write(0x10ffc, buf), Fault::kOutOfRange);
  EXPECT_EQ(lo[4092], uint8_t(4092 & 0xff));  // untouched
  EXPECT_EQ(dma.write(0x10010, buf), Fault::kNone);
  EXPECT_EQ(lo[0x10], 0x55);
  std::vector<uint8_t> rd(2);
  EXPECT_EQ(dma.read(0x11000, rd), Fault::kNone);
  EXPECT_EQ(rd[1], 101);
}

TEST(Dma, NoMemoryTableIsUnmapped) {
  DmaContext dma;
  Segment s[] = {{0, 1, false}};
  EXPECT_EQ(dma.check(s), Fault::kUnmapped);
}

// A fake guest IOMMU: IOVA 0x1000.. maps read-only to gpa 0x10000 (uva 0xa000).
struct FakeIotlb : IovaTranslator {
  Span translate(uint64_t iova, uint64_t len, Access a) override {
    if (iova < 0x1000 || iova >= 0x2000) return {Fault::kIotlbMiss, 0, 0};
    if (a == Access::kWrite) return {Fault::kPermission, 0, 0};
    return {Fault::kNone, 0xa000 + (iova - 0x1000), std::min<uint64_t>(len, 0x2000 - iova)};
  }
};

TEST_F(Fixture, IotlbLayerTranslatesAndFaults) {
  FakeIotlb iotlb;
  dma.set_translator(&iotlb);
  Segment s[] = {{0x1002, 2, false}};
  std::vector<uint8_t> buf(2);
  ASSERT_TRUE(dma.copy_from_guest(s, 0, buf).ok());
  EXPECT_EQ(buf[0], 2);
  Segment w[] = {{0x1002, 2, true}};
  EXPECT_EQ(dma.copy_to_guest(w, 0, buf).fault, Fault::kPermission);
  Segment miss[] = {{0x3000, 2, false}};
  EXPECT_EQ(dma.copy_from_guest(miss, 0, buf).fault, Fault::kIotlbMiss);
}

}  // namespace
}  // namespace axl::iommu
