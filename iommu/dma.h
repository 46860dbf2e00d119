// The per-device DMA context and copy engine (DESIGN.md "Confinement", Xen's
// grant copy): the only code that moves bytes between guest RAM and anything
// else.  Every segment a device touches is checked against guest RAM, against
// the device's IOMMU mappings once the guest programs one, and against the
// direction the descriptor allows.  A violation is a Fault value, counted.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <span>

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
};
constexpr size_t kFaultKinds = 7;
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
  virtual Span translate(uint64_t iova, uint64_t len, Access access) const = 0;
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
  void set_translator(const IovaTranslator* t) { iotlb_ = t; }

  // Checks that every byte of every segment is reachable (no copy).
  Fault check(std::span<const Segment> segs);

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
  Fault read(uint64_t addr, std::span<uint8_t> dst);
  Fault write(uint64_t addr, std::span<const uint8_t> src);

  uint64_t faults() const;
  uint64_t faults(Fault kind) const { return counts_[size_t(kind)].load(std::memory_order_relaxed); }

 private:
  struct Piece {
    Fault fault;
    uint8_t* host;
    uint64_t len;
  };
  // Translates the longest contiguous host span starting at addr (<= len).
  Piece translate(uint64_t addr, uint64_t len, Access access) const;
  Fault count(Fault f);
  CopyResult copy(std::span<const Segment> segs, uint64_t offset, uint8_t* buf, size_t n,
                  Access access);
  Fault raw(uint64_t addr, uint8_t* buf, size_t n, Access access);

  const GuestMemory* mem_ = nullptr;
  const IovaTranslator* iotlb_ = nullptr;
  // Read by stats() on other threads.
  std::array<std::atomic<uint64_t>, kFaultKinds> counts_{};
};

}  // namespace axl::iommu
