// The per-device DMA context and copy engine (docs/architecture.md "Confinement", Xen's
// grant copy): the only code that moves bytes between guest RAM and anything
// else.  Every segment a device touches is checked against guest RAM, against
// the device's IOMMU mappings once the guest programs one, and against the
// direction the descriptor allows.  A violation is a Fault value, counted.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "iommu/guest_memory.h"

namespace axl::iommu {

enum class Fault : uint8_t {
  kNone = 0,
  kUnmapped,    // the address is in no guest RAM region (or no memory table yet)
  kOutOfRange,  // starts in a region but runs past its end (incl. straddling two)
  kWrap,        // addr + len wraps the 64-bit address space
  kDirection,   // read from a device-writable or write to a device-readable segment
  kIotlbMiss,   // guest IOMMU: no translation for the IOVA (vhost-user IOTLB miss)
  kPermission,  // guest IOMMU: mapping lacks the needed read/write permission
  // Not a fault: the guest IOMMU translation was asked of the front-end
  // (vhost-user IOTLB miss); retry once it answers.  Never counted.
  kPending,
};
constexpr size_t kFaultKinds = 8;
const char* to_string(Fault f);

enum class Access : uint8_t { kRead, kWrite };  // from the device's point of view

// One element of a descriptor chain (virtio 1.2 §2.7.5): a guest address
// (an IOVA when a guest IOMMU is active) and the direction the driver allows.
struct Segment {
  uint64_t addr = 0;
  uint32_t len = 0;
  bool device_writable = false;
};

// The slot for a guest IOMMU (vhost-user IOTLB messages, VIRTIO_F_ACCESS_PLATFORM):
// maps an IOVA range to a front-end virtual address.  It may return a shorter
// span than asked for (a mapping boundary); the copy engine then asks again.
class IovaTranslator {
 public:
  virtual ~IovaTranslator() = default;
  struct Span {
    Fault fault = Fault::kNone;
    uint64_t uva = 0;
    uint64_t len = 0;  // > 0 when fault == kNone
  };
  // Not const: a miss may be forwarded to whoever can fill it.
  virtual Span translate(uint64_t iova, uint64_t len, Access access) = 0;
};

struct CopyResult {
  Fault fault = Fault::kNone;
  size_t bytes = 0;  // bytes moved before the fault (or in total)
  bool ok() const { return fault == Fault::kNone; }
};

class DmaContext {
 public:
  DmaContext() = default;
  DmaContext(const DmaContext&) = delete;
  DmaContext& operator=(const DmaContext&) = delete;

  // Non-owning: the vhost-user handler owns the memory table and replaces it
  // on SET_MEM_TABLE; both live on the same device thread.
  void set_memory(const GuestMemory* mem) { mem_ = mem; }
  const GuestMemory* memory() const { return mem_; }
  // nullptr = no guest IOMMU: segment addresses are guest-physical.
  void set_translator(IovaTranslator* t) { iotlb_ = t; }
  bool translating() const { return iotlb_ != nullptr; }
  // Names the device in fault logs.
  void set_label(std::string label) { label_ = std::move(label); }

  // Checks that every byte of every segment is reachable (no copy).  A real
  // fault is counted and returned at once; translations still being asked
  // of the front-end give kPending after every segment was looked at (so
  // all the misses of a chain go out together).
  Fault check(std::span<const Segment> segs);
  // check() without counting or logging real faults (kPending misses are
  // still asked for).
  Fault probe(std::span<const Segment> segs);

  // [addr, addr+len) as one host range (ring parts, which are accessed in
  // place): every byte reachable with `access` and contiguous in host
  // memory.  kPending as in check(); a discontiguous range is kOutOfRange.
  Fault host_range(uint64_t addr, uint64_t len, Access access, uint8_t** host);
  // The same range page by page, for a part that is contiguous in IOVA
  // only: every byte reachable with `access`, and each 4 KiB page of IOVA
  // it touches one host range; `pages` gets each page's host address and
  // `first` the range's offset in the first page.
  Fault host_pages(uint64_t addr, uint64_t len, Access access, std::vector<uint8_t*>* pages,
                   uint32_t* first);

  // The chain is one byte stream: segments in order.  Copies min(dst.size(),
  // stream bytes after `offset`) bytes from the stream at `offset`; every
  // segment touched must be device-readable.
  CopyResult copy_from_guest(std::span<const Segment> segs, uint64_t offset,
                             std::span<uint8_t> dst);
  // Same, into the chain; every segment touched must be device-writable.
  CopyResult copy_to_guest(std::span<const Segment> segs, uint64_t offset,
                           std::span<const uint8_t> src);

  // Plain guest-address accesses (indirect descriptor tables, virtio-net
  // headers): the whole range must be reachable or nothing is copied.
  // kPending (uncounted) when a translation was asked of the front-end.
  Fault read(uint64_t addr, std::span<uint8_t> dst);
  Fault write(uint64_t addr, std::span<const uint8_t> src);

  uint64_t faults() const;
  uint64_t faults(Fault kind) const {
    return counts_[size_t(kind)].load(std::memory_order_relaxed);
  }

 private:
  struct Piece {
    Fault fault;
    uint8_t* host;
    uint64_t len;
  };
  // Translates the longest contiguous host span starting at addr (<= len).
  Piece translate(uint64_t addr, uint64_t len, Access access);
  // Counts and logs a real fault (kNone and kPending pass through).
  Fault count(Fault f, uint64_t addr = 0, Access access = Access::kRead);
  Fault scan(std::span<const Segment> segs, bool record);
  CopyResult copy(std::span<const Segment> segs, uint64_t offset, uint8_t* buf, size_t n,
                  Access access);
  Fault raw(uint64_t addr, uint8_t* buf, size_t n, Access access);

  const GuestMemory* mem_ = nullptr;
  IovaTranslator* iotlb_ = nullptr;
  std::string label_ = "device";
  // Read by stats() on other threads.
  std::array<std::atomic<uint64_t>, kFaultKinds> counts_{};
};

}  // namespace axl::iommu
