// The net driver over real channels, driven without a loop: the test plays
// the hypervisor for several guest NICs and calls the event handlers itself.
#include "driverdom/net/net_driver.h"

#include <gtest/gtest.h>
#include <string.h>
#include <unistd.h>

#include <vector>

namespace axl::driverdom::net {
namespace {

using channel::Op;
using channel::Request;
using channel::Response;
using channel::RespStatus;

constexpr uint32_t kSlots = 16;
constexpr uint32_t kSlotSize = 2048;
constexpr Mac kMacA{0x52, 0x54, 0, 0, 0, 0xa};
constexpr Mac kMacB{0x52, 0x54, 0, 0, 0, 0xb};
constexpr Mac kMacC{0x52, 0x54, 0, 0, 0, 0xc};
constexpr Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

std::vector<uint8_t> frame(const Mac& dst, const Mac& src, size_t payload, uint8_t fill) {
  std::vector<uint8_t> f(kVnetHdrBytes + kEthHeaderBytes + payload, fill);
  std::fill(f.begin(), f.begin() + kVnetHdrBytes, 0);
  f[0] = 0x01;   // a header byte that must pass through unchanged
  f[11] = 0x77;  // num_buffers, stale: the receiving side must set it
  std::copy(dst.begin(), dst.end(), f.begin() + kVnetHdrBytes);
  std::copy(src.begin(), src.end(), f.begin() + kVnetHdrBytes + 6);
  f[kVnetHdrBytes + 12] = 0x08;
  f[kVnetHdrBytes + 13] = 0x00;
  return f;
}

class NetDriverTest : public ::testing::Test {
 protected:
  struct Guest {
    uint32_t id;
    std::unique_ptr<channel::HvEnd> hv;
  };

  Guest& add_guest(uint32_t id, const Mac& mac) {
    auto fds = channel::create(kSlots, kSlotSize);
    EXPECT_TRUE(fds.ok());
    auto m_hv = channel::Mapping::map(fds->mem.get(), kSlots, kSlotSize);
    auto m_drv = channel::Mapping::map(fds->mem.get(), kSlots, kSlotSize);
    EXPECT_TRUE(m_hv.ok() && m_drv.ok());
    UniqueFd req2(::dup(fds->req_kick.get())), resp2(::dup(fds->resp_kick.get()));
    AttachSpec spec;
    spec.device_id = id;
    spec.slots = kSlots;
    spec.slot_size = kSlotSize;
    spec.kind = Kind::kNet;
    spec.net.mac = mac;
    EXPECT_TRUE(
        driver_
            .attach(spec,
                    channel::DriverEnd(std::move(m_drv).value(), std::move(req2), std::move(resp2)),
                    {})
            .ok());
    guests_.push_back(Guest{
        id, std::make_unique<channel::HvEnd>(std::move(m_hv).value(), std::move(fds->req_kick),
                                             std::move(fds->resp_kick))});
    return guests_.back();
  }

  void post_rx(Guest& g, uint32_t id, uint32_t len = kSlotSize) {
    g.hv->push(Request{id, uint16_t(Op::kNetRxPost), 0, 0, id * kSlotSize, len, 0});
    g.hv->kick();
    driver_.service_guest(g.id);
  }

  void send(Guest& g, uint32_t id, const std::vector<uint8_t>& f) {
    memcpy(g.hv->slot(id), f.data(), f.size());
    g.hv->push(Request{id, uint16_t(Op::kNetTx), 0, 0, id * kSlotSize, uint32_t(f.size()), 0});
    g.hv->kick();
    driver_.service_guest(g.id);
  }

  std::vector<Response> responses(Guest& g) {
    std::vector<Response> out;
    for (;;) {
      auto r = g.hv->pop();
      EXPECT_TRUE(r.ok());
      if (!r.ok() || !r->has_value()) break;
      out.push_back(**r);
    }
    return out;
  }

