// The net driver against a real TAP, inside a network namespace this test
// creates and deletes itself; no traffic leaves that namespace.
#include "driverdom/net/tap.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>

#include "common/schema/driver.capnp.h"
#include "driverdom/net/net_driver.h"
#include "driverdom/testing/fake_hypervisor.h"

namespace axl::driverdom::net {
namespace {

using channel::Op;
using channel::Request;
using channel::RespStatus;
using testing::FakeHypervisor;

constexpr const char* kTapName = "axltap0";
constexpr uint8_t kHostIp[4] = {10, 213, 0, 1};
constexpr uint8_t kGuestIp[4] = {10, 213, 0, 2};
constexpr uint8_t kGuestMac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr uint32_t kSlots = 16;
constexpr uint32_t kSlotSize = 2048;

bool sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

class NetnsTapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a network namespace and a TAP";
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/net/tun";
    ns_ = "axl-ddtest-" + std::to_string(::getpid());
    sh("ip netns del " + ns_);  // a leftover from a crashed run with the same pid
    if (!sh("ip netns add " + ns_)) GTEST_SKIP() << "cannot create a network namespace";
    created_ = true;
  }

  void TearDown() override {
    if (created_) {
      EXPECT_TRUE(sh("ip netns del " + ns_)) << "namespace " << ns_ << " left behind";
    }
  }

