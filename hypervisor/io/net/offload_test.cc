#include "hypervisor/io/net/offload.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace axl::hv::io::net {
namespace {

// A minimal Ethernet + IPv4 + UDP frame whose UDP checksum field holds the
// pseudo-header sum, as a sender using checksum offload leaves it.
std::vector<uint8_t> partial_udp_frame(uint16_t* csum_start, uint16_t* csum_offset,
                                       uint16_t* full_csum) {
  std::vector<uint8_t> f(14 + 20 + 8 + 5, 0);
  f[12] = 0x08;  // IPv4
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  ip[9] = 17;
  uint8_t src[4] = {10, 0, 0, 1}, dst[4] = {10, 0, 0, 2};
  memcpy(ip + 12, src, 4);
  memcpy(ip + 16, dst, 4);
  uint8_t* udp = ip + 20;
  udp[1] = 7;
  udp[3] = 9;
  udp[5] = 13;  // length 8 + 5
  memcpy(udp + 8, "hello", 5);
  // Pseudo header: src, dst, proto, UDP length.
  uint32_t ph = (10 << 8 | 0) + (0 << 8 | 1) + (10 << 8 | 0) + (0 << 8 | 2) + 17 + 13;
  while (ph >> 16) ph = (ph & 0xffff) + (ph >> 16);
  // Full checksum computed independently: pseudo header + UDP header + data.
  std::vector<uint8_t> u(udp, udp + 13);
  *full_csum = inet_checksum(u, ph);
  udp[6] = uint8_t(ph >> 8);
  udp[7] = uint8_t(ph);
  *csum_start = 34;
  *csum_offset = 6;
  return f;
}

TEST(NetOffload, SoftwareChecksumForGuestWithoutGuestCsum) {
  uint16_t start, off, want;
  auto f = partial_udp_frame(&start, &off, &want);
  NetHdr h{kHdrFNeedsCsum, kGsoNone, 0, 0, start, off, 7};
  EXPECT_EQ(sanitize_rx(h, f, GuestOffloads{}), RxVerdict::kDeliver);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.num_buffers, 0);
  EXPECT_EQ(uint16_t(f[34 + 6] << 8 | f[34 + 7]), want);
}

TEST(NetOffload, PartialChecksumPassesToGuestWithGuestCsum) {
  uint16_t start, off, want;
  auto f = partial_udp_frame(&start, &off, &want);
  auto before = f;
  NetHdr h{kHdrFNeedsCsum | 0x40, kGsoNone, 0, 0, start, off, 0};
  GuestOffloads g = GuestOffloads::from_features(1ull << kFGuestCsum);
  EXPECT_EQ(sanitize_rx(h, f, g), RxVerdict::kDeliver);
  EXPECT_EQ(h.flags, kHdrFNeedsCsum);  // unknown flag bits cleared
  EXPECT_EQ(f, before);
}

TEST(NetOffload, ChecksumOffsetsOutsideTheFrameAreDropped) {
  std::vector<uint8_t> f(60, 0);
  NetHdr h{kHdrFNeedsCsum, kGsoNone, 0, 0, 58, 1, 0};
  EXPECT_EQ(sanitize_rx(h, f, GuestOffloads{}), RxVerdict::kDropBadHeader);
  NetHdr h2{kHdrFNeedsCsum, kGsoNone, 0, 0, 0xffff, 0xffff, 0};
  EXPECT_EQ(sanitize_rx(h2, f, GuestOffloads{}), RxVerdict::kDropBadHeader);
}

TEST(NetOffload, GsoOnlyForGuestsThatNegotiatedIt) {
  std::vector<uint8_t> f(2000, 0);
  NetHdr h{kHdrFNeedsCsum, kGsoTcpv4, 54, 1448, 34, 16, 0};
  NetHdr h1 = h;
  EXPECT_EQ(sanitize_rx(h1, f, GuestOffloads{}), RxVerdict::kDropGsoUnsupported);
  uint64_t feats = 1ull << kFGuestCsum | 1ull << kFGuestTso4;
  NetHdr h2 = h;
  EXPECT_EQ(sanitize_rx(h2, f, GuestOffloads::from_features(feats)), RxVerdict::kDeliver);
  NetHdr h3 = h;
  h3.gso_type = kGsoTcpv6;
  EXPECT_EQ(sanitize_rx(h3, f, GuestOffloads::from_features(feats)),
            RxVerdict::kDropGsoUnsupported);
  NetHdr h4 = h;
  h4.gso_type = kGsoTcpv4 | kGsoEcn;
  EXPECT_EQ(sanitize_rx(h4, f, GuestOffloads::from_features(feats)),
            RxVerdict::kDropGsoUnsupported);
  // TSO without GUEST_CSUM is not a valid negotiation (§5.1.3.1).
  EXPECT_FALSE(GuestOffloads::from_features(1ull << kFGuestTso4).tso4);
}

TEST(NetOffload, MalformedGsoHeadersAreDropped) {
  std::vector<uint8_t> f(2000, 0);
  auto g = GuestOffloads::from_features(1ull << kFGuestCsum | 1ull << kFGuestTso4);
  NetHdr no_csum{0, kGsoTcpv4, 54, 1448, 0, 0, 0};
  EXPECT_EQ(sanitize_rx(no_csum, f, g), RxVerdict::kDropBadHeader);
  NetHdr zero_size{kHdrFNeedsCsum, kGsoTcpv4, 54, 0, 34, 16, 0};
  EXPECT_EQ(sanitize_rx(zero_size, f, g), RxVerdict::kDropBadHeader);
  NetHdr udp{kHdrFNeedsCsum, 3, 54, 1448, 34, 6, 0};
  EXPECT_EQ(sanitize_rx(udp, f, g), RxVerdict::kDropBadHeader);
  NetHdr ecn_only{0, kGsoEcn, 0, 0, 0, 0, 0};
  EXPECT_EQ(sanitize_rx(ecn_only, f, g), RxVerdict::kDropBadHeader);
}

TEST(NetOffload, InetChecksumKnownValue) {
  // RFC 1071 example bytes.
  std::vector<uint8_t> d = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(inet_checksum(d), uint16_t(~0xddf2));
}

}  // namespace
}  // namespace axl::hv::io::net
