// virtio-net end to end inside one process: synthetic front-end over the
// real vhost-user socket, fake driver domain on a real channel.
#include "hypervisor/io/net/device.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "hypervisor/guest_device.h"
#include "hypervisor/io/testing/fake_driver.h"
#include "hypervisor/io/testing/frontend.h"

namespace axl::hv::io::net {
namespace {

using vhost_user::testing::Frontend;

struct NetTest : ::testing::Test {
  std::string dir, sock;
  std::mutex mu;
  std::vector<std::vector<uint8_t>> sent;  // frames the driver "transmitted"
  std::deque<channel::Request> posted;     // RX buffers the driver holds
  std::unique_ptr<testing::FakeDriver> driver;
  std::unique_ptr<GuestDevice> dev;
  Frontend fe;

  void SetUp() override {
    char tmpl[] = "/tmp/axl-net-XXXXXX";
    dir = ::mkdtemp(tmpl);
    sock = dir + "/net.sock";
    auto shape = net_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = start_driver(std::move(*ch.drv));
    dev = make_net_device(sock, NetDeviceSpec{{2, 0, 0, 0, 0, 1}}, std::move(*ch.hv));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(fe.connect(sock));
  }
  std::atomic<bool> hold_tx{false};
  std::unique_ptr<testing::FakeDriver> start_driver(channel::DriverEnd end) {
    return std::make_unique<testing::FakeDriver>(
        std::move(end),
        [this](channel::DriverEnd& d,
               const channel::Request& r) -> std::optional<channel::Response> {
          std::lock_guard<std::mutex> g(mu);
          if (r.op == uint16_t(channel::Op::kNetRxPost)) {
            posted.push_back(r);
            return std::nullopt;
          }
          if (hold_tx) return std::nullopt;  // a hung driver
          sent.emplace_back(d.slot(r.id), d.slot(r.id) + r.len);
          return channel::Response{r.id, 0, 0, 0};
        });
  }
  void TearDown() override {
    dev.reset();
    driver.reset();
    ::rmdir(dir.c_str());
  }
  // The driver "receives" a frame: header + payload into the next posted slot.
  // Delivers a frame as the driver would, with `hdr_fill` in every byte of
  // its virtio_net_hdr_v1 (0: a valid header without offloads).
  void inject(const std::vector<uint8_t>& payload, uint32_t claimed_len = 0, uint8_t hdr_fill = 0) {
    driver->post([this, payload, claimed_len, hdr_fill](channel::DriverEnd& d) {
      std::lock_guard<std::mutex> g(mu);
      ASSERT_FALSE(posted.empty());
      channel::Request r = posted.front();
      posted.pop_front();
      uint8_t* s = d.slot(r.id);
      memset(s, hdr_fill, 12);
      memcpy(s + 12, payload.data(), payload.size());
      uint32_t len = claimed_len ? claimed_len : uint32_t(12 + payload.size());
      d.push(channel::Response{r.id, 0, len, 0});
    });
  }
  size_t posted_count() {
    std::lock_guard<std::mutex> g(mu);
    return posted.size();
  }
  void wait_posted(size_t n) {
    for (int i = 0; i < 500 && posted_count() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_GE(posted_count(), n);
  }

  // A new fake driver (the old one gone, with the buffers it held) on a
  // fresh channel; returns the channel's hypervisor end.
  channel::HvEnd fresh_driver() {
    driver.reset();
    {
      std::lock_guard<std::mutex> g(mu);
      posted.clear();
    }
    auto shape = net_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    if (!ch.hv || !ch.drv) std::abort();  // no channel: nothing to test with
    driver = start_driver(std::move(*ch.drv));
    return std::move(*ch.hv);
  }
  // Replaces the device with one of `pairs` queue pairs, supervised as
  // `sup` says; `f` connects to it (the test does the handshake).
  void remake(Frontend& f, uint32_t pairs, DeviceSupervision sup = {}) {
    dev.reset();
    dev = make_net_device(sock, NetDeviceSpec{{2, 0, 0, 0, 0, 1}, pairs}, fresh_driver(),
                          std::move(sup));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(f.connect(sock));
  }
  // An Ethernet + IPv4 + TCP frame of flow `flow` (its source port) whose
  // 4-byte payload is `seq`.
  static std::vector<uint8_t> tcp_frame(uint16_t flow, uint32_t seq) {
    std::vector<uint8_t> f(14 + 20 + 20 + 4, 0);
    f[12] = 0x08;
    f[14] = 0x45;
    f[14 + 9] = 6;
    f[14 + 12] = 10;
    f[14 + 16] = 10;
    f[14 + 19] = 2;
    f[34] = uint8_t(flow >> 8);
    f[35] = uint8_t(flow);
    f[37] = 80;
    memcpy(&f[54], &seq, 4);
    return f;
  }

  static constexpr uint64_t kBufs = Frontend::kGpaBase + 0x100000;
};

TEST_F(NetTest, TxFrameReachesDriver) {
  fe.handshake(2, ~0ull);
  std::vector<uint8_t> frame(12 + 60);
  for (size_t i = 12; i < frame.size(); ++i) frame[i] = uint8_t(i);
  memcpy(fe.at(kBufs), frame.data(), 12);
  memcpy(fe.at(kBufs + 0x1000), frame.data() + 12, 60);
  fe.add_chain(kTxQueue, {{kBufs, 12, false}, {kBufs + 0x1000, 60, false}});
  auto u = fe.wait_used(kTxQueue, 1);
  ASSERT_EQ(u.size(), 1u);
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], frame);
}

TEST_F(NetTest, RebindResendsTxAndRepostsRx) {
  fe.handshake(2, ~0ull);
  hold_tx = true;
  memset(fe.at(kBufs), 0, 12);
  memset(fe.at(kBufs + 12), 0x42, 64);
  fe.add_chain(kTxQueue, {{kBufs, 76, false}});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(fe.used_idx(kTxQueue), 0);
  hold_tx = false;
  ASSERT_TRUE(io::rebind(*dev, fresh_driver()).ok());
  auto u = fe.wait_used(kTxQueue, 1);
  ASSERT_EQ(u.size(), 1u);
  wait_posted(net_channel_shape().slots / 2);
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].size(), 76u);
  EXPECT_EQ(sent[0][12], 0x42);
}