  boost::asio::io_context io_;
  NetDriver driver_{io_, UniqueFd()};
  std::vector<Guest> guests_;
};

TEST_F(NetDriverTest, UnicastReachesOnlyItsGuestWithHeaderIntact) {
  guests_.reserve(3);
  Guest& a = add_guest(1, kMacA);
  Guest& b = add_guest(2, kMacB);
  Guest& c = add_guest(3, kMacC);
  post_rx(b, 0);
  post_rx(c, 0);
  auto f = frame(kMacB, kMacA, 100, 0x77);
  send(a, 5, f);

  auto ra = responses(a);
  ASSERT_EQ(ra.size(), 1u);
  EXPECT_EQ(ra[0].id, 5u);
  EXPECT_EQ(ra[0].status, int32_t(RespStatus::kOk));
  EXPECT_EQ(ra[0].len, 0u);

  auto rb = responses(b);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(rb[0].id, 0u);
  EXPECT_EQ(rb[0].len, f.size());
  // Everything arrives as sent except num_buffers, which the receiving side sets to 1.
  auto want = f;
  want[10] = 1;
  want[11] = 0;
  EXPECT_EQ(memcmp(b.hv->slot(0), want.data(), want.size()), 0);
  EXPECT_TRUE(responses(c).empty());  // B's MAC is pinned: no flood
}

TEST_F(NetDriverTest, BroadcastFloodsToEveryOtherGuestInPostOrder) {
  guests_.reserve(3);
  Guest& a = add_guest(1, kMacA);
  Guest& b = add_guest(2, kMacB);
  Guest& c = add_guest(3, kMacC);
  post_rx(a, 0);
  post_rx(b, 3);
  post_rx(b, 1);
  post_rx(c, 7);
  send(a, 2, frame(kBroadcast, kMacA, 50, 1));
  send(a, 4, frame(kBroadcast, kMacA, 60, 2));
  auto rb = responses(b);
  ASSERT_EQ(rb.size(), 2u);
  EXPECT_EQ(rb[0].id, 3u);  // oldest posted buffer first
  EXPECT_EQ(rb[1].id, 1u);
  EXPECT_EQ(rb[1].len, kVnetHdrBytes + kEthHeaderBytes + 60);
  auto rc = responses(c);
  ASSERT_EQ(rc.size(), 1u);  // second broadcast found no buffer
  EXPECT_EQ(rc[0].id, 7u);
  EXPECT_EQ(driver_.stats().rx_no_buffer, 1u);
  // No hairpin: A's own buffer stays posted, only its two TX completions come back.
  auto ra = responses(a);
  ASSERT_EQ(ra.size(), 2u);
  EXPECT_EQ(ra[0].id, 2u);
  EXPECT_EQ(ra[1].id, 4u);
}

TEST_F(NetDriverTest, FrameLargerThanPostedBufferIsDropped) {
  guests_.reserve(2);
  Guest& a = add_guest(1, kMacA);
  Guest& b = add_guest(2, kMacB);
  post_rx(b, 0, 64);
  send(a, 1, frame(kMacB, kMacA, 200, 3));
  EXPECT_TRUE(responses(b).empty());
  EXPECT_EQ(driver_.stats().rx_too_big, 1u);
  send(a, 1, frame(kMacB, kMacA, 20, 3));  // fits: the buffer was kept
  EXPECT_EQ(responses(b).size(), 1u);
}

TEST_F(NetDriverTest, BadRequestsAreAnsweredWithErrors) {
  guests_.reserve(1);
  Guest& a = add_guest(1, kMacA);
  auto push = [&](Request r) {
    a.hv->push(r);
    a.hv->kick();
    driver_.service_guest(a.id);
    auto rs = responses(a);
    EXPECT_EQ(rs.size(), 1u);
    return rs.empty() ? -1 : rs[0].status;
  };
  EXPECT_EQ(push(Request{0, uint16_t(Op::kNetTx), 0, 0, 0, 25, 0}), int32_t(RespStatus::kIoErr));
  EXPECT_EQ(push(Request{0, uint16_t(Op::kNetTx), 0, 0, 0, kSlotSize + 1, 0}),
            int32_t(RespStatus::kIoErr));
  EXPECT_EQ(push(Request{1, uint16_t(Op::kNetTx), 0, 0, 0, 60, 0}), int32_t(RespStatus::kIoErr));
  EXPECT_EQ(push(Request{kSlots, uint16_t(Op::kNetTx), 0, 0, kSlots * kSlotSize, 60, 0}),
            int32_t(RespStatus::kIoErr));
  EXPECT_EQ(push(Request{0, uint16_t(Op::kBlkRead), 0, 0, 0, 60, 0}),
            int32_t(RespStatus::kUnsupported));
  EXPECT_EQ(push(Request{0, uint16_t(Op::kNetRxPost), 0, 0, 0, 10, 0}),
            int32_t(RespStatus::kIoErr));
  EXPECT_EQ(driver_.stats().bad_requests, 6u);
}

TEST_F(NetDriverTest, DetachedGuestIsForgotten) {
  guests_.reserve(2);
  Guest& a = add_guest(1, kMacA);
  Guest& b = add_guest(2, kMacB);
  post_rx(b, 0);
  EXPECT_TRUE(driver_.detach(2));
  EXPECT_FALSE(driver_.detach(2));
  EXPECT_FALSE(driver_.fabric().lookup(kMacB).has_value());
  send(a, 0, frame(kMacB, kMacA, 10, 0));
  EXPECT_EQ(responses(a).size(), 1u);
  EXPECT_EQ(driver_.stats().rx_frames, 0u);
}

TEST_F(NetDriverTest, CorruptedRingBreaksOnlyThatPort) {
  guests_.reserve(2);
  Guest& a = add_guest(1, kMacA);
  Guest& b = add_guest(2, kMacB);
  b.hv->mapping().header()->req.head.store(12345);
  b.hv->kick();
  driver_.service_guest(b.id);
  EXPECT_FALSE(driver_.service_guest(b.id));
  post_rx(a, 0);
  // A still works and no longer floods to the broken port.
  send(a, 1, frame(kBroadcast, kMacA, 10, 0));
  EXPECT_EQ(responses(a).size(), 1u);
}

}  // namespace
}  // namespace axl::driverdom::net
