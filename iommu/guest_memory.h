// Guest RAM as the vhost-user front-end (QEMU) describes it in
// VHOST_USER_SET_MEM_TABLE: up to kMaxRegions regions, each backed by an fd we
// map MAP_SHARED.  Everything in the table is untrusted: sizes, offsets and
// addresses are checked before mapping and every translation is
// overflow-checked and confined to one region.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::iommu {

// One region as announced by the front-end (vhost-user "Memory region
// description"), plus the fd that arrived with it.
struct RegionSpec {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;  // the front-end's own virtual address of the region
  uint64_t mmap_offset = 0;     // where the region starts inside the fd
  UniqueFd fd;
};

class GuestMemory {
 public:
  // vhost-user's classic limit (VHOST_MEMORY_BASELINE_NREGIONS).
  static constexpr size_t kMaxRegions = 8;

  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // Maps every region; rejects overlapping, empty, wrapping or truncated-file
  // regions (a region past the end of its file would SIGBUS on access).
  static Result<std::unique_ptr<GuestMemory>> map(const std::vector<RegionSpec>& regions);

  // A region over memory the caller owns and keeps alive (tests, fakes).
  struct BorrowedRegion {
    uint64_t guest_phys_addr;
    uint64_t userspace_addr;
    std::span<uint8_t> bytes;
  };
  static Result<std::unique_ptr<GuestMemory>> borrow(const std::vector<BorrowedRegion>& regions);

  enum class Lookup : uint8_t { kOk, kUnmapped, kOutOfRange, kWrap };
  struct Translation {
    Lookup result = Lookup::kUnmapped;
    uint8_t* host = nullptr;
  };
  // Guest-physical [gpa, gpa+len) -> host pointer, only if the whole range
  // lies in one region.  len == 0 is accepted when gpa itself is mapped.
  Translation translate_gpa(uint64_t gpa, uint64_t len) const;
  // Front-end virtual address (vring addresses in SET_VRING_ADDR are QEMU
  // VAs, vhost-user "Ring addresses") -> host pointer, same rules.
  Translation translate_uva(uint64_t uva, uint64_t len) const;
  // The guest-physical address of a front-end virtual address.
  Translation uva_to_gpa(uint64_t uva, uint64_t len, uint64_t* gpa) const;

  size_t region_count() const { return regions_.size(); }

 private:
  struct Region {
    uint64_t gpa;
    uint64_t size;
    uint64_t uva;
    uint8_t* host;   // first byte of the region
    void* map_base;  // what munmap gets (nullptr when borrowed)
    size_t map_len;
  };
  GuestMemory() = default;
  static Status validate(const std::vector<Region>& regions);
  Translation lookup(uint64_t addr, uint64_t len, bool by_uva, const Region** hit) const;

  std::vector<Region> regions_;
};

}  // namespace axl::iommu
