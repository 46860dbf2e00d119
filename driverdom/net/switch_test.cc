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

constexpr PortId kTap = 0;
constexpr Mac kHost{0x02, 0, 0, 0, 0, 0x01};  // a station behind the TAP

// Guests A, B, C on ports 1, 2, 3 and the TAP.
Switch three_guests() {
  Switch sw;
  sw.add_uplink(kTap);
  sw.add_guest(1, kA);
  sw.add_guest(2, kB);
  sw.add_guest(3, kC);
  return sw;
}

TEST(Switch, UnicastGoesToTheGuestWithThatMac) {
  Switch sw = three_guests();
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2}));
  EXPECT_EQ(route(sw, 3, kA, kC), (std::vector<PortId>{1}));
  EXPECT_EQ(route(sw, kTap, kC, kHost), (std::vector<PortId>{3}));
  EXPECT_EQ(sw.lookup(kB), std::optional<PortId>(2));
}

TEST(Switch, UnknownUnicastFromAGuestGoesOutNeverToOtherGuests) {
  Switch sw = three_guests();
  EXPECT_EQ(route(sw, 1, kHost, kA), (std::vector<PortId>{kTap}));
  EXPECT_EQ(sw.stats().floods, 0u);
}

TEST(Switch, UnknownUnicastFromTheUplinkIsDropped) {
  Switch sw = three_guests();
  Mac other{0x02, 0, 0, 0, 0, 0x77};
  EXPECT_TRUE(route(sw, kTap, other, kHost).empty());
  EXPECT_EQ(sw.stats().unknown_drops, 1u);
  EXPECT_EQ(sw.stats().floods, 0u);
}

TEST(Switch, BroadcastAndMulticastFlood) {
  Switch sw = three_guests();
  EXPECT_EQ(route(sw, 2, kBroadcast, kB), (std::vector<PortId>{kTap, 1, 3}));
  EXPECT_EQ(route(sw, kTap, kIpv6Multicast, kHost), (std::vector<PortId>{1, 2, 3}));
  EXPECT_EQ(sw.stats().floods, 2u);
}

TEST(Switch, NoHairpin) {
  Switch sw = three_guests();
  EXPECT_TRUE(route(sw, 1, kA, kA).empty());
  EXPECT_EQ(sw.stats().hairpin_drops, 1u);
}

TEST(Switch, GuestSendingFromAnotherSourceIsDropped) {
  Switch sw = three_guests();
  // Posing as the host, as another guest, as a made-up station, as a group.
  for (const Mac& src : {kHost, kB, Mac{0x52, 0x54, 0, 0, 9, 9}, kBroadcast, Mac{}})
    EXPECT_TRUE(route(sw, 1, kBroadcast, src).empty());
  EXPECT_TRUE(route(sw, 1, kC, kB).empty());
  EXPECT_EQ(sw.stats().spoofed, 6u);
  EXPECT_EQ(sw.stats().frames, 0u);
  // Nothing moved: B's traffic still reaches B only.
  EXPECT_EQ(route(sw, 3, kB, kC), (std::vector<PortId>{2}));
}

TEST(Switch, UplinkPosingAsAGuestIsDropped) {
  Switch sw = three_guests();
  EXPECT_TRUE(route(sw, kTap, kBroadcast, kA).empty());
  EXPECT_EQ(sw.stats().spoofed, 1u);
}

TEST(Switch, NothingIsLearnedWhateverTheTraffic) {
  Switch sw = three_guests();
  for (int i = 0; i < 10000; ++i) {
    Mac src{0x02, 0, 0, uint8_t(i >> 16), uint8_t(i >> 8), uint8_t(i)};
    route(sw, kTap, kBroadcast, src);
  }
  EXPECT_EQ(sw.entries(), 3u);
  // A flood of sources from outside changed nothing for unicast.
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2}));
  EXPECT_EQ(route(sw, kTap, Mac{0x02, 0, 0, 0, 0, 5}, kHost).size(), 0u);
}

TEST(Switch, RemovedPortIsForgottenAndNotFlooded) {
  Switch sw = three_guests();
  sw.remove_port(2);
  EXPECT_FALSE(sw.lookup(kB).has_value());
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{kTap}));  // B is nobody here now
  EXPECT_TRUE(route(sw, 2, kA, kB).empty());  // from a port that no longer exists
  EXPECT_EQ(route(sw, 1, kBroadcast, kA), (std::vector<PortId>{kTap, 3}));
}

TEST(Switch, WithoutUplinkUnknownUnicastIsDropped) {
  Switch sw;
  sw.add_guest(1, kA);
  sw.add_guest(2, kB);
  EXPECT_TRUE(route(sw, 1, kHost, kA).empty());
  EXPECT_EQ(route(sw, 1, kB, kA), (std::vector<PortId>{2}));
}

TEST(Switch, RuntIsDropped) {
  Switch sw = three_guests();
  std::vector<uint8_t> runt(13, 0xff);
  std::vector<PortId> out{99};
  sw.route(1, runt, &out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(sw.stats().runts, 1u);
}

}  // namespace
}  // namespace axl::driverdom::net
