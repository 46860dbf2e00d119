#include "hypervisor/io/net/offload.h"

#include <cstring>

#include "hypervisor/io/virtio/virtio.h"

namespace axl::hv::io::net {

GuestOffloads GuestOffloads::from_features(uint64_t f) {
  auto has = [f](unsigned b) { return (f >> b) & 1; };
  GuestOffloads g;
  g.csum = has(kFGuestCsum);
  // §5.1.3.1: GUEST_TSO4/6 require GUEST_CSUM.
  g.tso4 = g.csum && has(kFGuestTso4);
  g.tso6 = g.csum && has(kFGuestTso6);
  g.ecn = has(kFGuestEcn) && (g.tso4 || g.tso6);
  return g;
}

uint16_t inet_checksum(std::span<const uint8_t> d, uint32_t sum) {
  uint64_t s = sum;
  size_t i = 0;
  for (; i + 1 < d.size(); i += 2) s += uint32_t(d[i]) << 8 | d[i + 1];
  if (i < d.size()) s += uint32_t(d[i]) << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s);
}

RxVerdict sanitize_rx(NetHdr& h, std::span<uint8_t> payload, const GuestOffloads& g) {
  h.num_buffers = 0;
  h.flags &= kHdrFNeedsCsum | kHdrFDataValid;
  const uint8_t type = h.gso_type & uint8_t(~kGsoEcn);
  const bool ecn = h.gso_type & kGsoEcn;
  if (type != kGsoNone) {
    // A segmented frame needs a partial checksum and a segment size (§5.1.6.2).
    if (!(h.flags & kHdrFNeedsCsum) || h.gso_size == 0 || (type != kGsoTcpv4 && type != kGsoTcpv6))
      return RxVerdict::kDropBadHeader;
    bool ok = (type == kGsoTcpv4 && g.tso4) || (type == kGsoTcpv6 && g.tso6);
    if (!ok || (ecn && !g.ecn)) return RxVerdict::kDropGsoUnsupported;
  } else {
    if (ecn) return RxVerdict::kDropBadHeader;
    h.gso_size = 0;
    h.hdr_len = 0;
  }
  if (h.flags & kHdrFNeedsCsum) {
    // §5.1.6.4: the checksum covers csum_start..end and lands at
    // csum_start + csum_offset; both must lie inside the frame.
    if (uint32_t(h.csum_start) + h.csum_offset + 2 > payload.size())
      return RxVerdict::kDropBadHeader;
    if (!g.csum) {
      // The field holds the pseudo-header sum; fold the rest over it.
      uint8_t* field = payload.data() + h.csum_start + h.csum_offset;
      uint16_t c = inet_checksum(payload.subspan(h.csum_start));
      field[0] = uint8_t(c >> 8);
      field[1] = uint8_t(c);
    }
  }
  // Without GUEST_CSUM the guest must see neither flag (§5.1.6.4.1).
  if (!g.csum) h.flags = 0;
  return RxVerdict::kDeliver;
}

}  // namespace axl::hv::io::net
