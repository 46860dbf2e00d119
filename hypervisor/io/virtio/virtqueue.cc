#include "hypervisor/io/virtio/virtqueue.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "common/log.h"

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
      desc_(std::move(l.desc)),
      avail_(std::move(l.avail)),
      used_(std::move(l.used)),
      last_avail_(last_avail_idx),
      event_idx_(event_idx),
      indirect_(indirect) {
  // The used index lives in guest memory; resume from it (a fresh ring has 0).
  used_idx_ = load_acquire(used_u16(2));
  signalled_used_ = used_idx_;
}

void Virtqueue::relocate(Layout l) {
  desc_ = std::move(l.desc);
  avail_ = std::move(l.avail);
  used_ = std::move(l.used);
}

void Virtqueue::resume(Layout l) {
  relocate(std::move(l));
  suspended_ = false;
  std::vector<UsedElem> held;
  held.swap(held_);
  for (const UsedElem& e : held) push(uint16_t(e.id), e.len);
}

uint16_t Virtqueue::load_avail_idx() const { return load_acquire(avail_at(1)); }

Virtqueue::Popped Virtqueue::pop() {
  Popped p;
  if (broken_ || suspended_ || waiting_) return p;
  // vhost-user.rst, Inflight I/O tracking: "resubmit inflight DescStateSplit
  // entries in order of their counter value" before anything new.  They
  // were taken from the avail ring by the previous process, so last_avail_
  // is already past them.
  if (resubmit_pos_ < resubmit_.size()) {
    uint16_t head = resubmit_[resubmit_pos_];
    bool left = false;
    p = take(head, &left);
    if (left) return p;  // stays first in the list until the translation is answered
    if (++resubmit_pos_ == resubmit_.size()) {
      resubmit_.clear();
      resubmit_pos_ = 0;
    }
    // Still marked from before; the counter is kept, so a second restart
    // resubmits in the original order.  The flag is stored again because
    // only the checked copy said it was set.
    std::atomic_ref<uint8_t>(inflight_->desc()[head].inflight).store(1, std::memory_order_release);
    return p;
  }
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
  uint16_t head = load_relaxed(avail_at(2 + last_avail_ % num_));
  ++last_avail_;
  if (event_idx_) {
    // §2.7.10: avail_event tells the driver which index to kick at.
    store_release(used_u16(4 + 8ull * num_), last_avail_);
  }
  if (head >= num_) {
    p.error = ChainError::kHeadOutOfRange;
    // Recovery counts on every slot taken from the avail ring being either
    // in flight or used (it resumes at used idx + heads in flight).  This
    // slot can be neither, so after a restart a chain would be handed out
    // twice: with tracking, the queue stops instead.
    if (inflight_) broken_ = true;
    return p;
  }
  bool left = false;
  p = take(head, &left);
  if (left) {
    // Leave the chain in the ring; it is walked again once the front-end
    // has answered the IOTLB misses (the handler clears the wait and kicks).
    --last_avail_;
    return p;
  }
  // A malformed chain is marked too: the device hands it back with push().
  if (inflight_) mark_inflight(head);
  return p;
}

