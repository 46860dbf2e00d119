#include "hypervisor/io/virtio/virtqueue.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

namespace axl::virtio {

const char* to_string(ChainError e) {
  switch (e) {
    case ChainError::kNone:
      return "none";
    case ChainError::kHeadOutOfRange:
      return "head index beyond queue size";
    case ChainError::kIndexOutOfRange:
      return "next index beyond table size";
    case ChainError::kTooLong:
      return "chain longer than queue size (loop?)";
    case ChainError::kBadIndirect:
      return "malformed indirect descriptor";
    case ChainError::kNestedIndirect:
      return "nested indirect table";
    case ChainError::kIndirectNotNegotiated:
      return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    case ChainError::kReadableAfterWritable:
      return "device-readable descriptor after a writable one";
    case ChainError::kMemory:
      return "descriptor outside guest memory";
    case ChainError::kAvailIndex:
      return "avail index more than queue size ahead";
  }
  return "?";
}

namespace {
uint16_t load_acquire(uint16_t* p) {
  return std::atomic_ref<uint16_t>(*p).load(std::memory_order_acquire);
}
uint16_t load_relaxed(uint16_t* p) {
  return std::atomic_ref<uint16_t>(*p).load(std::memory_order_relaxed);
}
void store_release(uint16_t* p, uint16_t v) {
  std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_release);
}
}  // namespace

Virtqueue::Virtqueue(iommu::DmaContext* dma, Layout l, uint16_t last_avail_idx, bool event_idx,
                     bool indirect)
    : dma_(dma),
      num_(l.num),
      desc_(static_cast<Desc*>(l.desc)),
      avail_(static_cast<uint16_t*>(l.avail)),
      used_(static_cast<uint8_t*>(l.used)),
      last_avail_(last_avail_idx),
      event_idx_(event_idx),
      indirect_(indirect) {
  // The used index lives in guest memory; resume from it (a fresh ring has 0).
  used_idx_ = load_acquire(reinterpret_cast<uint16_t*>(used_ + 2));
  signalled_used_ = used_idx_;
}

void Virtqueue::relocate(Layout l) {
  desc_ = static_cast<Desc*>(l.desc);
  avail_ = static_cast<uint16_t*>(l.avail);
  used_ = static_cast<uint8_t*>(l.used);
}

void Virtqueue::resume(Layout l) {
  relocate(l);
  suspended_ = false;
  std::vector<UsedElem> held;
  held.swap(held_);
  for (const UsedElem& e : held) push(uint16_t(e.id), e.len);
}

uint16_t Virtqueue::load_avail_idx() const { return load_acquire(&avail_[1]); }

Virtqueue::Popped Virtqueue::pop() {
  Popped p;
  if (broken_ || suspended_ || waiting_) return p;
  // Acquire pairs with the driver's write barrier before its idx update
  // (§2.7.13.3): ring entries below idx are visible after this load.
  uint16_t avail_idx = load_avail_idx();
  uint16_t pending = uint16_t(avail_idx - last_avail_);
  if (pending == 0) return p;
  if (pending > num_) {
    broken_ = true;
    p.error = ChainError::kAvailIndex;
    return p;
  }
  uint16_t head = load_relaxed(&avail_[2 + last_avail_ % num_]);
  ++last_avail_;
  if (event_idx_) {
    // §2.7.10: avail_event tells the driver which index to kick at.
    store_release(reinterpret_cast<uint16_t*>(used_ + 4 + 8ull * num_), last_avail_);
  }
  if (head >= num_) {
    p.error = ChainError::kHeadOutOfRange;
    return p;
  }
  Chain c;
  bool wait = false;
  ChainError e = walk(head, &c, &wait);
  if (wait) {
    // Leave the chain in the ring; it is walked again once the front-end
    // has answered the IOTLB misses (the handler clears the wait and kicks).
    --last_avail_;
    waiting_ = true;
    return p;
  }
  if (e != ChainError::kNone) {
    p.error = e;
    p.bad_head = head;
    return p;
  }
  p.chain = std::move(c);
  return p;
}

