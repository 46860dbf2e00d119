// virtio_net_hdr_v1 handling for checksum and segmentation offloads
// (virtio 1.2 §5.1.6).  The header in front of a received frame comes from
// a driver domain, so it is untrusted: sanitize_rx() turns it into a header
// that is valid for what *this* guest negotiated, finishing a partial
// checksum in software for a guest without VIRTIO_NET_F_GUEST_CSUM, or says
// the frame must be dropped (a GSO frame the guest cannot take, offsets
// outside the frame).
#pragma once
#include <cstdint>
#include <span>

namespace axl::hv::io::net {

// Feature bits (§5.1.3).
constexpr unsigned kFCsum = 0;
constexpr unsigned kFGuestCsum = 1;
constexpr unsigned kFGuestTso4 = 7;
constexpr unsigned kFGuestTso6 = 8;
constexpr unsigned kFGuestEcn = 9;
constexpr unsigned kFHostTso4 = 11;
constexpr unsigned kFHostTso6 = 12;
constexpr unsigned kFHostEcn = 13;

constexpr uint8_t kHdrFNeedsCsum = 1;
constexpr uint8_t kHdrFDataValid = 2;
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpv4 = 1;
constexpr uint8_t kGsoTcpv6 = 4;
constexpr uint8_t kGsoEcn = 0x80;

struct NetHdr {  // struct virtio_net_hdr_v1, little endian on x86
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == 12);

struct GuestOffloads {
  bool csum = false;  // GUEST_CSUM: accepts NEEDS_CSUM / DATA_VALID
  bool tso4 = false, tso6 = false, ecn = false;
  static GuestOffloads from_features(uint64_t acked);
};

enum class RxVerdict { kDeliver, kDropBadHeader, kDropGsoUnsupported };

// `payload` is the Ethernet frame after the header; it may be modified (a
// software checksum is written into it).  `hdr` is rewritten in place.
RxVerdict sanitize_rx(NetHdr& hdr, std::span<uint8_t> payload, const GuestOffloads& g);

// The one's-complement Internet checksum fold over `data`, starting at `sum`.
uint16_t inet_checksum(std::span<const uint8_t> data, uint32_t sum = 0);

}  // namespace axl::hv::io::net
