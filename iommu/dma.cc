#include "iommu/dma.h"

#include <string.h>

#include <algorithm>

#include "common/log.h"

namespace axl::iommu {

const char* to_string(Fault f) {
  switch (f) {
    case Fault::kNone:
      return "none";
    case Fault::kUnmapped:
      return "unmapped";
    case Fault::kOutOfRange:
      return "out-of-range";
    case Fault::kWrap:
      return "wrap";
    case Fault::kDirection:
      return "direction";
    case Fault::kIotlbMiss:
      return "iotlb-miss";
    case Fault::kPermission:
      return "permission";
    case Fault::kPending:
      return "pending";
  }
  return "?";
}

namespace {
Fault from_lookup(GuestMemory::Lookup l) {
  switch (l) {
    case GuestMemory::Lookup::kOk:
      return Fault::kNone;
    case GuestMemory::Lookup::kUnmapped:
      return Fault::kUnmapped;
    case GuestMemory::Lookup::kOutOfRange:
      return Fault::kOutOfRange;
    case GuestMemory::Lookup::kWrap:
      return Fault::kWrap;
  }
  return Fault::kUnmapped;
}
bool wraps(uint64_t a, uint64_t len) { return len != 0 && a + (len - 1) < a; }
}  // namespace

uint64_t DmaContext::faults() const {
  uint64_t n = 0;
  for (size_t i = 1; i < kFaultKinds; ++i)
    if (Fault(i) != Fault::kPending) n += counts_[i].load(std::memory_order_relaxed);
  return n;
}

Fault DmaContext::count(Fault f, uint64_t addr, Access access) {
  if (f == Fault::kNone || f == Fault::kPending) return f;
  uint64_t n = counts_[size_t(f)].fetch_add(1, std::memory_order_relaxed) + 1;
  // A guest can fault at will (common/log.h, worth_logging).
  if (log::worth_logging(n))
    AXL_WARN("%s: %s fault at %s 0x%llx (%s, %llu of this kind)", label_.c_str(), to_string(f),
             iotlb_ ? "iova" : "gpa", static_cast<unsigned long long>(addr),
             access == Access::kWrite ? "device write" : "device read",
             static_cast<unsigned long long>(n));
  return f;
}

DmaContext::Piece DmaContext::translate(uint64_t addr, uint64_t len, Access access) {
  if (wraps(addr, len)) return {Fault::kWrap, nullptr, 0};
  if (!mem_) return {Fault::kUnmapped, nullptr, 0};
  if (iotlb_) {
    IovaTranslator::Span s = iotlb_->translate(addr, len, access);
    if (s.fault != Fault::kNone) return {s.fault, nullptr, 0};
    if (s.len == 0 || s.len > len) return {Fault::kIotlbMiss, nullptr, 0};
    auto t = mem_->translate_uva(s.uva, s.len);
    if (t.result != GuestMemory::Lookup::kOk) return {from_lookup(t.result), nullptr, 0};
    return {Fault::kNone, t.host, s.len};
  }
  auto t = mem_->translate_gpa(addr, len);
  if (t.result != GuestMemory::Lookup::kOk) return {from_lookup(t.result), nullptr, 0};
  return {Fault::kNone, t.host, len};
}

Fault DmaContext::scan(std::span<const Segment> segs, bool record) {
  bool pending = false;
  for (const Segment& s : segs) {
    uint64_t addr = s.addr, left = s.len;
    Access a = s.device_writable ? Access::kWrite : Access::kRead;
    if (wraps(addr, left)) return record ? count(Fault::kWrap, addr, a) : Fault::kWrap;
    if (left == 0 && !iotlb_) {
      // An empty segment still names a guest-physical address: it must be RAM.
      Piece p = translate(addr, 0, a);
      if (p.fault != Fault::kNone) return record ? count(p.fault, addr, a) : p.fault;
    }
    while (left > 0) {
      Piece p = translate(addr, left, a);
      if (p.fault == Fault::kPending) {
        // Go on to the next page: every missing translation is asked for now.
        pending = true;
        uint64_t next = (addr | 4095) + 1;
        if (next == 0 || next - addr >= left) break;
        left -= next - addr;
        addr = next;
        continue;
      }
      if (p.fault != Fault::kNone) return record ? count(p.fault, addr, a) : p.fault;
      addr += p.len;
      left -= p.len;
    }
  }
  return pending ? Fault::kPending : Fault::kNone;
}

Fault DmaContext::check(std::span<const Segment> segs) { return scan(segs, true); }
Fault DmaContext::probe(std::span<const Segment> segs) { return scan(segs, false); }

Fault DmaContext::host_range(uint64_t addr, uint64_t len, Access access, uint8_t** host) {
  Segment seg{addr, 0, access == Access::kWrite};
  if (len == 0 || len > UINT32_MAX) return count(Fault::kOutOfRange, addr, access);
  seg.len = uint32_t(len);
  if (Fault f = check({&seg, 1}); f != Fault::kNone) return f;
  // Reachable; now it must also be one host range.
  uint8_t* start = nullptr;
  uint64_t a = addr, left = len;
  while (left > 0) {
    Piece p = translate(a, left, access);
    if (p.fault != Fault::kNone) return count(p.fault, a, access);
    if (!start)
      start = p.host;
    else if (p.host != start + (a - addr))
      return count(Fault::kOutOfRange, a, access);
    a += p.len;
    left -= p.len;
  }
  *host = start;
  return Fault::kNone;
}

Fault DmaContext::host_pages(uint64_t addr, uint64_t len, Access access,
                             std::vector<uint8_t*>* pages, uint32_t* first) {
  constexpr uint64_t kPage = 4096;
  Segment seg{addr, 0, access == Access::kWrite};
  if (len == 0 || len > UINT32_MAX) return count(Fault::kOutOfRange, addr, access);
  seg.len = uint32_t(len);
  if (Fault f = check({&seg, 1}); f != Fault::kNone) return f;  // wrap and reach checked
  pages->clear();
  const uint64_t start = addr & ~(kPage - 1), end = addr + len;
  *first = uint32_t(addr - start);
  for (uint64_t p = start; p < end; p += kPage) {
    const uint64_t a = std::max(p, addr);
    uint8_t* host = nullptr;
    if (Fault f = host_range(a, std::min(p + kPage, end) - a, access, &host); f != Fault::kNone)
      return f;
    pages->push_back(host - (a - p));
  }
  return Fault::kNone;
}

CopyResult DmaContext::copy(std::span<const Segment> segs, uint64_t offset, uint8_t* buf, size_t n,
                            Access access) {
  CopyResult res;
  uint64_t skip = offset;
  for (const Segment& s : segs) {
    if (res.bytes == n) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    bool allowed = access == Access::kWrite ? s.device_writable : !s.device_writable;
    if (!allowed) {
      res.fault = count(Fault::kDirection, s.addr + skip, access);
      return res;
    }
    uint64_t addr = s.addr + skip;
    if (addr < s.addr) {
      res.fault = count(Fault::kWrap, s.addr, access);
      return res;
    }
    uint64_t left = std::min<uint64_t>(s.len - skip, n - res.bytes);
    skip = 0;
    while (left > 0) {
      Piece p = translate(addr, left, access);
      // A copy cannot wait for the front-end: a translation missing now (an
      // invalidated buffer still in flight) fails the request.
      if (p.fault == Fault::kPending) p.fault = Fault::kIotlbMiss;
      if (p.fault != Fault::kNone) {
        res.fault = count(p.fault, addr, access);
        return res;
      }
      // Guest memory changes under us (the guest is concurrent); memcpy of
      // bytes is fine: only the copy in our buffer is ever interpreted.
      if (access == Access::kWrite)
        memcpy(p.host, buf + res.bytes, p.len);
      else
        memcpy(buf + res.bytes, p.host, p.len);
      res.bytes += p.len;
      addr += p.len;
      left -= p.len;
    }
  }
  return res;
}

CopyResult DmaContext::copy_from_guest(std::span<const Segment> segs, uint64_t offset,
                                       std::span<uint8_t> dst) {
  return copy(segs, offset, dst.data(), dst.size(), Access::kRead);
}

CopyResult DmaContext::copy_to_guest(std::span<const Segment> segs, uint64_t offset,
                                     std::span<const uint8_t> src) {
  return copy(segs, offset, const_cast<uint8_t*>(src.data()), src.size(), Access::kWrite);
}

Fault DmaContext::raw(uint64_t addr, uint8_t* buf, size_t n, Access access) {
  if (n > UINT32_MAX) return count(Fault::kOutOfRange, addr, access);
  // Check the whole range first so a fault copies nothing.
  Segment seg{addr, uint32_t(n), access == Access::kWrite};
  if (Fault f = check({&seg, 1}); f != Fault::kNone) return f;
  CopyResult r = copy(std::span<const Segment>(&seg, 1), 0, buf, n, access);
  return r.fault;
}

Fault DmaContext::read(uint64_t addr, std::span<uint8_t> dst) {
  return raw(addr, dst.data(), dst.size(), Access::kRead);
}
Fault DmaContext::write(uint64_t addr, std::span<const uint8_t> src) {
  return raw(addr, const_cast<uint8_t*>(src.data()), src.size(), Access::kWrite);
}

}  // namespace axl::iommu
