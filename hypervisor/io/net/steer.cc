#include "hypervisor/io/net/steer.h"

namespace axl::hv::io::net {
namespace {

uint16_t be16(std::span<const uint8_t> b, size_t off) { return uint16_t(b[off] << 8 | b[off + 1]); }

// FNV-1a over the flow's bytes, then a final mix so the low bits (the queue
// choice) depend on every input byte.
struct Hasher {
  uint32_t h = 2166136261u;
  void add(std::span<const uint8_t> b) {
    for (uint8_t c : b) h = (h ^ c) * 16777619u;
  }
  uint32_t done() const {
    uint32_t x = h;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    return x;
  }
};

}  // namespace

uint32_t flow_hash(std::span<const uint8_t> f) {
  size_t l3 = 14;
  if (f.size() < l3) return 0;
  uint16_t type = be16(f, 12);
  if (type == 0x8100) {  // 802.1Q: the real type follows the tag
    if (f.size() < 18) return 0;
    type = be16(f, 16);
    l3 = 18;
  }
  Hasher h;
  uint8_t proto = 0;
  size_t l4 = 0;
  bool ports = false;
  if (type == 0x0800) {  // IPv4
    if (f.size() < l3 + 20) return 0;
    const size_t ihl = size_t(f[l3] & 0x0f) * 4;
    if ((f[l3] >> 4) != 4 || ihl < 20) return 0;
    proto = f[l3 + 9];
    h.add(f.subspan(l3 + 12, 8));  // source and destination
    // Fragments (more-fragments set, or an offset) carry no ports past the first.
    const bool fragment = (be16(f, l3 + 6) & 0x3fff) != 0;
    l4 = l3 + ihl;
    ports = !fragment;
  } else if (type == 0x86dd) {  // IPv6 (extension headers: hashed without ports)
    if (f.size() < l3 + 40) return 0;
    proto = f[l3 + 6];
    h.add(f.subspan(l3 + 8, 32));
    l4 = l3 + 40;
    ports = true;
  } else {
    return 0;
  }
  h.add({&proto, 1});
  if (ports && (proto == 6 || proto == 17) && f.size() >= l4 + 4) h.add(f.subspan(l4, 4));
  return h.done();
}

}  // namespace axl::hv::io::net