Virtqueue::Popped Virtqueue::take(uint16_t head, bool* left) {
  Popped p;
  Chain c;
  bool wait = false;
  ChainError e = walk(head, &c, &wait);
  if (wait) {
    waiting_ = true;
    *left = true;
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

void Virtqueue::mark_inflight(uint16_t head) {
  // vhost-user.rst, Inflight I/O tracking, "receiving available buffers":
  // counter first, then the flag; release keeps both ahead of anything the
  // device does with the chain (a crash after that must find it marked).
  InflightDesc& d = inflight_->desc()[head];
  d.counter = inflight_counter_++;
  std::atomic_ref<uint8_t>(d.inflight).store(1, std::memory_order_release);
}

void Virtqueue::init_inflight() {
  InflightQueue* q = inflight_;
  memset(static_cast<void*>(q->desc()), 0, sizeof(InflightDesc) * num_);
  q->desc_num = uint16_t(num_);
  q->last_batch_head = 0;
  q->used_idx = used_idx_;
  // Version last: a region with a version is complete.
  store_release(&q->version, kInflightVersion);
}

void Virtqueue::reject_inflight(const char* why) {
  AXL_WARN("virtqueue: inflight region rejected (%s): resuming at used idx %u, nothing resubmitted",
           why, unsigned(used_idx_));
  inflight_error_ = why;
  resubmit_.clear();
  resubmit_pos_ = 0;
  inflight_counter_ = 0;
  last_avail_ = used_idx_;
  init_inflight();
}

size_t Virtqueue::track_inflight(InflightQueue* q) {
  inflight_ = nullptr;
  inflight_error_ = nullptr;
  inflight_counter_ = 0;
  resubmit_.clear();
  resubmit_pos_ = 0;
  if (!q || num_ == 0 || num_ > kMaxQueueSize) return 0;
  inflight_ = q;
  // The front-end can write the region at any time: every field is read
  // once and only the copies are checked and used, and every index taken
  // from it is checked against the ring size before it is used.
  uint16_t version = load_acquire(&q->version);
  if (version == 0) {
    init_inflight();
    return 0;
  }
  // A region that says something impossible (below) was not written by a
  // back-end following the protocol for this ring: the front-end corrupted
  // it (or it belongs to another ring).  Handing out heads from it could
  // complete a chain the driver never made available, or one twice, so it
  // is not used: it is started afresh, nothing is resubmitted, and the ring
  // resumes at the used idx as a back-end without tracking would (what is
  // past the used idx in the avail ring is popped again; completions out of
  // order then hand the driver a chain twice or never, which is what the
  // front-end's own corruption gets it, not a hypervisor fault).  The
  // reason is logged and kept in inflight_error().
  if (version != kInflightVersion) {
    reject_inflight("unknown version");
    return 0;
  }
  if (load_relaxed(&q->desc_num) != num_) {
    reject_inflight("desc_num is not the ring size");
    return 0;
  }
  uint16_t region_used = load_relaxed(&q->used_idx);
  uint16_t batch_head = load_relaxed(&q->last_batch_head);
  std::vector<InflightDesc> d(num_);
  memcpy(static_cast<void*>(d.data()), static_cast<const void*>(q->desc()),
         sizeof(InflightDesc) * num_);

  // "If the value of used_idx does not match the idx value of used ring":
  // the last batch (starting at last_batch_head, linked by `next`) was
  // published but its flags may not all have been cleared.  push() writes
  // batches of one, but the spec's general form costs nothing.
  uint16_t batch = uint16_t(used_idx_ - region_used);
  if (batch > num_) {
    reject_inflight("used idx more than a ring ahead of the region's");
    return 0;
  }
  std::vector<uint16_t> batch_heads;
  for (uint16_t i = 0, h = batch_head; i < batch; ++i) {
    if (h >= num_) {
      reject_inflight("last batch names a head beyond the ring");
      return 0;
    }
    batch_heads.push_back(h);
    d[h].inflight = 0;
    h = d[h].next;
  }

  std::vector<uint16_t> heads;
  for (uint32_t i = 0; i < num_; ++i) {
    if (d[i].inflight > 1) {
      reject_inflight("inflight flag neither 0 nor 1");
      return 0;
    }
    if (d[i].inflight) heads.push_back(uint16_t(i));
  }
  // Every head in flight was taken from the avail ring after the used idx:
  // more than the driver has made available cannot be.
  if (heads.size() > uint16_t(load_avail_idx() - used_idx_)) {
    reject_inflight("more heads in flight than the driver made available");
    return 0;
  }

  for (uint16_t h : batch_heads)
    std::atomic_ref<uint8_t>(q->desc()[h].inflight).store(0, std::memory_order_relaxed);
  store_release(&q->used_idx, used_idx_);
  // Every slot taken from the avail ring is used or in flight.
  last_avail_ = uint16_t(used_idx_ + heads.size());
  std::stable_sort(heads.begin(), heads.end(),
                   [&](uint16_t a, uint16_t b) { return d[a].counter < d[b].counter; });
  if (!heads.empty()) inflight_counter_ = d[heads.back()].counter + 1;
  resubmit_ = std::move(heads);
  return resubmit_.size();
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
      memcpy(&d, desc_.at(16ull * idx), sizeof d);
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
  // vhost-user.rst, Inflight I/O tracking, "supplying used buffers", with
  // batches of one: last_batch_head before the used idx moves, the flag and
  // the region's used_idx after.  A crash in between is what recovery's
  // used_idx comparison repairs.
  bool track = inflight_ && head < num_;
  if (track) {
    inflight_->desc()[head].next = inflight_->last_batch_head;
    inflight_->last_batch_head = head;
  }
  // Two 4-byte fields: each within a page (the element itself may not be).
  const uint64_t elem = 4 + 8ull * (used_idx_ % num_);
  memcpy(used_.at(elem), &e.id, 4);
  memcpy(used_.at(elem + 4), &e.len, 4);
  ++used_idx_;
  // Release: the element (and the data written into the buffers) is visible
  // before the driver can see the new idx (§2.7.8 "Device Requirements").
  // It also keeps last_batch_head ahead of the idx.
  store_release(used_u16(2), used_idx_);
  if (track) {
    // Each release keeps the store before it first: idx, then the flag,
    // then the region's used_idx.
    std::atomic_ref<uint8_t>(inflight_->desc()[head].inflight).store(0, std::memory_order_release);
    store_release(&inflight_->used_idx, used_idx_);
  }
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
    return !(load_relaxed(avail_at(0)) & kAvailFNoInterrupt);
  }
  uint16_t event = load_relaxed(avail_at(2 + num_));
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
  if (event_idx_) store_release(used_u16(4 + 8ull * num_), last_avail_);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Recovered heads are waiting too (they are not in the avail ring).
  return resubmits_pending() != 0 || load_avail_idx() != last_avail_;
}

}  // namespace axl::virtio
