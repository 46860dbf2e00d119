#include "iommu/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

namespace axl::iommu {
namespace {

using Lookup = GuestMemory::Lookup;

TEST(GuestMemory, MapsMemfdAndTranslates) {
  UniqueFd fd(::memfd_create("gm", MFD_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), 3 * 4096), 0);
  ASSERT_EQ(::pwrite(fd.get(), "xyz", 3, 4096 + 10), 3);
  std::vector<RegionSpec> specs;
  specs.push_back(RegionSpec{0x100000, 2 * 4096, 0x7f0000000000, 4096, std::move(fd)});
  auto mem = GuestMemory::map(specs);
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  auto t = (*mem)->translate_gpa(0x100000 + 10, 3);
  ASSERT_EQ(t.result, Lookup::kOk);
  EXPECT_EQ(0, memcmp(t.host, "xyz", 3));
  auto u = (*mem)->translate_uva(0x7f0000000000 + 10, 3);
  ASSERT_EQ(u.result, Lookup::kOk);
  EXPECT_EQ(u.host, t.host);
  uint64_t gpa = 0;
  ASSERT_EQ((*mem)->uva_to_gpa(0x7f0000000000 + 10, 1, &gpa).result, Lookup::kOk);
  EXPECT_EQ(gpa, 0x100000u + 10);
  EXPECT_EQ((*mem)->translate_gpa(0x100000 + 2 * 4096 - 1, 2).result, Lookup::kOutOfRange);
  EXPECT_EQ((*mem)->translate_gpa(0x100000 + 2 * 4096, 1).result, Lookup::kUnmapped);
  EXPECT_EQ((*mem)->translate_gpa(0xfff, 1).result, Lookup::kUnmapped);
}

TEST(GuestMemory, RejectsRegionBeyondFile) {
  UniqueFd fd(::memfd_create("gm", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), 4096), 0);
  std::vector<RegionSpec> specs;
  specs.push_back(RegionSpec{0, 4096, 0x1000, 4096, std::move(fd)});
  EXPECT_FALSE(GuestMemory::map(specs).ok());
}

TEST(GuestMemory, RejectsOverlapWrapAndEmpty) {
  std::vector<uint8_t> a(4096), b(4096);
  EXPECT_FALSE(GuestMemory::borrow({{0, 0x10000, a}, {0x800, 0x20000, b}}).ok());
  EXPECT_FALSE(GuestMemory::borrow({{0, 0x10000, a}, {0x10000, 0x10800, b}}).ok());
  EXPECT_FALSE(GuestMemory::borrow({{~0ull - 10, 0, a}}).ok());
  EXPECT_FALSE(GuestMemory::borrow({{0, 0, std::span<uint8_t>()}}).ok());
  EXPECT_TRUE(GuestMemory::borrow({{0, 0x10000, a}, {0x1000, 0x20000, b}}).ok());
}

TEST(GuestMemory, WrappingRangeIsRejected) {
  std::vector<uint8_t> a(4096);
  auto mem = GuestMemory::borrow({{~0ull - 4095, 0, a}});
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ((*mem)->translate_gpa(~0ull - 4095, 4096).result, Lookup::kOk);
  EXPECT_EQ((*mem)->translate_gpa(~0ull - 10, 100).result, Lookup::kWrap);
  EXPECT_EQ((*mem)->translate_gpa(~0ull, 2).result, Lookup::kWrap);
}

}  // namespace
}  // namespace axl::iommu