  // Opens a TAP inside the namespace: setns() moves only the calling thread,
  // so a short-lived thread does it and the test's own thread stays put.
  UniqueFd open_tap(short flags, int vnet_hdr_size) {
    UniqueFd tap;
    std::string err;
    std::thread t([&] {
      UniqueFd ns(::open(("/var/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || ::setns(ns.get(), CLONE_NEWNET) < 0) {
        err = std::string("setns: ") + strerror(errno);
        return;
      }
      UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
      ifreq ifr{};
      strncpy(ifr.ifr_name, kTapName, IFNAMSIZ - 1);
      ifr.ifr_flags = flags;
      if (!fd || ::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
        err = std::string("TUNSETIFF: ") + strerror(errno);
        return;
      }
      if (vnet_hdr_size && ::ioctl(fd.get(), TUNSETVNETHDRSZ, &vnet_hdr_size) < 0) {
        err = std::string("TUNSETVNETHDRSZ: ") + strerror(errno);
        return;
      }
      tap = std::move(fd);
    });
    t.join();
    EXPECT_TRUE(err.empty()) << err;
    return tap;
  }

  // Sends one UDP datagram from inside the namespace to the guest's address;
  // with a static neighbour entry the kernel puts it on the TAP at once.
  bool send_udp_to_guest(uint8_t tag) {
    bool ok = false;
    std::thread t([&] {
      UniqueFd ns(::open(("/var/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || ::setns(ns.get(), CLONE_NEWNET) < 0) return;
      UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(9);
      memcpy(&to.sin_addr, kGuestIp, 4);
      uint8_t payload[16];
      memset(payload, tag, sizeof payload);
      ok = s && ::sendto(s.get(), payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&to),
                         sizeof to) == ssize_t(sizeof payload);
    });
    t.join();
    return ok;
  }

  void standby_promotion(bool tx_first);

  std::string ns_;
  bool created_ = false;
};

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

// A warm standby holds the TAP but never reads it: frames the host sends
// meanwhile stay queued in the TAP for whoever is active.  Once the standby
// sees its first request (it was promoted), it reads them and the guest gets
// every one.  With `tx_first` the first request is a guest's TX and the RX
// buffers come a while later (the hypervisor's replay order is not promised):
// the driver must leave the frames in the TAP until a buffer is posted, not
// read and drop them.
void NetnsTapTest::standby_promotion(bool tx_first) {
  UniqueFd tap = open_tap(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12);
  ASSERT_TRUE(tap.valid());
  UniqueFd peek(::dup(tap.get()));  // the test's own view of the TAP's queue
  ASSERT_TRUE(sh("ip -n " + ns_ + " link set " + kTapName + " up"));
  ASSERT_TRUE(sh("ip -n " + ns_ + " addr add 10.213.0.1/24 dev " + kTapName));
  ASSERT_TRUE(sh("ip -n " + ns_ + " neigh replace 10.213.0.2 lladdr 52:54:00:12:34:56 dev " +
                 kTapName + " nud permanent"));
  // IPv6 would add router solicitations and the like; keep the queue to our frames.
  sh("ip netns exec " + ns_ + " sysctl -qw net.ipv6.conf." + kTapName + ".disable_ipv6=1");

  boost::asio::io_context io;
  NetDriver drv(io, std::move(tap));
  ASSERT_TRUE(drv.start(NetDriver::Mode::kStandby).ok());
  EXPECT_FALSE(drv.tap_live());
  auto ch = testing::make_channel(kSlots, kSlotSize);
  ASSERT_TRUE(ch.ok());
  auto mapping = channel::Mapping::map(ch->send_fds.mem.get(), kSlots, kSlotSize);
  ASSERT_TRUE(mapping.ok());
  AttachSpec spec;
  spec.device_id = 1;
  spec.slots = kSlots;
  spec.slot_size = kSlotSize;
  spec.kind = Kind::kNet;
  std::copy(kGuestMac, kGuestMac + 6, spec.net.mac.begin());
  ASSERT_TRUE(
      drv.attach(spec,
                 channel::DriverEnd(std::move(mapping).value(), std::move(ch->send_fds.req_kick),
                                    std::move(ch->send_fds.resp_kick)),
                 {})
          .ok());

  constexpr int kFrames = 5;
  for (int i = 0; i < kFrames; ++i) ASSERT_TRUE(send_udp_to_guest(uint8_t(0xa0 + i)));
  for (int i = 0; i < 20; ++i) io.run_for(std::chrono::milliseconds(5));
  EXPECT_EQ(drv.stats().tap_rx_frames, 0u) << "the standby read the TAP";
  EXPECT_TRUE(readable(peek.get())) << "the host's frames are no longer queued in the TAP";

  channel::HvEnd& end = *ch->hv;
  constexpr uint32_t kTxId = 8;
  if (tx_first) {
    // A broadcast of an ethertype nobody speaks (IEEE 802 local experimental):
    // it leaves through the TAP and the host answers nothing.
    uint8_t f[12 + 60] = {};
    memset(f + 12, 0xff, 6);
    memcpy(f + 12 + 6, kGuestMac, 6);
    f[12 + 12] = 0x88, f[12 + 13] = 0xb5;
    memcpy(end.slot(kTxId), f, sizeof f);
    end.push(Request{kTxId, uint16_t(Op::kNetTx), 0, 0, kTxId * kSlotSize, sizeof f, 0});
    end.kick();
    for (int i = 0; i < 20; ++i) io.run_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(drv.tap_live()) << "a TX request did not promote the standby";
    EXPECT_EQ(drv.stats().rx_no_buffer, 0u) << "frames read from the TAP with no RX buffer";
    EXPECT_TRUE(readable(peek.get())) << "the promoted standby took frames it had no buffer for";
  }
  // The hypervisor posts RX buffers on the standby's channel.
  for (uint32_t id = 0; id < 8; ++id)
    end.push(Request{id, uint16_t(Op::kNetRxPost), 0, 0, id * kSlotSize, kSlotSize, 0});
  end.kick();
  std::vector<uint8_t> tags;
  for (int i = 0; i < 200 && tags.size() < size_t(kFrames); ++i) {
    io.run_for(std::chrono::milliseconds(5));
    end.ack_doorbell();
    for (;;) {
      auto r = end.pop();
      ASSERT_TRUE(r.ok());
      if (!r->has_value()) break;
      ASSERT_EQ((**r).status, int32_t(RespStatus::kOk));
      if ((**r).id == kTxId) continue;  // the TX's completion
      const uint8_t* eth = end.slot((**r).id) + 12;
      // IPv4/UDP to port 9: the payload follows 14 + 20 + 8 bytes.
      if (eth[12] == 0x08 && eth[13] == 0x00 && eth[14 + 9] == 17) tags.push_back(eth[14 + 28]);
    }
  }
  EXPECT_TRUE(drv.tap_live());
  ASSERT_EQ(tags.size(), size_t(kFrames)) << "frames lost across the promotion";
  for (int i = 0; i < kFrames; ++i) EXPECT_EQ(tags[i], uint8_t(0xa0 + i)) << "frame " << i;
  EXPECT_EQ(drv.stats().rx_no_buffer, 0u);
}

TEST_F(NetnsTapTest, StandbyLeavesTheTapAloneUntilPromoted) { standby_promotion(false); }

TEST_F(NetnsTapTest, PromotedByATxTheStandbyLeavesFramesQueuedUntilRxBuffersCome) {
  standby_promotion(true);
}

TEST_F(NetnsTapTest, PrepareAcceptsOnlyATapWithTheVnetHeader) {
  {
    Tap plain(open_tap(IFF_TAP | IFF_NO_PI, 0));
    EXPECT_FALSE(plain.prepare().ok());
  }
  {
    Tap tun(open_tap(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, 12));
    EXPECT_FALSE(tun.prepare().ok());
  }
  {
    Tap wrong(open_tap(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 10));
    EXPECT_FALSE(wrong.prepare().ok());
  }
  Tap good(open_tap(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12));
  EXPECT_TRUE(good.prepare().ok());
  EXPECT_TRUE(::fcntl(good.fd(), F_GETFL) & O_NONBLOCK);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  ::close(pipefd[1]);
  EXPECT_FALSE(Tap(UniqueFd(pipefd[0])).prepare().ok());
}

// A guest NIC behind the driver asks the namespace's kernel for the host's
// MAC (ARP) and gets the answer: guest -> TAP and TAP -> guest through the
// real binary, the vnet header carried both ways.
TEST_F(NetnsTapTest, GuestArpsTheHostThroughTheTap) {
  UniqueFd tap = open_tap(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12);
  ASSERT_TRUE(tap.valid());
  ASSERT_TRUE(sh("ip -n " + ns_ + " link set " + kTapName + " up"));
  ASSERT_TRUE(sh("ip -n " + ns_ + " addr add 10.213.0.1/24 dev " + kTapName));

  FakeHypervisor hv;
  ASSERT_TRUE(hv.listening());
  ASSERT_TRUE(hv.spawn("net0", "net", tap.get()).ok());
  tap.reset();  // the driver holds it now
  ASSERT_TRUE(hv.accept().ok());
  auto hello = hv.recv();
  ASSERT_TRUE(hello.ok()) << hello.error().message;

  auto ch = testing::make_channel(kSlots, kSlotSize);
  ASSERT_TRUE(ch.ok());
  {
    capnp::MallocMessageBuilder b;
    auto at = b.initRoot<schema::DriverMsg>().initAttach();
    at.setDeviceId(1);
    at.setSlots(kSlots);
    at.setSlotSize(kSlotSize);
    at.initNet().setMac(kj::arrayPtr(kGuestMac, 6));
    ASSERT_TRUE(wire::send(hv.conn(), b,
                           {ch->send_fds.mem.get(), ch->send_fds.req_kick.get(),
                            ch->send_fds.resp_kick.get()})
                    .ok());
    auto m = hv.recv();
    ASSERT_TRUE(m.ok()) << m.error().message;
    auto a = m->root<schema::DriverMsg>().getAttached();
    ASSERT_TRUE(a.getOk()) << a.getError().cStr();
  }
  channel::HvEnd& end = *ch->hv;
  for (uint32_t id = 0; id < 8; ++id)
    end.push(Request{id, uint16_t(Op::kNetRxPost), 0, 0, id * kSlotSize, kSlotSize, 0});

  // vnet header (all zero: no offloads), then ARP who-has 10.213.0.1 tell 10.213.0.2.
  uint8_t f[12 + 60] = {};
  uint8_t* eth = f + 12;
  memset(eth, 0xff, 6);
  memcpy(eth + 6, kGuestMac, 6);
  eth[12] = 0x08, eth[13] = 0x06;
  uint8_t* arp = eth + 14;
  const uint8_t arp_head[8] = {0, 1, 0x08, 0, 6, 4, 0, 1};
  memcpy(arp, arp_head, 8);
  memcpy(arp + 8, kGuestMac, 6);
  memcpy(arp + 14, kGuestIp, 4);
  memcpy(arp + 24, kHostIp, 4);
  constexpr uint32_t kTxId = 8;
  memcpy(end.slot(kTxId), f, sizeof f);
  end.push(Request{kTxId, uint16_t(Op::kNetTx), 0, 0, kTxId * kSlotSize, sizeof f, 0});
  end.kick();

  bool tx_done = false, got_reply = false;
  for (int i = 0; i < 500 && !(tx_done && got_reply); ++i) {
    if (!testing::wait_readable(end.resp_kick_fd(), 10)) continue;
    end.ack_doorbell();
    for (;;) {
      auto r = end.pop();
      ASSERT_TRUE(r.ok());
      if (!r->has_value()) break;
      const channel::Response& resp = **r;
      ASSERT_EQ(resp.status, int32_t(RespStatus::kOk));
      if (resp.id == kTxId) {
        tx_done = true;
        continue;
      }
      ASSERT_LT(resp.id, 8u);
      ASSERT_GE(resp.len, 12u + 42u);
      const uint8_t* rx = end.slot(resp.id) + 12;
      // Other frames (IPv6 neighbour discovery from the new link) may come too.
      if (rx[12] == 0x08 && rx[13] == 0x06 && rx[14 + 7] == 2) {
        const uint8_t* hdr = end.slot(resp.id);
        EXPECT_EQ(hdr[10] | hdr[11] << 8, 1);              // num_buffers
        EXPECT_EQ(memcmp(rx, kGuestMac, 6), 0);            // unicast to the guest
        EXPECT_EQ(memcmp(rx + 14 + 14, kHostIp, 4), 0);    // sender: the host side
        EXPECT_EQ(memcmp(rx + 14 + 18, kGuestMac, 6), 0);  // target: us
        got_reply = true;
      }
    }
  }
  EXPECT_TRUE(tx_done);
  EXPECT_TRUE(got_reply) << "no ARP reply came back through the TAP";
  hv.hang_up();
  EXPECT_EQ(hv.wait_exit(), std::optional<int>(0));
}

}  // namespace
}  // namespace axl::driverdom::net
