#include "iommu/guest_memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>

namespace axl::iommu {

namespace {
// true when [a, a+len) wraps the 64-bit address space.
bool wraps(uint64_t a, uint64_t len) { return len != 0 && a + (len - 1) < a; }
std::string hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}
}  // namespace

GuestMemory::~GuestMemory() {
  for (auto& r : regions_)
    if (r.map_base) ::munmap(r.map_base, r.map_len);
}

Status GuestMemory::validate(const std::vector<Region>& rs) {
  if (rs.size() > kMaxRegions) return make_error("too many memory regions");
  for (size_t i = 0; i < rs.size(); ++i) {
    const Region& a = rs[i];
    if (a.size == 0) return make_error("empty memory region");
    if (wraps(a.gpa, a.size) || wraps(a.uva, a.size))
      return make_error("memory region wraps the address space at gpa " + hex(a.gpa));
    for (size_t j = 0; j < i; ++j) {
      const Region& b = rs[j];
      // Overlaps would make a translation ambiguous; QEMU never sends them.
      if (a.gpa <= b.gpa + (b.size - 1) && b.gpa <= a.gpa + (a.size - 1))
        return make_error("memory regions overlap in guest-physical space at " + hex(a.gpa));
      if (a.uva <= b.uva + (b.size - 1) && b.uva <= a.uva + (a.size - 1))
        return make_error("memory regions overlap in front-end address space at " + hex(a.uva));
    }
  }
  return {};
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::map(const std::vector<RegionSpec>& specs) {
  std::unique_ptr<GuestMemory> mem(new GuestMemory());
  if (specs.size() > kMaxRegions) return make_error("too many memory regions");
  for (auto& s : specs) {
    if (!s.fd) return make_error("memory region without fd");
    if (s.memory_size == 0) return make_error("empty memory region");
    uint64_t len = s.mmap_offset + s.memory_size;
    if (len < s.mmap_offset || len > (uint64_t(1) << 47))
      return make_error("memory region size/offset out of range");
    struct stat st {};
    if (::fstat(s.fd.get(), &st) < 0) return make_error(std::string("fstat: ") + strerror(errno));
    // Mapping past EOF would turn an access into SIGBUS in the trusted core.
    if (S_ISREG(st.st_mode) && uint64_t(st.st_size) < len)
      return make_error("memory region (" + hex(len) + " bytes) exceeds its file (" +
                        hex(uint64_t(st.st_size)) + ")");
    void* p =
        ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, s.fd.get(), 0);
    if (p == MAP_FAILED) return make_error(std::string("mmap guest memory: ") + strerror(errno));
    mem->regions_.push_back(Region{s.guest_phys_addr, s.memory_size, s.userspace_addr,
                                   static_cast<uint8_t*>(p) + s.mmap_offset, p, size_t(len)});
    // The fd closes when `s` goes: the mapping keeps the memory alive.
  }
  if (auto st = validate(mem->regions_); !st) return st.error();
  return mem;
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::borrow(const std::vector<BorrowedRegion>& rs) {
  std::unique_ptr<GuestMemory> mem(new GuestMemory());
  for (auto& r : rs)
    mem->regions_.push_back(
        Region{r.guest_phys_addr, r.bytes.size(), r.userspace_addr, r.bytes.data(), nullptr, 0});
  if (auto st = validate(mem->regions_); !st) return st.error();
  return mem;
}

GuestMemory::Translation GuestMemory::lookup(uint64_t addr, uint64_t len, bool by_uva,
                                             const Region** hit) const {
  if (wraps(addr, len)) return {Lookup::kWrap, nullptr};
  for (const Region& r : regions_) {
    uint64_t base = by_uva ? r.uva : r.gpa;
    if (addr < base || addr - base >= r.size) continue;
    uint64_t off = addr - base;
    // off < size, so size - off cannot underflow.
    if (len > r.size - off) return {Lookup::kOutOfRange, nullptr};
    if (hit) *hit = &r;
    return {Lookup::kOk, r.host + off};
  }
  return {Lookup::kUnmapped, nullptr};
}

GuestMemory::Translation GuestMemory::translate_gpa(uint64_t gpa, uint64_t len) const {
  return lookup(gpa, len, false, nullptr);
}

GuestMemory::Translation GuestMemory::translate_uva(uint64_t uva, uint64_t len) const {
  return lookup(uva, len, true, nullptr);
}

GuestMemory::Translation GuestMemory::uva_to_gpa(uint64_t uva, uint64_t len, uint64_t* gpa) const {
  const Region* r = nullptr;
  Translation t = lookup(uva, len, true, &r);
  if (t.result == Lookup::kOk) *gpa = r->gpa + (uva - r->uva);
  return t;
}

}  // namespace axl::iommu
