// Driver side of one split virtqueue laid out in memory shared with a
// vhost-user backend. Everything the backend can write (used ring, avail_event,
// descriptors themselves) is treated as untrusted: chains are freed from a
// private shadow copy, and used entries are checked against what is in flight.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bench/vhost_user_wire.h"
#include "common/result.h"

namespace axl::bench {

struct QueueBuf {
  uint64_t gpa;
  uint32_t len;
  bool device_writes;
};

struct UsedEntry {
  uint32_t token;
  uint32_t len;
};

class SplitQueue {
 public:
  // desc/avail/used point into the shared mapping; gpa_of translates them.
  SplitQueue(VringDesc* desc, uint16_t* avail, uint16_t* used, uint16_t size, bool event_idx)
      : desc_(desc), avail_(avail), used_(used), size_(size), event_idx_(event_idx), chains_(size) {
    free_.reserve(size);
    for (int i = size - 1; i >= 0; --i) free_.push_back(static_cast<uint16_t>(i));
    avail_[0] = 0;  // flags
    avail_[1] = 0;  // idx
    used_[0] = 0;
    used_[1] = 0;
  }

  static size_t desc_bytes(uint16_t n) { return sizeof(VringDesc) * n; }
  static size_t avail_bytes(uint16_t n) { return 2 * (3 + n); }
  static size_t used_bytes(uint16_t n) { return 2 * 3 + sizeof(VringUsedElem) * n; }

  uint16_t size() const { return size_; }
  size_t free_descs() const { return free_.size(); }
  uint16_t avail_idx() const { return avail_idx_; }
  size_t in_flight() const { return in_flight_; }

  // Queues one descriptor chain (not yet visible to the device: see publish).
  // Device-readable buffers must precede device-writable ones (virtio rule).
  Status add(std::span<const QueueBuf> bufs, uint32_t token) {
    if (bufs.empty() || bufs.size() > free_.size())
      return make_error("virtqueue full: need " + std::to_string(bufs.size()) + " descriptors");
    uint16_t head = free_.back();
    Chain& chain = chains_[head];
    chain.descs.clear();
    chain.writable = 0;
    for (size_t i = 0; i < bufs.size(); ++i) {
      chain.descs.push_back(free_.back());
      free_.pop_back();
    }
    for (size_t i = 0; i < bufs.size(); ++i) {
      VringDesc& d = desc_[chain.descs[i]];
      d.addr = bufs[i].gpa;
      d.len = bufs[i].len;
      bool last = i + 1 == bufs.size();
      d.flags = static_cast<uint16_t>((last ? 0 : kDescFNext) |
                                      (bufs[i].device_writes ? kDescFWrite : 0));
      d.next = last ? 0 : chain.descs[i + 1];
      if (bufs[i].device_writes) chain.writable += bufs[i].len;
    }
    chain.busy = true;
    chain.token = token;
    avail_ring()[avail_idx_ % size_] = head;
    ++avail_idx_;
    ++in_flight_;
    return {};
  }

  // Queues bufs as an indirect table written at `table` (guest address
  // table_gpa), taking one ring descriptor: what Linux guests do for every
  // multi-buffer request once VIRTIO_RING_F_INDIRECT_DESC is negotiated.
  Status add_indirect(VringDesc* table, uint64_t table_gpa, std::span<const QueueBuf> bufs,
                      uint32_t token) {
    if (bufs.empty() || bufs.size() > size_)
      return make_error("indirect table longer than the queue");
    if (free_.empty()) return make_error("virtqueue full: need 1 descriptor");
    uint32_t writable = 0;
    for (size_t i = 0; i < bufs.size(); ++i) {
      bool last = i + 1 == bufs.size();
      table[i].addr = bufs[i].gpa;
      table[i].len = bufs[i].len;
      table[i].flags = static_cast<uint16_t>((last ? 0 : kDescFNext) |
                                             (bufs[i].device_writes ? kDescFWrite : 0));
      table[i].next = last ? 0 : static_cast<uint16_t>(i + 1);
      if (bufs[i].device_writes) writable += bufs[i].len;
    }
    uint16_t head = free_.back();
    free_.pop_back();
    VringDesc& d = desc_[head];
    d.addr = table_gpa;
    d.len = static_cast<uint32_t>(bufs.size() * sizeof(VringDesc));
    d.flags = kDescFIndirect;
    d.next = 0;
    Chain& chain = chains_[head];
    chain.descs.assign(1, head);
    chain.writable = writable;
    chain.busy = true;
    chain.token = token;
    avail_ring()[avail_idx_ % size_] = head;
    ++avail_idx_;
    ++in_flight_;
    return {};
  }

