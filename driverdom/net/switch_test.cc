#include "driverdom/net/switch.h"

#include <gtest/gtest.h>

namespace axl::driverdom::net {
namespace {

constexpr Mac kA{0x52, 0x54, 0, 0, 0, 0xa};
constexpr Mac kB{0x52, 0x54, 0, 0, 0, 0xb};
constexpr Mac kC{0x52, 0x54, 0, 0, 0, 0xc};
constexpr Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr Mac kIpv6Multicast{0x33, 0x33, 0, 0, 0, 1};

std::vector<uint8_t> frame(const Mac& dst, const Mac& src) {
  std::vector<uint8_t> f(60, 0);
  std::copy(dst.begin(), dst.end(), f.begin());
  std::copy(src.begin(), src.end(), f.begin() + 6);
  f[12] = 0x08;  // IPv4 ethertype
  return f;
}

std::vector<PortId> route(Switch& sw, PortId in, const Mac& dst, const Mac& src) {
  std::vector<PortId> out;
  auto f = frame(dst, src);
  sw.route(in, f, &out);
  return out;
}

Switch three_ports() {
  Switch sw;
  sw.add_port(1);
  sw.add_port(2);
  sw.add_port(3);
  return sw;
}

TEST(Switch, UnknownUnicastFloodsToAllButIngress) {
  Switch sw = three_ports();
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2, 3}));
  EXPECT_EQ(sw.stats().floods, 1u);
}

TEST(Switch, LearnsSourceAndSendsUnicastToLearnedPort) {
  Switch sw = three_ports();
  route(sw, 1, kB, kA);  // learns A on 1
  EXPECT_EQ(sw.lookup(kA), std::optional<PortId>(1));
  EXPECT_EQ(route(sw, 2, kA, kB), (std::vector<PortId>{1}));  // learns B on 2
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2}));
  EXPECT_EQ(route(sw, 3, kA, kC), (std::vector<PortId>{1}));
}

TEST(Switch, BroadcastAndMulticastFlood) {
  Switch sw = three_ports();
  route(sw, 2, kA, kB);
  EXPECT_EQ(route(sw, 2, kBroadcast, kB), (std::vector<PortId>{1, 3}));
  EXPECT_EQ(route(sw, 3, kIpv6Multicast, kC), (std::vector<PortId>{1, 2}));
}

TEST(Switch, NoHairpin) {
  Switch sw = three_ports();
  route(sw, 1, kBroadcast, kA);
  route(sw, 1, kBroadcast, kB);  // A and B both behind port 1
  EXPECT_TRUE(route(sw, 1, kB, kA).empty());
  EXPECT_EQ(sw.stats().hairpin_drops, 1u);
}

TEST(Switch, StationMovesToNewPort) {
  Switch sw = three_ports();
  route(sw, 1, kBroadcast, kA);
  route(sw, 3, kBroadcast, kA);
  EXPECT_EQ(sw.lookup(kA), std::optional<PortId>(3));
  EXPECT_EQ(route(sw, 2, kA, kB), (std::vector<PortId>{3}));
}

TEST(Switch, PinnedMacIsNotStolen) {
  Switch sw = three_ports();
  sw.pin(kA, 1);
  EXPECT_EQ(route(sw, 2, kA, kB), (std::vector<PortId>{1}));  // known before A ever sent
  route(sw, 3, kBroadcast, kA);                               // port 3 spoofs A
  EXPECT_EQ(sw.lookup(kA), std::optional<PortId>(1));
  EXPECT_EQ(sw.stats().spoofed, 1u);
}

TEST(Switch, GroupSourceIsNeverLearned) {
  Switch sw = three_ports();
  route(sw, 1, kBroadcast, kBroadcast);
  route(sw, 1, kBroadcast, Mac{});
  EXPECT_EQ(sw.entries(), 0u);
}

TEST(Switch, RemovedPortIsForgottenAndNotFlooded) {
  Switch sw = three_ports();
  route(sw, 2, kBroadcast, kB);
  sw.remove_port(2);
  EXPECT_FALSE(sw.lookup(kB).has_value());
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{3}));
  EXPECT_TRUE(route(sw, 2, kA, kB).empty());  // from a port that no longer exists
}

TEST(Switch, RuntIsDropped) {
  Switch sw = three_ports();
  std::vector<uint8_t> runt(13, 0xff);
  std::vector<PortId> out{99};
  sw.route(1, runt, &out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(sw.stats().runts, 1u);
}

TEST(Switch, FullTableFloodsNewStations) {
  Switch sw(1);
  sw.add_port(1);
  sw.add_port(2);
  route(sw, 1, kBroadcast, kA);
  route(sw, 2, kBroadcast, kB);  // no room for B
  EXPECT_EQ(sw.stats().table_full, 1u);
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2}));  // flooded, still arrives
}

}  // namespace
}  // namespace axl::driverdom::net
