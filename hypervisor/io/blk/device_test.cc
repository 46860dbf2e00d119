// virtio-blk end to end inside one process: a synthetic front-end runs the
// real vhost-user handshake against make_blk_device() over a Unix socket,
// and a fake driver domain serves the real channel from an in-memory disk.
#include "hypervisor/io/blk/device.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <mutex>
#include <numeric>

#include "hypervisor/guest_device.h"
#include "hypervisor/io/testing/fake_driver.h"
#include "hypervisor/io/testing/frontend.h"

namespace axl::hv::io::blk {
namespace {

using vhost_user::Req;
using vhost_user::testing::Frontend;

constexpr uint64_t kDiskBytes = 4 << 20;

struct BlkTest : ::testing::Test {
  std::string dir, sock;
  std::vector<uint8_t> disk = std::vector<uint8_t>(kDiskBytes);
  std::atomic<int> flushes{0};
  std::atomic<bool> misbehave{false};
  std::atomic<int> delay_ms{0};
  // Protocol breaches the fake driver commits (FaultHooks' data-path faults).
  enum Fault { kNone, kDup, kBogusLen, kHold };
  std::atomic<int> fault{kNone};
  std::mutex causes_mu;
  std::vector<std::pair<std::string, int>> causes;  // (cause, owner) reported
  std::unique_ptr<testing::FakeDriver> driver;
  std::unique_ptr<GuestDevice> dev;
  Frontend fe;

