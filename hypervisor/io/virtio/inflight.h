// vhost-user inflight I/O tracking, split virtqueues (vhost-user.rst,
// "Inflight I/O tracking"): a shared-memory log of which descriptor heads a
// back-end has taken from each ring and not yet completed.  It outlives the
// back-end process (the front-end keeps the fd and hands it back with
// SET_INFLIGHT_FD), so a restarted hypervisor hands those requests out again
// and never completes one twice.  Virtqueue::track_inflight() does the
// per-ring bookkeeping; this file only owns the memory.
//
// The front-end maps the same memory writable: nothing read from it is
// trusted (Virtqueue::track_inflight() checks what it reads).
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::virtio {

// DescStateSplit: one per descriptor-table entry, indexed by head.
struct InflightDesc {
  uint8_t inflight;  // 1: taken from the avail ring, completion not yet published
  uint8_t padding[5];
  uint16_t next;     // previous head of the same used batch (spec's batch list)
  uint64_t counter;  // order in which heads were taken (resubmission order)
};
static_assert(sizeof(InflightDesc) == 16);
static_assert(offsetof(InflightDesc, next) == 6 && offsetof(InflightDesc, counter) == 8);

// QueueRegionSplit header; desc_num InflightDesc entries follow it.  The
// natural layout is the spec's (no packing needed), which keeps every field
// aligned for atomic stores.
struct InflightQueue {
  uint64_t features;
  uint16_t version;  // 0: never used (fresh), 1: this layout
  uint16_t desc_num;
  uint16_t last_batch_head;
  uint16_t used_idx;  // used ring idx whose batch flags are all cleared

  InflightDesc* desc() { return reinterpret_cast<InflightDesc*>(this + 1); }
};
static_assert(sizeof(InflightQueue) == 16);
static_assert(offsetof(InflightQueue, version) == 8 && offsetof(InflightQueue, used_idx) == 14);

constexpr uint16_t kInflightVersion = 1;
// Queues per device accepted in an inflight region (GET/SET_INFLIGHT_FD).
constexpr uint16_t kInflightMaxQueues = 16;

// Bytes of one queue's region: header plus a DescStateSplit per descriptor,
// rounded up to 64 (the regions of all queues follow each other).
size_t inflight_queue_bytes(uint16_t queue_size);

class InflightMemory {
 public:
  // A new, zeroed region for `queues` queues of up to `queue_size`
  // descriptors (GET_INFLIGHT_FD).  The memfd is sealed against shrinking
  // (a SIGBUS in the hypervisor) and growing.
  static Result<InflightMemory> create(uint16_t queues, uint16_t queue_size);
  // Maps a region handed in (SET_INFLIGHT_FD, or kept across a restart).
  // Every parameter comes from the front-end and is checked: mmap_size must
  // be queues * inflight_queue_bytes(queue_size), the offset page aligned
  // and inside the file, queues 1..kInflightMaxQueues, queue_size a power of
  // two up to 32768.
  static Result<InflightMemory> map(UniqueFd fd, uint64_t mmap_size, uint64_t mmap_offset,
                                    uint16_t queues, uint16_t queue_size);

  InflightMemory(InflightMemory&& o) noexcept;
  InflightMemory& operator=(InflightMemory&& o) noexcept;
  InflightMemory(const InflightMemory&) = delete;
  InflightMemory& operator=(const InflightMemory&) = delete;
  ~InflightMemory();

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  uint64_t offset() const { return offset_; }
  uint16_t queues() const { return queues_; }
  uint16_t queue_size() const { return queue_size_; }
  // Queue i's region (room for queue_size() descriptors); nullptr when out
  // of range.
  InflightQueue* queue(uint16_t i);
  // Zeroes queue i's region: after a clean stop (GET_VRING_BASE) nothing is
  // in flight and the next start must not recover anything.
  void reset_queue(uint16_t i);

 private:
  InflightMemory() = default;
  void unmap();

  UniqueFd fd_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
  uint16_t queues_ = 0;
  uint16_t queue_size_ = 0;
};

}  // namespace axl::virtio
