// A well-behaved guest for the channel-response fuzz targets: RAM is a plain
// buffer registered as guest memory, each queue a split ring the guest fills
// with chains.  It keeps the guest's books (which chains are out, how many
// bytes each may take) and checks every used entry the device writes back:
// a completion for a chain that is not out (a duplicate, or a head never
// made available) or one claiming more bytes than the chain could take is an
// invariant failure.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "hypervisor/io/virtio/virtqueue.h"

namespace axl::fuzz {

class FakeGuest {
 public:
  static constexpr uint64_t kBase = 0x100000;
  static constexpr size_t kRam = 0x40000;
  static constexpr uint32_t kNum = 32;
  static constexpr uint64_t kData = kBase + 0x10000;  // first data byte

  struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
  };

  // One guest at a time: RAM is a static buffer, zeroed for each (a fresh
  // allocation of this size costs a page fault per page on every input).
  FakeGuest(unsigned queues, bool event_idx) {
    memset(ram_, 0, kRam);
    auto m = iommu::GuestMemory::borrow({{kBase, kBase, {ram_, kRam}}});
    if (!m) abort();
    mem_ = std::move(m).value();
    dma_.set_memory(mem_.get());
    for (unsigned i = 0; i < queues; ++i) {
      Queue& q = q_[i];
      q.desc = kBase + 0x4000 * i;
      q.avail = q.desc + 0x1000;
      q.used = q.desc + 0x2000;
      for (uint16_t d = 0; d < kNum; ++d) q.free.push_back(d);
      q.vq = std::make_unique<virtio::Virtqueue>(
          &dma_, virtio::Virtqueue::Layout{kNum, at(q.desc), at(q.avail), at(q.used)}, 0, event_idx,
          false);
    }
  }

  uint8_t* at(uint64_t gpa) { return ram_ + (gpa - kBase); }
  virtio::Virtqueue& vq(unsigned i) { return *q_[i].vq; }
  size_t outstanding(unsigned i) const { return q_[i].out.size(); }

  // Makes a chain available; nullopt when the guest has no free descriptors.
  std::optional<uint16_t> add_chain(unsigned qi, const std::vector<Buf>& bufs) {
    Queue& q = q_[qi];
    if (bufs.empty() || q.free.size() < bufs.size()) return std::nullopt;
    std::vector<uint16_t> ds(q.free.end() - bufs.size(), q.free.end());
    q.free.resize(q.free.size() - bufs.size());
    uint64_t writable = 0;
    for (size_t i = 0; i < bufs.size(); ++i) {
      bool last = i + 1 == bufs.size();
      virtio::Desc d{
          bufs[i].gpa, bufs[i].len,
          uint16_t((bufs[i].writable ? virtio::kDescFWrite : 0) | (last ? 0 : virtio::kDescFNext)),
          last ? uint16_t(0) : ds[i + 1]};
      memcpy(at(q.desc) + 16 * ds[i], &d, sizeof d);
      if (bufs[i].writable) writable += bufs[i].len;
    }
    uint16_t head = ds[0];
    q.out[head] = Out{ds, writable};
    auto* avail = reinterpret_cast<uint16_t*>(at(q.avail));
    avail[2 + q.avail_idx % kNum] = head;
    ++q.avail_idx;
    __atomic_store_n(&avail[1], q.avail_idx, __ATOMIC_RELEASE);
    return head;
  }

  // Reads what the device completed since the last call; returns the heads.
  std::vector<virtio::UsedElem> reap(unsigned qi) {
    Queue& q = q_[qi];
    std::vector<virtio::UsedElem> got;
    uint16_t idx = __atomic_load_n(reinterpret_cast<uint16_t*>(at(q.used) + 2), __ATOMIC_ACQUIRE);
    // Never more completions than chains out.
    AXL_FUZZ_CHECK(uint16_t(idx - q.seen_used) <= q.out.size());
    for (; q.seen_used != idx; ++q.seen_used) {
      virtio::UsedElem e;
      memcpy(&e, at(q.used) + 4 + 8 * (q.seen_used % kNum), sizeof e);
      auto it = q.out.find(uint16_t(e.id));
      AXL_FUZZ_CHECK(e.id < kNum && it != q.out.end());  // completed once, and only if out
      AXL_FUZZ_CHECK(e.len <= it->second.writable);
      for (uint16_t d : it->second.descs) q.free.push_back(d);
      q.out.erase(it);
      got.push_back(e);
    }
    return got;
  }

 private:
  struct Out {
    std::vector<uint16_t> descs;
    uint64_t writable = 0;
  };
  struct Queue {
    uint64_t desc = 0, avail = 0, used = 0;
    uint16_t avail_idx = 0, seen_used = 0;
    std::vector<uint16_t> free;
    std::map<uint16_t, Out> out;
    std::unique_ptr<virtio::Virtqueue> vq;
  };
  alignas(4096) static inline uint8_t ram_[kRam];
  std::unique_ptr<iommu::GuestMemory> mem_;
  iommu::DmaContext dma_;
  Queue q_[2];
};

}  // namespace axl::fuzz