// A frame resent after a rebind asks no more of the TAP than it did the
// first time: offloads the guest did not negotiate stay cleared.
TEST_F(NetTest, ARebindResendsTxWithTheSameOffloadChecks) {
  fe.handshake(2, ~virtio::bit(kFCsum));  // no checksum offload, hence no TSO
  hold_tx = true;
  memset(fe.at(kBufs), 0, 12);
  fe.at(kBufs)[0] = 1;          // VIRTIO_NET_HDR_F_NEEDS_CSUM
  fe.at(kBufs)[1] = kGsoTcpv4;  // and segmentation, neither negotiated
  memset(fe.at(kBufs + 12), 0x42, 64);
  fe.add_chain(kTxQueue, {{kBufs, 76, false}});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  hold_tx = false;
  ASSERT_TRUE(io::rebind(*dev, fresh_driver()).ok());
  ASSERT_EQ(fe.wait_used(kTxQueue, 1).size(), 1u);
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0][0], 0);
  EXPECT_EQ(sent[0][1], kGsoNone);
  EXPECT_EQ(sent[0][12], 0x42);
}

TEST_F(NetTest, WatchdogIgnoresPostedRxButCatchesAStalledTx) {
  std::mutex cmu;
  std::vector<std::string> causes;
  DeviceSupervision sup;
  sup.io_timeout_ms = 100;
  sup.on_quarantine = [&](const std::string& cause, int) {
    std::lock_guard<std::mutex> g(cmu);
    causes.push_back(cause);
  };
  remake(fe, 1, sup);
  fe.handshake(2, ~0ull);
  wait_posted(net_channel_shape().slots / 2);
  // Every RX buffer stays posted, unanswered, for several deadlines: no stall.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  {
    std::lock_guard<std::mutex> g(cmu);
    EXPECT_TRUE(causes.empty());
  }
  hold_tx = true;
  memset(fe.at(kBufs), 0, 12);
  memset(fe.at(kBufs + 12), 0x42, 64);
  fe.add_chain(kTxQueue, {{kBufs, 76, false}});
  for (int i = 0; i < 300; ++i) {
    {
      std::lock_guard<std::mutex> g(cmu);
      if (!causes.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard<std::mutex> g(cmu);
  ASSERT_EQ(causes.size(), 1u);
  EXPECT_EQ(causes[0].rfind("stalled: request " + std::to_string(net_channel_shape().slots / 2) +
                                " outstanding for ",
                            0),
            0u)
      << causes[0];
  EXPECT_EQ(dev->stats().driver_violations, 1u);
}

TEST_F(NetTest, DuplicateRxCompletionIsReported) {
  std::vector<uint8_t> payload(60, 0x11);
  fe.handshake(2, ~0ull);
  wait_posted(1);
  driver->post([this, payload](channel::DriverEnd& d) {
    std::lock_guard<std::mutex> g(mu);
    channel::Request r = posted.front();
    posted.pop_front();
    memset(d.slot(r.id), 0, 12);
    memcpy(d.slot(r.id) + 12, payload.data(), payload.size());
    channel::Response resp{r.id, 0, uint32_t(12 + payload.size()), 0};
    d.push(resp);
    d.push(resp);
  });
  for (int i = 0; i < 300 && dev->stats().driver_violations == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(dev->stats().driver_violations, 1u);
}

TEST_F(NetTest, TxRejectsWritableAndOversizedChains) {
  fe.handshake(2, ~0ull);
  fe.add_chain(kTxQueue, {{kBufs, 12, false}, {kBufs + 0x1000, 60, true}});
  fe.add_chain(kTxQueue, {{kBufs, net_channel_shape().slot_size + 1, false}});
  auto u = fe.wait_used(kTxQueue, 2);
  EXPECT_EQ(dev->stats().bad_descriptors, 2u);
  std::lock_guard<std::mutex> g(mu);
  EXPECT_TRUE(sent.empty());
}

TEST_F(NetTest, RxFrameWithGarbageHeaderIsDroppedNotPassedOn) {
  fe.handshake(2, ~0ull);
  wait_posted(net_channel_shape().slots / 2);
  fe.add_chain(kRxQueue, {{kBufs, 2048, true}});
  inject(std::vector<uint8_t>(100, 0x11), 0, 0xaa);  // gso_type 0xaa: no such type
  std::vector<uint8_t> good(100, 0x22);
  inject(good);
  auto u = fe.wait_used(kRxQueue, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].len, 112u);
  EXPECT_EQ(0, memcmp(fe.at(kBufs + 12), good.data(), good.size()));
  uint8_t hdr[10];
  memcpy(hdr, fe.at(kBufs), 10);
  for (uint8_t b : hdr) EXPECT_EQ(b, 0);
}

TEST_F(NetTest, RxWaitsForBuffersThenMergesAcrossChains) {
  fe.handshake(2, ~0ull);
  ASSERT_TRUE(fe.features() & virtio::bit(kFMrgRxbuf));
  wait_posted(net_channel_shape().slots / 2);
  std::vector<uint8_t> payload(1000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 3);
  inject(payload);  // no guest buffers yet: held in its slot
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(fe.used_idx(kRxQueue), 0);
  // Two 512-byte buffers: header + 500 bytes in the first, 500 in the second.
  fe.add_chain(kRxQueue, {{kBufs, 512, true}}, false);
  fe.add_chain(kRxQueue, {{kBufs + 0x1000, 512, true}});
  auto u = fe.wait_used(kRxQueue, 2);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[0].len, 512u);
  EXPECT_EQ(u[1].len, 500u);
  uint8_t hdr[12];
  memcpy(hdr, fe.at(kBufs), 12);
  uint16_t num_buffers;
  memcpy(&num_buffers, hdr + 10, 2);
  EXPECT_EQ(num_buffers, 2);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(hdr[i], 0);
  EXPECT_EQ(0, memcmp(fe.at(kBufs + 12), payload.data(), 500));
  EXPECT_EQ(0, memcmp(fe.at(kBufs + 0x1000), payload.data() + 500, 500));
  // The slot goes back to the driver.
  wait_posted(net_channel_shape().slots / 2);
}

TEST_F(NetTest, RxLengthBeyondSlotIsAViolation) {
  fe.handshake(2, ~0ull);
  wait_posted(1);
  inject({1, 2, 3}, net_channel_shape().slot_size + 1);
  for (int i = 0; i < 200 && dev->stats().driver_violations == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(dev->stats().driver_violations, 1u);
}

TEST_F(NetTest, RxShorterThanHeaderIsAViolation) {
  fe.handshake(2, ~0ull);
  wait_posted(1);
  driver->post([this](channel::DriverEnd& d) {
    std::lock_guard<std::mutex> g(mu);
    channel::Request r = posted.front();
    posted.pop_front();
    d.push(channel::Response{r.id, 0, 5, 0});
  });
  for (int i = 0; i < 200 && dev->stats().driver_violations == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(dev->stats().driver_violations, 1u);
}

// VIRTIO_NET_F_MQ: two queue pairs over one channel.  Each transmit queue
// reaches the driver and completes on itself.
TEST_F(NetTest, TwoPairsTransmitOnEitherQueue) {
  Frontend f;
  remake(f, 2);
  f.handshake(4, ~0ull);
  EXPECT_TRUE(f.features() & virtio::bit(kFMq));
  EXPECT_EQ(f.call_u64(vhost_user::Req::kGetQueueNum), 4u);
  for (uint32_t pair = 0; pair < 2; ++pair) {
    const uint64_t buf = kBufs + 0x1000 * pair;
    memset(f.at(buf), 0, 12);
    memset(f.at(buf + 12), 0x30 + int(pair), 60);
    f.add_chain(2 * pair + 1, {{buf, 72, false}});
  }
  ASSERT_EQ(f.wait_used(1, 1).size(), 1u);
  ASSERT_EQ(f.wait_used(3, 1).size(), 1u);
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(sent.size(), 2u);
  std::set<uint8_t> marks{sent[0][12], sent[1][12]};
  EXPECT_EQ(marks, (std::set<uint8_t>{0x30, 0x31}));
}

// Received frames are steered by flow over the receive queues the guest
// enabled: every flow's frames land on one queue, in the order they came,
// and different flows use both queues.
TEST_F(NetTest, FlowsSpreadOverReceiveQueuesInOrder) {
  Frontend f;
  remake(f, 2);
  f.handshake(4, ~0ull);
  std::map<std::pair<uint32_t, uint16_t>, uint64_t> buf_of;  // (queue, head) -> buffer
  for (uint32_t q : {0u, 2u})
    for (int i = 0; i < 30; ++i) {
      const uint64_t buf = kBufs + 0x800 * (i + 30 * (q / 2));
      buf_of[{q, f.add_chain(q, {{buf, 0x800, true}}, i == 29)}] = buf;
    }
  wait_posted(40);
  constexpr int kFrames = 40, kFlows = 8;
  for (int i = 0; i < kFrames; ++i) inject(tcp_frame(uint16_t(1000 + i % kFlows), uint32_t(i)));
  for (int i = 0; i < 500 && uint16_t(f.used_idx(0) + f.used_idx(2)) < kFrames; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(f.used_idx(0) + f.used_idx(2), kFrames);
  std::map<uint16_t, std::set<uint32_t>> queues_of;   // flow -> queues it used
  std::map<uint16_t, std::vector<uint32_t>> seqs_of;  // flow -> payloads, in used order
  for (uint32_t q : {0u, 2u}) {
    auto used = f.wait_used(q, f.used_idx(q));
    for (auto& e : used) {
      const uint8_t* fr = f.at(buf_of.at({q, uint16_t(e.id)}) + 12);
      const uint16_t flow = uint16_t(fr[34] << 8 | fr[35]);
      uint32_t seq;
      memcpy(&seq, fr + 54, 4);
      queues_of[flow].insert(q);
      seqs_of[flow].push_back(seq);
    }
  }
  std::set<uint32_t> used_queues;
  for (auto& [flow, qs] : queues_of) {
    EXPECT_EQ(qs.size(), 1u) << "flow " << flow << " was split over queues";
    used_queues.insert(*qs.begin());
    EXPECT_TRUE(std::is_sorted(seqs_of[flow].begin(), seqs_of[flow].end())) << "flow " << flow;
    EXPECT_EQ(seqs_of[flow].size(), size_t(kFrames / kFlows));
  }
  EXPECT_EQ(used_queues.size(), 2u);
}

// The guest turns a queue pair off (fewer pairs, SET_VRING_ENABLE 0) while
// frames wait on its receive queue: they move to a queue that is on and
// reach the guest there; no slot is left waiting for the disabled ring.
TEST_F(NetTest, FramesWaitingOnADisabledQueueMoveToAnEnabledOne) {
  Frontend f;
  remake(f, 2);
  f.handshake(4, ~0ull);
  wait_posted(20);
  constexpr int kFrames = 16;
  for (int i = 0; i < kFrames; ++i) inject(tcp_frame(uint16_t(2000 + i), uint32_t(i)));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // all wait: no buffers yet
  EXPECT_EQ(f.used_idx(0) + f.used_idx(2), 0);
  ASSERT_EQ(f.call_ack(vhost_user::Req::kSetVringEnable, vhost_user::encode_vring_state({2, 0})),
            0u);
  for (int i = 0; i < kFrames; ++i)
    f.add_chain(0, {{kBufs + 0x800 * i, 0x800, true}}, i == kFrames - 1);
  ASSERT_EQ(f.wait_used(0, kFrames).size(), size_t(kFrames));
  EXPECT_EQ(f.used_idx(2), 0);
  // Each slot went back to the driver after its frame was delivered.
  wait_posted(net_channel_shape().slots / 2);
}

}  // namespace
}  // namespace axl::hv::io::net
