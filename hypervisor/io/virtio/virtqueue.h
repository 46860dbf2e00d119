// A split virtqueue (virtio 1.2 §2.7) as seen by the device, over guest
// memory that a concurrent and untrusted driver writes at any time.
//
// Descriptors are copied out of guest memory before they are interpreted and
// every chain is validated (bounds, loops, direction order, indirect rules)
// before a device sees it.  Chains carry guest addresses, never host
// pointers: the copy engine (iommu::DmaContext) translates at copy time, so a
// memory-table change cannot leave a dangling pointer in an in-flight request.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "hypervisor/io/virtio/inflight.h"
#include "hypervisor/io/virtio/virtio.h"
#include "iommu/dma.h"

namespace axl::virtio {

struct Chain {
  uint16_t head = 0;
  std::vector<iommu::Segment> segs;  // readable ones first, then writable
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;
};

enum class ChainError : uint8_t {
  kNone = 0,
  kHeadOutOfRange,   // avail ring names a descriptor >= queue size
  kIndexOutOfRange,  // a `next` >= table size
  kTooLong,          // more descriptors than the queue size: a loop
  kBadIndirect,      // size not a multiple of 16, empty, too big, or with NEXT
  kNestedIndirect,   // §2.7.5.3.1: MUST NOT set INDIRECT inside an indirect table
  kIndirectNotNegotiated,
  kReadableAfterWritable,  // §2.7.4.2: device-writable descriptors come last
  kMemory,                 // descriptor or table outside guest RAM
  kAvailIndex,             // avail idx more than the queue size ahead: ring broken
};
const char* to_string(ChainError e);

class Virtqueue {
 public:
  // A ring part in host memory: one range, or, through a guest IOMMU, one
  // host address per 4 KiB page of the part (Linux backs a coherent
  // allocation with separate pages, contiguous in IOVA only).  Every access
  // (a 16-byte descriptor, a 2- or 4-byte field, all naturally aligned from
  // the part's aligned start) lies within one page.
  struct RingPart {
    RingPart() = default;
    RingPart(void* p) : base(static_cast<uint8_t*>(p)) {}  // NOLINT(google-explicit-constructor)
    uint8_t* base = nullptr;                               // contiguous (pages empty)
    std::vector<uint8_t*> pages;                           // else: each page's host address
    uint32_t first = 0;                                    // the part's offset in pages[0]
    uint8_t* at(uint64_t off) const {
      if (pages.empty()) return base + off;
      const uint64_t o = first + off;
      return pages[o >> 12] + (o & 4095);
    }
  };
  // Host views of the three ring parts, as translated by the vhost-user
  // handler from SET_VRING_ADDR; each was checked to lie in guest memory.
  struct Layout {
    uint32_t num = 0;
    RingPart desc, avail, used;
  };

  Virtqueue(iommu::DmaContext* dma, Layout layout, uint16_t last_avail_idx, bool event_idx,
            bool indirect);

  uint32_t size() const { return num_; }
  iommu::DmaContext& dma() { return *dma_; }
  uint16_t last_avail_idx() const { return last_avail_; }
  // Ring memory moved (SET_MEM_TABLE): new host views, same indices.
  void relocate(Layout layout);

  // Guest IOMMU (VIRTIO_F_ACCESS_PLATFORM): the ring's own memory is no
  // longer translatable (an IOTLB invalidation).  Until resume() nothing in
  // the ring is touched: pop() finds nothing, push() is held back in order.
  void suspend() { suspended_ = true; }
  // The ring is translatable again (at `layout`): held-back completions are
  // written, in order.  Call notify() afterwards.
  void resume(Layout layout);
  bool suspended() const { return suspended_; }
  // A chain's translation was asked of the front-end: the chain stays in the
  // ring and nothing more is popped until clear_wait() (the answer came).
  bool waiting() const { return waiting_; }
  void clear_wait() { waiting_ = false; }