  // Makes queued chains visible; returns whether the device wants a kick.
  bool publish() {
    if (avail_idx_ == published_idx_) return false;
    uint16_t old_idx = published_idx_;
    std::atomic_ref<uint16_t>(avail_[1]).store(avail_idx_, std::memory_order_release);
    published_idx_ = avail_idx_;
    // The device may be re-arming notifications right now: order our index
    // store before reading its suppression state (virtio's full barrier).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (event_idx_) {
      uint16_t event =
          std::atomic_ref<uint16_t>(used_[2 + 4 * size_]).load(std::memory_order_relaxed);
      return static_cast<uint16_t>(avail_idx_ - event - 1) <
             static_cast<uint16_t>(avail_idx_ - old_idx);
    }
    uint16_t flags = std::atomic_ref<uint16_t>(used_[0]).load(std::memory_order_relaxed);
    return (flags & kUsedFNoNotify) == 0;
  }

  bool has_used() const {
    return std::atomic_ref<uint16_t>(used_[1]).load(std::memory_order_acquire) != last_used_;
  }

  // Asks for a call on the next completion. Callers re-check has_used()
  // afterwards, since a completion may have slipped in before the request.
  void enable_notify() {
    if (event_idx_)
      std::atomic_ref<uint16_t>(avail_ring()[size_]).store(last_used_, std::memory_order_relaxed);
    else
      std::atomic_ref<uint16_t>(avail_[0]).store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

  // Asks the device not to call (polling or while harvesting).
  void disable_notify() {
    if (event_idx_)
      std::atomic_ref<uint16_t>(avail_ring()[size_])
          .store(static_cast<uint16_t>(last_used_ + 0x7fff), std::memory_order_relaxed);
    else
      std::atomic_ref<uint16_t>(avail_[0]).store(kAvailFNoInterrupt, std::memory_order_relaxed);
  }

  // Takes every new used entry, checking it names a chain in flight and that
  // the reported length fits what the device was allowed to write.
  Status harvest(std::vector<UsedEntry>& out) {
    uint16_t used_idx = std::atomic_ref<uint16_t>(used_[1]).load(std::memory_order_acquire);
    uint16_t fresh = static_cast<uint16_t>(used_idx - last_used_);
    if (fresh > in_flight_)
      return make_error("used index advanced by " + std::to_string(fresh) + " with only " +
                        std::to_string(in_flight_) + " in flight");
    const VringUsedElem* ring = reinterpret_cast<const VringUsedElem*>(used_ + 2);
    for (uint16_t i = 0; i < fresh; ++i) {
      VringUsedElem e = ring[last_used_ % size_];
      ++last_used_;
      if (e.id >= size_ || !chains_[e.id].busy)
        return make_error("used id " + std::to_string(e.id) + " is not a chain in flight");
      Chain& chain = chains_[e.id];
      if (e.len > chain.writable)
        return make_error("used len " + std::to_string(e.len) + " exceeds writable " +
                          std::to_string(chain.writable));
      chain.busy = false;
      for (auto it = chain.descs.rbegin(); it != chain.descs.rend(); ++it) free_.push_back(*it);
      --in_flight_;
      out.push_back({chain.token, e.len});
    }
    return {};
  }

 private:
  struct Chain {
    bool busy = false;
    uint32_t token = 0;
    uint32_t writable = 0;
    std::vector<uint16_t> descs;
  };

  uint16_t* avail_ring() const { return avail_ + 2; }

  VringDesc* desc_;
  uint16_t* avail_;
  uint16_t* used_;
  uint16_t size_;
  bool event_idx_;
  std::vector<Chain> chains_;
  std::vector<uint16_t> free_;
  uint16_t avail_idx_ = 0;
  uint16_t published_idx_ = 0;
  uint16_t last_used_ = 0;
  size_t in_flight_ = 0;
};

}  // namespace axl::bench
