// The device IOTLB of one guest device (vhost-user "IOMMU support",
// VIRTIO_F_ACCESS_PLATFORM): a cache of IOVA -> front-end virtual address
// translations with access permissions, filled by the front-end's
// VHOST_USER_IOTLB_MSG updates and emptied by its invalidations.
//
// Iotlb is the plain table; IommuContext puts it behind the copy engine's
// IovaTranslator hook and asks the front-end for what is missing.  Everything
// in an update is untrusted: sizes and addresses are overflow-checked, the
// table is bounded, and a translation never reaches past its entry.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "common/result.h"
#include "iommu/dma.h"

namespace axl::iommu {

// vhost's access permissions (VHOST_ACCESS_RO/WO/RW), from the device's
// point of view: RO = the device may read guest memory there.
enum class Perm : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kReadWrite = 3 };
bool valid_perm(uint8_t p);

class Iotlb {
 public:
  // An untrusted front-end cannot grow the table without bound; being a
  // cache, a full table is simply flushed (what is needed is asked again).
  static constexpr size_t kMaxEntries = 65536;

  struct Entry {
    uint64_t iova = 0;
    uint64_t size = 0;
    uint64_t uaddr = 0;
    Perm perm = Perm::kNone;
  };

  // Adds [iova, iova+size) -> uaddr.  Entries it overlaps are dropped first,
  // so a translation is never ambiguous.
  Status update(uint64_t iova, uint64_t size, uint64_t uaddr, Perm perm);
  // Drops every entry that overlaps [iova, iova+size) (a whole entry even if
  // only part of it is named: it is a cache).  size 0 or a range running past
  // the top of the address space means "to the end".  Returns entries dropped.
  size_t invalidate(uint64_t iova, uint64_t size);
  void clear() { entries_.clear(); }
  size_t size() const { return entries_.size(); }

  // The longest span from `iova` (at most len bytes) inside one entry:
  // kIotlbMiss when no entry holds `iova`, kPermission when the entry lacks
  // the access.  Never crosses out of the entry; the caller asks again.
  IovaTranslator::Span lookup(uint64_t iova, uint64_t len, Access access) const;

 private:
  std::map<uint64_t, Entry> entries_;  // keyed by iova; non-overlapping
};

// One device's guest-IOMMU state: the IOTLB plus the miss protocol.  Runs on
// the device thread only (the counters are read from other threads).
//
// A lookup that misses asks the front-end (through the miss sink, the
// vhost-user back-end channel) and reports kPending: the caller retries once
// the front-end has answered.  A miss the front-end could not translate
// (a failed answer, or ACCESS_FAIL) makes the next retry of that page a real
// fault (kIotlbMiss) instead of waiting forever.
class IommuContext final : public IovaTranslator {
 public:
  static constexpr uint64_t kPageSize = 4096;  // granularity of miss requests
  static constexpr size_t kMaxOutstanding = 256;

  // Sends a miss for the page at `iova`; false if it could not be sent.
  using MissSink = std::function<bool(uint64_t iova, Access access)>;
  // Empty sink: nobody to ask, every miss is a fault at once.
  void set_miss_sink(MissSink sink) { sink_ = std::move(sink); }

  Status update(uint64_t iova, uint64_t size, uint64_t uaddr, Perm perm);
  void invalidate(uint64_t iova, uint64_t size);
  // The front-end reports it cannot translate [iova, iova+size).
  void access_failed(uint64_t iova, uint64_t size);
  // The front-end answered the oldest outstanding miss (in send order).
  void miss_answered(bool ok);
  // Every outstanding miss is lost (back-end channel gone): they fail.
  void fail_outstanding();
  size_t outstanding() const { return outstanding_.size(); }
  // After the accesses that waited have been retried: failed pages are asked
  // again next time (the guest may map them later).
  void end_retry_round() { failed_.clear(); }
  // A new front-end connection: empty table, nothing outstanding.
  void reset();

  Span translate(uint64_t iova, uint64_t len, Access access) override;

  struct Stats {
    uint64_t updates = 0;
    uint64_t invalidates = 0;
    uint64_t misses = 0;         // miss requests sent to the front-end
    uint64_t miss_failures = 0;  // answered "cannot translate" (or ACCESS_FAIL)
    uint64_t entries = 0;
  };
  Stats stats() const;

 private:
  Iotlb tlb_;
  MissSink sink_;
  std::deque<uint64_t> outstanding_;  // pages, in the order the misses were sent
  std::set<uint64_t> failed_;
  std::atomic<uint64_t> updates_{0}, invalidates_{0}, misses_{0}, miss_failures_{0}, entries_{0};
};

}  // namespace axl::iommu
