#include "hypervisor/io/net/steer.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace axl::hv::io::net {
namespace {

// An Ethernet + IPv4 + TCP/UDP frame with the given addresses and ports.
std::vector<uint8_t> ipv4(uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                          uint16_t frag = 0) {
  std::vector<uint8_t> f(14 + 20 + 20, 0);
  f[12] = 0x08;
  f[14] = 0x45;
  f[14 + 6] = uint8_t(frag >> 8);
  f[14 + 7] = uint8_t(frag);
  f[14 + 9] = proto;
  for (int i = 0; i < 4; ++i) {
    f[14 + 12 + i] = uint8_t(src >> (24 - 8 * i));
    f[14 + 16 + i] = uint8_t(dst >> (24 - 8 * i));
  }
  f[34] = uint8_t(sport >> 8);
  f[35] = uint8_t(sport);
  f[36] = uint8_t(dport >> 8);
  f[37] = uint8_t(dport);
  return f;
}

TEST(FlowHash, OneFlowOneHashAndFlowsSpread) {
  const auto a = ipv4(6, 0x0a000001, 0x0a000002, 40000, 5003);
  auto a_later = a;
  a_later.resize(a.size() + 1000, 0x55);  // payload does not matter
  EXPECT_EQ(flow_hash(a), flow_hash(a_later));
  EXPECT_NE(flow_hash(a), 0u);
  // Many flows (one port apart) land on both of two queues, evenly enough.
  int per_queue[2] = {0, 0};
  for (uint16_t p = 0; p < 200; ++p)
    ++per_queue[flow_hash(ipv4(6, 0x0a000001, 0x0a000002, uint16_t(40000 + p), 5003)) % 2];
  EXPECT_GT(per_queue[0], 60);
  EXPECT_GT(per_queue[1], 60);
  // UDP differs from TCP with the same tuple; addresses count.
  EXPECT_NE(flow_hash(ipv4(17, 0x0a000001, 0x0a000002, 40000, 5003)), flow_hash(a));
  EXPECT_NE(flow_hash(ipv4(6, 0x0a000003, 0x0a000002, 40000, 5003)), flow_hash(a));
}

TEST(FlowHash, FragmentsAndShortOrForeignFramesAreSafe) {
  // A non-first fragment has no ports: it hashes on addresses and protocol,
  // like every fragment of its datagram (the first one too).
  auto first = ipv4(17, 1, 2, 1000, 2000, 0x2000);  // more fragments
  auto later = ipv4(17, 1, 2, 7777, 8888, 0x00b9);  // offset, "ports" are payload
  EXPECT_EQ(flow_hash(first), flow_hash(later));
  // Truncated anywhere: no read past the end, and a defined answer.
  const auto full = ipv4(6, 1, 2, 3, 4);
  std::set<uint32_t> seen;
  for (size_t n = 0; n <= full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + long(n));
    seen.insert(flow_hash(cut));
  }
  EXPECT_TRUE(seen.count(0));
  std::vector<uint8_t> arp(60, 0);
  arp[12] = 0x08;
  arp[13] = 0x06;
  EXPECT_EQ(flow_hash(arp), 0u);
  auto bad_ihl = full;
  bad_ihl[14] = 0x41;  // IHL 4: shorter than the fixed header
  EXPECT_EQ(flow_hash(bad_ihl), 0u);
  // IPv6 TCP and an 802.1Q-tagged IPv4 frame parse.
  std::vector<uint8_t> v6(14 + 40 + 20, 0);
  v6[12] = 0x86;
  v6[13] = 0xdd;
  v6[14] = 0x60;
  v6[14 + 6] = 6;
  v6[14 + 8] = 0xfe;
  v6[54] = 0x9c;
  EXPECT_NE(flow_hash(v6), 0u);
  auto tagged = full;
  tagged.insert(tagged.begin() + 12, {0x81, 0x00, 0x00, 0x05});
  EXPECT_EQ(flow_hash(tagged), flow_hash(full));
}

}  // namespace
}  // namespace axl::hv::io::net