  struct Popped {
    ChainError error = ChainError::kNone;
    std::optional<Chain> chain;  // set when error == kNone and something was available
    // For a malformed chain whose head is valid: return it with len 0 so the
    // driver gets its buffers back.
    std::optional<uint16_t> bad_head;
  };
  // Takes the next available chain.  A broken avail index (more than `num`
  // ahead) marks the queue broken: nothing more is popped from it.
  Popped pop();
  bool broken() const { return broken_; }

  // §2.7.8: hands a chain back with `len` bytes written into it.
  void push(uint16_t head, uint32_t len);
  // Whether the driver wants an interrupt for what was pushed since the last
  // call (§2.7.7.2 with and without VIRTIO_F_EVENT_IDX).  Resets the batch.
  bool should_notify();
  // Call after draining: asks for the next kick (avail_event with EVENT_IDX,
  // §2.7.10) and returns true if more chains arrived meanwhile.
  bool enable_notification();

  uint16_t used_idx() const { return used_idx_; }

  // vhost-user.rst, "Inflight I/O tracking": record in `q` (shared with the
  // front-end, kept across a restart of this process) which heads are taken
  // and not yet completed.  Call once, right after construction and before
  // any pop(); `q` must have room for size() descriptors (a queue of an
  // InflightMemory whose queue_size() >= size()); nullptr = no tracking.
  //
  // A fresh region (version 0) is initialised and nothing is recovered.
  // Otherwise the ring resumes where the previous process left it: the
  // avail index restarts at used idx + heads in flight (overriding the base
  // given to the constructor), and the heads in flight are handed out again
  // by pop(), oldest first, before anything new.  Returns how many.
  //
  // A region that does not fit the ring (see inflight_error()) is
  // re-initialised and the ring resumes from the used idx with nothing
  // handed out again, as without tracking.
  size_t track_inflight(InflightQueue* q);
  bool tracking_inflight() const { return inflight_ != nullptr; }
  // Why track_inflight() rejected the region's contents; nullptr if it did not.
  const char* inflight_error() const { return inflight_error_; }
  // Recovered heads not yet handed out again by pop().
  size_t resubmits_pending() const { return resubmit_.size() - resubmit_pos_; }

  // The front-end's call eventfd (not owned: the vhost-user handler owns
  // it); -1 = none.  notify() signals it when should_notify() says so.
  void set_call_fd(int fd) { call_fd_ = fd; }
  void notify();

 private:
  uint16_t load_avail_idx() const;
  // *pending: a translation is still being asked of the front-end.
  ChainError walk(uint16_t head, Chain* out, bool* pending);
  // Walks `head` for pop(); *left: the walk waits on a translation, the
  // head was not taken.
  Popped take(uint16_t head, bool* left);
  void mark_inflight(uint16_t head);
  // Writes a fresh region (version 1, nothing in flight, at used idx).
  void init_inflight();
  // Recovery found `why` wrong in the region: start it afresh.
  void reject_inflight(const char* why);

  iommu::DmaContext* dma_;
  uint32_t num_;
  uint16_t* avail_at(uint64_t i) const { return reinterpret_cast<uint16_t*>(avail_.at(2 * i)); }
  uint16_t* used_u16(uint64_t off) const { return reinterpret_cast<uint16_t*>(used_.at(off)); }

  RingPart desc_;
  RingPart avail_;  // flags, idx, ring[num], used_event (u16 each)
  RingPart used_;   // flags, idx, ring[num] of {id, len}, avail_event
  uint16_t last_avail_;
  uint16_t used_idx_;
  uint16_t signalled_used_;
  bool signalled_valid_ = false;
  bool event_idx_;
  bool indirect_;
  bool broken_ = false;
  bool suspended_ = false;
  bool waiting_ = false;
  std::vector<UsedElem> held_;  // completions while suspended (at most num)
  int call_fd_ = -1;
  // Front-end-writable: after recovery nothing read from it is relied on.
  InflightQueue* inflight_ = nullptr;
  uint64_t inflight_counter_ = 0;
  const char* inflight_error_ = nullptr;
  std::vector<uint16_t> resubmit_;  // recovered heads, oldest first, each < num_
  size_t resubmit_pos_ = 0;
};

}  // namespace axl::virtio