  void SetUp() override {
    char tmpl[] = "/tmp/axl-blk-XXXXXX";
    dir = ::mkdtemp(tmpl);
    sock = dir + "/blk.sock";
    std::iota(disk.begin(), disk.end(), 0);
    auto shape = blk_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = start_driver(std::move(*ch.drv));
    BlkDeviceSpec spec{kDiskBytes, false, "serial-1"};
    dev = make_blk_device(sock, spec, std::move(*ch.hv));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(fe.connect(sock));
  }
  std::unique_ptr<testing::FakeDriver> start_driver(channel::DriverEnd end) {
    return std::make_unique<testing::FakeDriver>(
        std::move(end),
        [this](channel::DriverEnd& d,
               const channel::Request& r) -> std::optional<channel::Response> {
          channel::Response resp{r.id, 0, 0, 0};
          if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
          if (misbehave) {
            resp.id = r.id + 1000;  // an id that is not in flight
            return resp;
          }
          if (fault == kHold) return std::nullopt;
          uint64_t off = r.sector * 512;
          switch (static_cast<channel::Op>(r.op)) {
            case channel::Op::kBlkRead:
              memcpy(d.slot(r.id), disk.data() + off, r.len);
              resp.len = r.len;
              break;
            case channel::Op::kBlkWrite:
              memcpy(disk.data() + off, d.slot(r.id), r.len);
              break;
            case channel::Op::kBlkFlush:
              ++flushes;
              break;
            case channel::Op::kBlkGetId:
              memcpy(d.slot(r.id), "axl-test-disk", 13);
              resp.len = 13;
              break;
            default:
              resp.status = int32_t(channel::RespStatus::kUnsupported);
          }
          if (fault == kDup) d.push(resp);
          if (fault == kBogusLen) resp.len = r.len + 1;
          return resp;
        });
  }
  // Replaces the device with one that reports quarantines (owner 42).
  void supervised(uint32_t io_timeout_ms) {
    dev.reset();
    driver.reset();
    auto shape = blk_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = start_driver(std::move(*ch.drv));
    DeviceSupervision sup;
    sup.io_timeout_ms = io_timeout_ms;
    sup.owner = 42;
    sup.on_quarantine = [this](const std::string& cause, int owner) {
      std::lock_guard<std::mutex> g(causes_mu);
      causes.emplace_back(cause, owner);
    };
    dev = make_blk_device(sock, BlkDeviceSpec{kDiskBytes, false, ""}, std::move(*ch.hv), sup);
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(fe.connect(sock));  // no handshake yet: the tests do it
  }
  std::vector<std::pair<std::string, int>> wait_causes(size_t n) {
    for (int i = 0; i < 400; ++i) {
      {
        std::lock_guard<std::mutex> g(causes_mu);
        if (causes.size() >= n) return causes;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard<std::mutex> g(causes_mu);
    return causes;
  }
  void read_sector(int slot, uint64_t sector, bool kick = true) {
    put_hdr(slot, kTIn, sector);
    fe.add_chain(0,
                 {{kHdr + 16 * slot, 16, false},
                  {kData + 4096 * slot, 512, true},
                  {kStatus + slot, 1, true}},
                 kick);
  }

  // Replaces the device with one of `queues` request queues over a channel
  // of `slots` slots; `f` connects to it (the test does the handshake).
  void remake(Frontend& f, uint32_t slots, uint32_t queues) {
    dev.reset();
    driver.reset();
    auto ch = testing::make_channel(slots, blk_channel_shape().slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = start_driver(std::move(*ch.drv));
    BlkDeviceSpec spec{kDiskBytes, false, "s"};
    spec.queues = queues;
    dev = make_blk_device(sock, spec, std::move(*ch.hv));
    ASSERT_TRUE(dev->start().ok());
    ASSERT_TRUE(f.connect(sock));
  }
  // A 512-byte read of `sector` on queue q, in scratch slot `slot`.
  void read_on(Frontend& f, uint32_t q, int slot, uint64_t sector, bool kick = true) {
    put_hdr(f, slot, kTIn, sector);
    f.add_chain(q,
                {{kHdr + 16 * slot, 16, false},
                 {kData + 4096 * slot, 512, true},
                 {kStatus + slot, 1, true}},
                kick);
  }

  void TearDown() override {
    dev.reset();
    driver.reset();
    ::rmdir(dir.c_str());
  }

  // Guest-physical scratch layout for requests.
  static constexpr uint64_t kHdr = Frontend::kGpaBase + 0x100000;
  static constexpr uint64_t kData = Frontend::kGpaBase + 0x200000;
  static constexpr uint64_t kStatus = Frontend::kGpaBase + 0x180000;

  void put_hdr(int slot, uint32_t type, uint64_t sector) { put_hdr(fe, slot, type, sector); }
  static void put_hdr(Frontend& f, int slot, uint32_t type, uint64_t sector) {
    uint8_t h[16] = {};
    memcpy(h, &type, 4);
    memcpy(h + 8, &sector, 8);
    memcpy(f.at(kHdr + 16 * slot), h, 16);
  }
  // Waits for the misbehaving driver's violation, then replaces it: a fresh
  // channel and a well-behaved driver, to which the device is rebound.
  void replace_faulty_driver() {
    for (int i = 0; i < 200 && dev->stats().driver_violations == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(dev->stats().driver_violations, 1u);
    misbehave = false;
    rebind_fresh_driver();
  }
  // Rebinds the device to a fresh channel served by a new driver (tagged `owner`).
  void rebind_fresh_driver(int owner = 0) {
    driver.reset();
    auto shape = blk_channel_shape();
    auto ch = testing::make_channel(shape.slots, shape.slot_size);
    ASSERT_TRUE(ch.hv && ch.drv);
    driver = start_driver(std::move(*ch.drv));
    ASSERT_TRUE(io::rebind(*dev, std::move(*ch.hv), owner).ok());
  }
  uint8_t status(int slot) { return *fe.at(kStatus + slot); }
  // GET_VRING_BASE of queue q: the index the front-end resumes from (~0u
  // for a malformed reply).
  static uint32_t vring_base(Frontend& f, uint32_t q) {
    auto rep = f.call(Req::kGetVringBase, vhost_user::encode_vring_state({q, 0}));
    uint32_t base = ~0u;
    if (rep.size() == 8) memcpy(&base, rep.data() + 4, 4);
    return base;
  }
};

TEST_F(BlkTest, HandshakeAndConfig) {
  fe.handshake(1, ~0ull);
  EXPECT_TRUE(fe.features() & virtio::bit(kFFlush));
  EXPECT_TRUE(fe.features() & virtio::bit(virtio::kFVersion1));
  EXPECT_FALSE(fe.features() & virtio::bit(kFRo));
  // GET_CONFIG: capacity in sectors, size_max, seg_max, blk_size.
  vhost_user::Config c{0, 60, 0, std::vector<uint8_t>(60)};
  auto rep = fe.call(Req::kGetConfig, vhost_user::encode_config(c));
  ASSERT_EQ(rep.size(), 72u);
  uint64_t cap;
  uint32_t size_max, seg_max, blk_size;
  memcpy(&cap, rep.data() + 12, 8);
  memcpy(&size_max, rep.data() + 20, 4);
  memcpy(&seg_max, rep.data() + 24, 4);
  memcpy(&blk_size, rep.data() + 32, 4);
  EXPECT_EQ(cap, kDiskBytes / 512);
  EXPECT_EQ(uint64_t(size_max) * seg_max, blk_channel_shape().slot_size);
  EXPECT_EQ(blk_size, 512u);
  EXPECT_EQ(fe.call_u64(Req::kGetQueueNum), 1u);
  EXPECT_TRUE(fe.features() & virtio::bit(kFMq));
  uint16_t num_queues;
  memcpy(&num_queues, rep.data() + 12 + 34, 2);
  EXPECT_EQ(num_queues, 1u);
}

// VIRTIO_BLK_F_MQ (§5.2.5): two request queues over one channel; each
// request completes on the queue it came from, with its own data.
TEST_F(BlkTest, TwoQueuesEachCompleteTheirOwnRequests) {
  Frontend f;
  remake(f, blk_channel_shape().slots, 2);
  f.handshake(2, ~0ull);
  EXPECT_EQ(f.call_u64(Req::kGetQueueNum), 2u);
  vhost_user::Config c{0, 60, 0, std::vector<uint8_t>(60)};
  auto rep = f.call(Req::kGetConfig, vhost_user::encode_config(c));
  ASSERT_EQ(rep.size(), 72u);
  uint16_t num_queues;
  memcpy(&num_queues, rep.data() + 12 + 34, 2);
  EXPECT_EQ(num_queues, 2u);
  std::vector<uint16_t> heads[2];
  for (int i = 0; i < 10; ++i)
    for (uint32_t q = 0; q < 2; ++q) {
      const int slot = int(q) * 16 + i;
      read_on(f, q, slot, uint64_t(slot));
    }
  for (uint32_t q = 0; q < 2; ++q) {
    auto u = f.wait_used(q, 10);
    ASSERT_EQ(u.size(), 10u);
    for (auto& e : u) {
      EXPECT_EQ(e.id % 3, 0u);  // a head of this queue's 3-descriptor chains
      EXPECT_LT(e.id, 30u);
      EXPECT_EQ(e.len, 513u);
    }
    for (int i = 0; i < 10; ++i) {
      const int slot = int(q) * 16 + i;
      EXPECT_EQ(*f.at(kStatus + slot), kSOk);
      EXPECT_EQ(0, memcmp(f.at(kData + 4096 * slot), disk.data() + 512 * slot, 512));
    }
  }
  EXPECT_EQ(dev->stats().requests, 20u);
}

// Queues share the channel's slots: with 4 slots and 20 requests on each of
// two queues, both drain completely (served round robin, neither starves).
TEST_F(BlkTest, QueuesShareScarceSlots) {
  Frontend f;
  remake(f, 4, 2);
  f.handshake(2, ~0ull);
  for (int i = 0; i < 20; ++i) {
    read_on(f, 0, i, 19 - uint64_t(i), i == 19);
    read_on(f, 1, 32 + i, 100 + uint64_t(i), i == 19);
  }
  ASSERT_EQ(f.wait_used(0, 20).size(), 20u);
  ASSERT_EQ(f.wait_used(1, 20).size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(*f.at(kStatus + i), kSOk);
    EXPECT_EQ(0, memcmp(f.at(kData + 4096 * i), disk.data() + 512 * (19 - i), 512));
    EXPECT_EQ(*f.at(kStatus + 32 + i), kSOk);
    EXPECT_EQ(0, memcmp(f.at(kData + 4096 * (32 + i)), disk.data() + 512 * (100 + i), 512));
  }
}

// GET_VRING_BASE on one queue waits for that queue's requests only; the
// other queue's requests complete on it afterwards, and it serves on.
TEST_F(BlkTest, StoppingOneQueueLeavesTheOtherServing) {
  Frontend f;
  remake(f, blk_channel_shape().slots, 2);
  f.handshake(2, ~0ull);
  delay_ms = 100;
  read_on(f, 0, 0, 5);
  read_on(f, 1, 1, 6);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // both at the driver
  EXPECT_EQ(vring_base(f, 1), 1u);
  EXPECT_EQ(f.used_idx(1), 1);
  EXPECT_EQ(*f.at(kStatus + 1), kSOk);
  ASSERT_EQ(f.wait_used(0, 1).size(), 1u);
  EXPECT_EQ(0, memcmp(f.at(kData), disk.data() + 5 * 512, 512));
  delay_ms = 0;
  read_on(f, 0, 2, 7);
  ASSERT_EQ(f.wait_used(0, 1).size(), 1u);
  EXPECT_EQ(0, memcmp(f.at(kData + 2 * 4096), disk.data() + 7 * 512, 512));
}

// A request of several parts waiting for slots another queue holds is
// served, not lost, when its own queue is stopped: the other queue's
// requests finish first.
TEST_F(BlkTest, StoppingAQueueServesItsWaitingRequestPastOtherQueues) {
  Frontend f;
  remake(f, 4, 2);
  f.handshake(2, ~0ull & ~(virtio::bit(kFSegMax) | virtio::bit(kFSizeMax)));
  delay_ms = 30;
  for (int i = 0; i < 3; ++i) read_on(f, 0, i, uint64_t(i));  // 3 of the 4 slots
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const uint32_t big = 2 * blk_channel_shape().slot_size + 1024;  // three parts
  for (uint32_t i = 0; i < big; ++i) f.at(kData + 0x40000)[i] = uint8_t(i * 11 + 3);
  put_hdr(f, 8, kTOut, 64);
  f.add_chain(1,
              {{kHdr + 16 * 8, 16, false}, {kData + 0x40000, big, false}, {kStatus + 8, 1, true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // popped, waiting for slots
  EXPECT_EQ(vring_base(f, 1), 1u);
  EXPECT_EQ(f.used_idx(1), 1);
  EXPECT_EQ(*f.at(kStatus + 8), kSOk);
  EXPECT_EQ(0, memcmp(disk.data() + 64 * 512, f.at(kData + 0x40000), big));
  ASSERT_EQ(f.wait_used(0, 3).size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*f.at(kStatus + i), kSOk);
}

TEST_F(BlkTest, ReadWriteFlushGetId) {
  fe.handshake(1, ~0ull);
  // Read 8 KiB at sector 3.
  put_hdr(0, kTIn, 3);
  fe.add_chain(
      0, {{kHdr, 16, false}, {kData, 4096, true}, {kData + 4096, 4096, true}, {kStatus, 1, true}});
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].len, 8193u);
  EXPECT_EQ(status(0), kSOk);
  EXPECT_EQ(0, memcmp(fe.at(kData), disk.data() + 3 * 512, 8192));

  // Write 1 KiB at sector 10, then flush, then read back.
  std::vector<uint8_t> pattern(1024);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(i * 7 + 1);
  memcpy(fe.at(kData + 0x10000), pattern.data(), pattern.size());
  put_hdr(1, kTOut, 10);
  fe.add_chain(0, {{kHdr + 16, 16, false}, {kData + 0x10000, 1024, false}, {kStatus + 1, 1, true}},
               false);
  put_hdr(2, kTFlush, 0);
  fe.add_chain(0, {{kHdr + 32, 16, false}, {kStatus + 2, 1, true}});
  u = fe.wait_used(0, 2);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(status(1), kSOk);
  EXPECT_EQ(status(2), kSOk);
  EXPECT_EQ(flushes.load(), 1);
  EXPECT_EQ(0, memcmp(disk.data() + 10 * 512, pattern.data(), pattern.size()));

  put_hdr(3, kTGetId, 0);
  memset(fe.at(kData + 0x20000), 0xff, 20);
  fe.add_chain(0, {{kHdr + 48, 16, false}, {kData + 0x20000, 20, true}, {kStatus + 3, 1, true}});
  u = fe.wait_used(0, 1);
  EXPECT_EQ(status(3), kSOk);
  EXPECT_EQ(0, memcmp(fe.at(kData + 0x20000), "axl-test-disk\0\0\0\0\0\0\0", 20));

  auto st = dev->stats();
  EXPECT_EQ(st.requests, 4u);
  EXPECT_EQ(st.bad_descriptors, 0u);
  EXPECT_EQ(st.driver_violations, 0u);
}

TEST_F(BlkTest, ErrorsGoToTheGuestAsStatus) {
  fe.handshake(1, ~0ull);
  put_hdr(0, kTIn, kDiskBytes / 512 - 1);  // runs past the end
  fe.add_chain(0, {{kHdr, 16, false}, {kData, 1024, true}, {kStatus, 1, true}});
  put_hdr(1, 99, 0);  // unknown type
  fe.add_chain(0, {{kHdr + 16, 16, false}, {kStatus + 1, 1, true}});
  put_hdr(2, kTIn, 0);  // not a whole number of sectors
  fe.add_chain(0, {{kHdr + 32, 16, false}, {kData, 1000, true}, {kStatus + 2, 1, true}});
  put_hdr(3, kTIn, 0);  // data outside guest RAM
  fe.add_chain(0, {{kHdr + 48, 16, false}, {0x10, 512, true}, {kStatus + 3, 1, true}});
  put_hdr(4, kTIn, ~0ull / 2);  // sector arithmetic that would overflow
  fe.add_chain(0, {{kHdr + 64, 16, false}, {kData, 512, true}, {kStatus + 4, 1, true}});
  auto u = fe.wait_used(0, 5);
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(status(0), kSIoErr);
  EXPECT_EQ(status(1), kSUnsupp);
  EXPECT_EQ(status(2), kSIoErr);
  EXPECT_EQ(u[3].len, 0u);  // rejected chain handed back untouched
  EXPECT_EQ(status(4), kSIoErr);
  EXPECT_EQ(dev->stats().bad_descriptors, 1u);
  EXPECT_GE(dev->stats().iommu_faults, 1u);
}

// A guest that sends malformed chains in a loop: each is handed back and
// counted, the log gets the first few and then one per power of two (not
// one line each), and the device serves on.
TEST_F(BlkTest, MalformedChainsInALoopAreCountedNotLoggedEachTime) {
  fe.handshake(1, ~0ull);
  constexpr int kBad = 300;
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < kBad; ++i) {
    // A header and no status byte: refused.
    fe.add_chain(0, {{kHdr, 16, false}});
    auto u = fe.wait_used(0, 1);
    ASSERT_EQ(u.size(), 1u);
    ASSERT_EQ(u[0].len, 0u);
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = 0; (at = log.find("bad chain", at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(dev->stats().bad_descriptors, uint64_t(kBad));
  EXPECT_EQ(lines, 13u);  // the 1st..8th, 16th, 32nd, 64th, 128th, 256th
  EXPECT_NE(log.find("(256 so far)"), std::string::npos);
  // Still serving.
  read_sector(1, 3);
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(1), 0);
}

// A driver that did not negotiate SIZE_MAX/SEG_MAX (OVMF) may send one
// descriptor larger than a channel slot: it is served whole, in parts.
TEST_F(BlkTest, ARequestLargerThanASlotIsServedInParts) {
  fe.handshake(1, ~0ull & ~(virtio::bit(kFSegMax) | virtio::bit(kFSizeMax)));
  const uint32_t big = 2 * blk_channel_shape().slot_size + 1024;  // three parts
  std::vector<uint8_t> pattern(big);
  for (size_t i = 0; i < big; ++i) pattern[i] = uint8_t(i * 13 + 5);
  memcpy(fe.at(kData), pattern.data(), big);
  put_hdr(0, kTOut, 3);
  fe.add_chain(0, {{kHdr, 16, false}, {kData, big, false}, {kStatus, 1, true}});
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(0), kSOk);
  EXPECT_EQ(0, memcmp(disk.data() + 3 * 512, pattern.data(), big));
  memset(fe.at(kData), 0, big);
  put_hdr(1, kTIn, 3);
  fe.add_chain(0, {{kHdr + 16, 16, false}, {kData, big, true}, {kStatus + 1, 1, true}});
  u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(1), kSOk);
  EXPECT_EQ(u[0].len, big + 1);
  EXPECT_EQ(0, memcmp(fe.at(kData), pattern.data(), big));
  EXPECT_EQ(dev->stats().requests, 2u);
}

TEST_F(BlkTest, ManyRequestsInOneKick) {
  fe.handshake(1, ~0ull);
  // More requests than Frontend's ring can take at once would wrap our
  // simple descriptor allocator; 3 descriptors x 20 = 60 < 64.
  for (int i = 0; i < 20; ++i) {
    put_hdr(i, kTIn, i);
    fe.add_chain(0,
                 {{kHdr + 16 * i, 16, false}, {kData + 512 * i, 512, true}, {kStatus + i, 1, true}},
                 i == 19);
  }
  auto u = fe.wait_used(0, 20);
  ASSERT_EQ(u.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(status(i), kSOk);
    EXPECT_EQ(0, memcmp(fe.at(kData + 512 * i), disk.data() + 512 * i, 512));
  }
}

TEST_F(BlkTest, RequestsWaitInTheRingWhenSlotsAreBusy) {
  // A 4-slot channel and 20 requests: 16 of them wait in the virtqueue and
  // go out as completions free slots.
  dev.reset();
  driver.reset();
  auto ch = testing::make_channel(4, blk_channel_shape().slot_size);
  ASSERT_TRUE(ch.hv && ch.drv);
  driver = start_driver(std::move(*ch.drv));
  dev = make_blk_device(sock, BlkDeviceSpec{kDiskBytes, false, ""}, std::move(*ch.hv));
  ASSERT_TRUE(dev->start().ok());
  Frontend fe2;
  ASSERT_TRUE(fe2.connect(sock));
  fe2.handshake(1, ~0ull);
  for (int i = 0; i < 20; ++i) {
    uint8_t h[16] = {};
    uint64_t sector = 19 - i;
    memcpy(h + 8, &sector, 8);
    memcpy(fe2.at(kHdr + 16 * i), h, 16);
    fe2.add_chain(
        0, {{kHdr + 16 * i, 16, false}, {kData + 512 * i, 512, true}, {kStatus + i, 1, true}},
        i == 19);
  }
  auto u = fe2.wait_used(0, 20);
  ASSERT_EQ(u.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(*fe2.at(kStatus + i), kSOk);
    EXPECT_EQ(0, memcmp(fe2.at(kData + 512 * i), disk.data() + 512 * (19 - i), 512));
  }
}

TEST_F(BlkTest, GetVringBaseWaitsForRequestsInFlight) {
  fe.handshake(1, ~0ull);
  delay_ms = 100;  // a slow driver
  put_hdr(0, kTIn, 2);
  fe.add_chain(0, {{kHdr, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // popped, at the driver
  EXPECT_EQ(vring_base(fe, 0), 1u);
  // Completed before the reply: resuming from `base` loses nothing.
  EXPECT_EQ(fe.used_idx(0), 1);
  EXPECT_EQ(status(0), kSOk);
  EXPECT_EQ(0, memcmp(fe.at(kData), disk.data() + 1024, 512));
}

TEST_F(BlkTest, ReadOnlyRejectsWrites) {
  dev.reset();
  auto shape = blk_channel_shape();
  auto ch = testing::make_channel(shape.slots, shape.slot_size);
  dev = make_blk_device(sock, BlkDeviceSpec{kDiskBytes, true, ""}, std::move(*ch.hv));
  ASSERT_TRUE(dev->start().ok());
  Frontend fe2;
  ASSERT_TRUE(fe2.connect(sock));
  fe2.handshake(1, ~0ull);
  EXPECT_TRUE(fe2.features() & virtio::bit(kFRo));
  uint8_t h[16] = {1};
  memcpy(fe2.at(kHdr), h, 16);
  fe2.add_chain(0, {{kHdr, 16, false}, {kData, 512, false}, {kStatus, 1, true}});
  fe2.wait_used(0, 1);
  EXPECT_EQ(*fe2.at(kStatus), kSIoErr);
}

TEST_F(BlkTest, DriverViolationQuarantinesChannel) {
  fe.handshake(1, ~0ull);
  misbehave = true;
  put_hdr(0, kTIn, 0);
  fe.add_chain(0, {{kHdr, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
  for (int i = 0; i < 200 && dev->stats().driver_violations == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(dev->stats().driver_violations, 1u);
  EXPECT_EQ(fe.used_idx(0), 0);  // the guest sees nothing, the request waits
}

TEST_F(BlkTest, RebindReplaysInFlightRequestsInOrder) {
  fe.handshake(1, ~0ull);
  misbehave = true;
  // A write then a read of the same sector: the replay must keep the order.
  memset(fe.at(kData), 0x5a, 512);
  put_hdr(0, kTOut, 7);
  fe.add_chain(0, {{kHdr, 16, false}, {kData, 512, false}, {kStatus, 1, true}}, false);
  put_hdr(1, kTIn, 7);
  fe.add_chain(0, {{kHdr + 16, 16, false}, {kData + 4096, 512, true}, {kStatus + 1, 1, true}});
  replace_faulty_driver();
  auto u = fe.wait_used(0, 2);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(status(0), kSOk);
  EXPECT_EQ(status(1), kSOk);
  EXPECT_EQ(*fe.at(kData + 4096), 0x5a);
  EXPECT_EQ(disk[7 * 512], 0x5a);
}

// A driver replaced with requests in flight on two queues: each replayed
// request completes on its own queue, and a queue's write-then-read of one
// sector keeps its order.
TEST_F(BlkTest, RebindReplaysEveryQueuesRequestsOnThatQueue) {
  Frontend f;
  remake(f, blk_channel_shape().slots, 2);
  f.handshake(2, ~0ull);
  misbehave = true;
  memset(f.at(kData), 0x6b, 512);
  put_hdr(f, 0, kTOut, 7);
  f.add_chain(0, {{kHdr, 16, false}, {kData, 512, false}, {kStatus, 1, true}}, false);
  read_on(f, 0, 1, 7);
  read_on(f, 1, 2, 9);
  replace_faulty_driver();
  ASSERT_EQ(f.wait_used(0, 2).size(), 2u);
  ASSERT_EQ(f.wait_used(1, 1).size(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*f.at(kStatus + i), kSOk);
  EXPECT_EQ(*f.at(kData + 4096), 0x6b);
  EXPECT_EQ(disk[7 * 512], 0x6b);
  EXPECT_EQ(0, memcmp(f.at(kData + 2 * 4096), disk.data() + 9 * 512, 512));
}

TEST_F(BlkTest, DuplicateCompletionIsReportedWithItsId) {
  supervised(0);
  fe.handshake(1, ~0ull);
  fault = kDup;
  read_sector(0, 1);
  auto c = wait_causes(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].first.rfind("protocol violation: duplicate completion id ", 0), 0u) << c[0].first;
  EXPECT_EQ(c[0].second, 42);
  EXPECT_EQ(dev->stats().driver_violations, 1u);
  // The first completion was valid and reached the guest.
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(0), kSOk);
}

TEST_F(BlkTest, LengthBeyondWhatWasPostedIsReported) {
  supervised(0);
  fe.handshake(1, ~0ull);
  fault = kBogusLen;
  read_sector(0, 1);
  auto c = wait_causes(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].first, "protocol violation: length 513 beyond the 512 posted for id 0");
  EXPECT_EQ(fe.used_idx(0), 0);  // nothing completed to the guest
}

TEST_F(BlkTest, UnknownIdIsReportedAsNeverIssued) {
  supervised(0);
  fe.handshake(1, ~0ull);
  misbehave = true;
  read_sector(0, 1);
  auto c = wait_causes(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].first, "protocol violation: completion id 1000 was never issued");
}

TEST_F(BlkTest, WatchdogQuarantinesAStalledDriverAndRebindReplays) {
  supervised(100);
  fe.handshake(1, ~0ull);
  fault = kHold;  // requests are taken and never answered
  read_sector(0, 2);
  auto c = wait_causes(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].first.rfind("stalled: request 0 outstanding for ", 0), 0u) << c[0].first;
  EXPECT_EQ(c[0].second, 42);
  // The new instance (owner 43) serves the replayed request.
  fault = kNone;
  rebind_fresh_driver(43);
  auto u = fe.wait_used(0, 1);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(status(0), kSOk);
  EXPECT_EQ(*fe.at(kData), disk[2 * 512]);
  // A stall of the new instance names it.
  fault = kHold;
  read_sector(1, 3);
  c = wait_causes(2);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].second, 43);
}

TEST_F(BlkTest, WatchdogLeavesAnIdleOrBusyButProgressingDriverAlone) {
  supervised(200);
  fe.handshake(1, ~0ull);
  delay_ms = 20;  // slow, but each request completes well within the deadline
  for (int i = 0; i < 20; ++i) {
    read_sector(i % 8, uint64_t(i));
    ASSERT_EQ(fe.wait_used(0, 1).size(), 1u);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // idle, nothing outstanding
  EXPECT_TRUE(wait_causes(0).empty());
  EXPECT_EQ(dev->stats().driver_violations, 0u);
}

TEST_F(BlkTest, ProtocolRejections) {
  EXPECT_EQ(fe.call_ack(Req::kSetOwner, {}), 0u);
  EXPECT_NE(fe.call_ack(Req::kSetOwner, {}), 0u);  // second owner
  EXPECT_NE(fe.call_ack(Req::kSetFeatures, vhost_user::encode_u64(1ull << 40)), 0u);
  EXPECT_NE(fe.call_ack(Req::kSetVringNum, vhost_user::encode_vring_state({0, 100})), 0u);
  EXPECT_NE(fe.call_ack(Req::kSetVringNum, vhost_user::encode_vring_state({0, 65536})), 0u);
  EXPECT_NE(fe.call_ack(Req::kSetVringNum, vhost_user::encode_vring_state({5, 64})), 0u);
  EXPECT_EQ(fe.call_ack(Req::kSetVringNum, vhost_user::encode_vring_state({0, 256})), 0u);
  EXPECT_NE(fe.call_ack(static_cast<Req>(77), {}), 0u);  // unknown: error, connection kept
  EXPECT_NE(fe.call_u64(Req::kGetFeatures), 0u);
  // A malformed message closes the connection; QEMU reconnects.
  EXPECT_TRUE(
      vhost_user::send_request(fe.sock(), Req::kSetVringNum, 0, std::vector<uint8_t>(3)).ok());
  char b;
  EXPECT_EQ(::recv(fe.sock(), &b, 1, 0), 0);
  Frontend again;
  ASSERT_TRUE(again.connect(sock));
  again.handshake(1, ~0ull);
}

}  // namespace
}  // namespace axl::hv::io::blk