ChainError Virtqueue::walk(uint16_t head, Chain* c, bool* pending) {
  c->head = head;
  bool in_indirect = false;
  uint64_t table_gpa = 0;
  uint32_t table_size = num_;
  uint32_t visited = 0;
  bool seen_writable = false;
  uint16_t idx = head;
  for (;;) {
    Desc d;
    if (in_indirect) {
      iommu::Fault f =
          dma_->read(table_gpa + 16ull * idx, {reinterpret_cast<uint8_t*>(&d), sizeof d});
      if (f == iommu::Fault::kPending) *pending = true;
      if (f != iommu::Fault::kNone) return ChainError::kMemory;
    } else {
      // One copy, then only the copy is interpreted: the guest may rewrite
      // the table concurrently.
      memcpy(&d, &desc_[idx], sizeof d);
    }
    // §2.7.5.3.1: a chain is no longer than the queue size; this also ends
    // any loop in `next` links, direct or indirect.
    if (++visited > num_) return ChainError::kTooLong;
    if (d.flags & kDescFIndirect) {
      if (!indirect_) return ChainError::kIndirectNotNegotiated;
      if (in_indirect) return ChainError::kNestedIndirect;
      if ((d.flags & kDescFNext) || d.len == 0 || d.len % sizeof(Desc) != 0 ||
          d.len / sizeof(Desc) > num_)
        return ChainError::kBadIndirect;
      iommu::Segment table{d.addr, d.len, false};
      iommu::Fault f = dma_->check({&table, 1});
      if (f == iommu::Fault::kPending) *pending = true;
      if (f != iommu::Fault::kNone) return ChainError::kMemory;
      in_indirect = true;
      table_gpa = d.addr;
      table_size = d.len / sizeof(Desc);
      idx = 0;
      --visited;  // the indirect descriptor itself carries no data
      continue;
    }
    bool writable = d.flags & kDescFWrite;
    if (writable) {
      seen_writable = true;
      c->writable_bytes += d.len;
    } else {
      if (seen_writable) return ChainError::kReadableAfterWritable;
      c->readable_bytes += d.len;
    }
    c->segs.push_back(iommu::Segment{d.addr, d.len, writable});
    if (!(d.flags & kDescFNext)) break;
    if (d.next >= table_size) return ChainError::kIndexOutOfRange;
    idx = d.next;
  }
  if (!dma_->translating()) {
    if (dma_->check(c->segs) != iommu::Fault::kNone) return ChainError::kMemory;
    return ChainError::kNone;
  }
  // Guest IOMMU: buffers not yet translated are asked for (all at once) and
  // the chain waits.  A buffer the IOMMU forbids is not a malformed chain:
  // the device's copy faults on it and fails the request as hardware would
  // (blk: VIRTIO_BLK_S_IOERR, net: frame dropped).
  iommu::Fault f = dma_->probe(c->segs);
  if (f == iommu::Fault::kPending) {
    *pending = true;
    return ChainError::kMemory;
  }
  if (f == iommu::Fault::kIotlbMiss || f == iommu::Fault::kPermission) return ChainError::kNone;
  if (f != iommu::Fault::kNone) {
    dma_->check(c->segs);  // counts and logs it
    return ChainError::kMemory;
  }
  return ChainError::kNone;
}

void Virtqueue::push(uint16_t head, uint32_t len) {
  UsedElem e{head, len};
  if (suspended_) {
    held_.push_back(e);
    return;
  }
  memcpy(used_ + 4 + 8ull * (used_idx_ % num_), &e, sizeof e);
  ++used_idx_;
  // Release: the element (and the data written into the buffers) is visible
  // before the driver can see the new idx (§2.7.8 "Device Requirements").
  store_release(reinterpret_cast<uint16_t*>(used_ + 2), used_idx_);
}

bool Virtqueue::should_notify() {
  if (suspended_) return false;
  // The used idx store must be ordered before reading the driver's
  // suppression fields, or both sides can miss each other (§2.7.7.2).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t old = signalled_used_;
  uint16_t now = used_idx_;
  bool valid = signalled_valid_;
  signalled_used_ = now;
  signalled_valid_ = true;
  if (!event_idx_) {
    if (now == old && valid) return false;
    return !(load_relaxed(&avail_[0]) & kAvailFNoInterrupt);
  }
  uint16_t event = load_relaxed(&avail_[2 + num_]);
  if (!valid) return true;
  // vring_need_event(): notify if `event` lies in (old, now].
  return uint16_t(now - event - 1) < uint16_t(now - old);
}

void Virtqueue::notify() {
  if (!should_notify() || call_fd_ < 0) return;
  uint64_t one = 1;
  // EAGAIN means the counter is saturated: an interrupt is pending anyway.
  while (::write(call_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

bool Virtqueue::enable_notification() {
  // Suspended or waiting: the handler kicks the device when that ends.
  if (broken_ || suspended_ || waiting_) return false;
  if (event_idx_) store_release(reinterpret_cast<uint16_t*>(used_ + 4 + 8ull * num_), last_avail_);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return load_avail_idx() != last_avail_;
}

}  // namespace axl::virtio
