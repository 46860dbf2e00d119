#include "iommu/iotlb.h"

#include <algorithm>

namespace axl::iommu {

namespace {
// Last byte of [a, a+len), len > 0; false when it wraps.
bool last_byte(uint64_t a, uint64_t len, uint64_t* last) {
  *last = a + (len - 1);
  return *last >= a;
}
bool allows(Perm p, Access a) {
  uint8_t need = a == Access::kRead ? uint8_t(Perm::kRead) : uint8_t(Perm::kWrite);
  return (uint8_t(p) & need) != 0;
}
}  // namespace

bool valid_perm(uint8_t p) { return p >= 1 && p <= 3; }

Status Iotlb::update(uint64_t iova, uint64_t size, uint64_t uaddr, Perm perm) {
  if (size == 0) return make_error("IOTLB update of size 0");
  if (!valid_perm(uint8_t(perm))) return make_error("IOTLB update with bad permission");
  uint64_t last;
  if (!last_byte(iova, size, &last)) return make_error("IOTLB update wraps the IOVA space");
  if (!last_byte(uaddr, size, &last)) return make_error("IOTLB update wraps the address space");
  invalidate(iova, size);
  if (entries_.size() >= kMaxEntries) entries_.clear();
  entries_.emplace(iova, Entry{iova, size, uaddr, perm});
  return {};
}

size_t Iotlb::invalidate(uint64_t iova, uint64_t size) {
  uint64_t last;
  if (size == 0 || !last_byte(iova, size, &last)) last = UINT64_MAX;
  size_t dropped = 0;
  // The entry starting before iova may reach into the range.
  auto it = entries_.upper_bound(iova);
  if (it != entries_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.iova + (prev->second.size - 1) >= iova) {
      entries_.erase(prev);
      ++dropped;
    }
  }
  while (it != entries_.end() && it->first <= last) {
    it = entries_.erase(it);
    ++dropped;
  }
  return dropped;
}

IovaTranslator::Span Iotlb::lookup(uint64_t iova, uint64_t len, Access access) const {
  auto it = entries_.upper_bound(iova);
  if (it == entries_.begin()) return {Fault::kIotlbMiss, 0, 0};
  const Entry& e = std::prev(it)->second;
  uint64_t off = iova - e.iova;
  if (off >= e.size) return {Fault::kIotlbMiss, 0, 0};
  if (!allows(e.perm, access)) return {Fault::kPermission, 0, 0};
  return {Fault::kNone, e.uaddr + off, std::min(len, e.size - off)};
}

Status IommuContext::update(uint64_t iova, uint64_t size, uint64_t uaddr, Perm perm) {
  if (auto st = tlb_.update(iova, size, uaddr, perm); !st) return st;
  updates_.fetch_add(1, std::memory_order_relaxed);
  entries_.store(tlb_.size(), std::memory_order_relaxed);
  // A page that failed before and is now mapped is no longer a fault.
  uint64_t last = iova + (size - 1);
  failed_.erase(failed_.lower_bound(iova & ~(kPageSize - 1)), failed_.upper_bound(last));
  return {};
}

void IommuContext::invalidate(uint64_t iova, uint64_t size) {
  tlb_.invalidate(iova, size);
  invalidates_.fetch_add(1, std::memory_order_relaxed);
  entries_.store(tlb_.size(), std::memory_order_relaxed);
}

void IommuContext::access_failed(uint64_t iova, uint64_t size) {
  miss_failures_.fetch_add(1, std::memory_order_relaxed);
  // Bounded: mark at most the pages of one outstanding window.
  uint64_t page = iova & ~(kPageSize - 1);
  uint64_t last;
  if (size == 0 || !last_byte(iova, size, &last)) last = iova;
  for (size_t n = 0; n < kMaxOutstanding && page <= last; ++n) {
    failed_.insert(page);
    if (page + kPageSize < page) break;
    page += kPageSize;
  }
}

void IommuContext::miss_answered(bool ok) {
  if (outstanding_.empty()) return;
  uint64_t page = outstanding_.front();
  outstanding_.pop_front();
  if (!ok) {
    miss_failures_.fetch_add(1, std::memory_order_relaxed);
    failed_.insert(page);
  }
}

void IommuContext::fail_outstanding() {
  while (!outstanding_.empty()) miss_answered(false);
}

void IommuContext::reset() {
  tlb_.clear();
  outstanding_.clear();
  failed_.clear();
  entries_.store(0, std::memory_order_relaxed);
}

IovaTranslator::Span IommuContext::translate(uint64_t iova, uint64_t len, Access access) {
  Span s = tlb_.lookup(iova, len, access);
  if (s.fault != Fault::kIotlbMiss) return s;
  uint64_t page = iova & ~(kPageSize - 1);
  if (failed_.count(page) || !sink_) return s;
  if (std::find(outstanding_.begin(), outstanding_.end(), page) != outstanding_.end())
    return {Fault::kPending, 0, 0};
  // Too many unanswered: wait for answers; the retry asks for this one.
  if (outstanding_.size() >= kMaxOutstanding) return {Fault::kPending, 0, 0};
  if (!sink_(page, access)) return s;
  outstanding_.push_back(page);
  misses_.fetch_add(1, std::memory_order_relaxed);
  return {Fault::kPending, 0, 0};
}

IommuContext::Stats IommuContext::stats() const {
  return Stats{
      updates_.load(std::memory_order_relaxed), invalidates_.load(std::memory_order_relaxed),
      misses_.load(std::memory_order_relaxed), miss_failures_.load(std::memory_order_relaxed),
      entries_.load(std::memory_order_relaxed)};
}

}  // namespace axl::iommu
