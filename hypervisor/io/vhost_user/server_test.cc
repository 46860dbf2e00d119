// Robustness of the protocol state machine against a hostile front-end:
// random and half-valid message streams must never crash the device thread,
// and a well-behaved front-end must still be served afterwards.
#include "hypervisor/io/vhost_user/server.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <atomic>
#include <random>

#include "hypervisor/io/testing/frontend.h"

namespace axl::vhost_user {
namespace {

class FakeBackend : public Backend {
 public:
  uint64_t features() const override {
    return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingEventIdx) |
           virtio::bit(virtio::kFRingIndirectDesc);
  }
  uint32_t queue_count() const override { return 2; }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override {
    if (uint64_t(offset) + size > 16) return make_error("beyond config");
    return std::vector<uint8_t>(size, 7);
  }
  void queue_started(uint32_t, virtio::Virtqueue& vq) override {
    vq_ = &vq;
    ++started_;
  }
  void queue_stopped(uint32_t) override { vq_ = nullptr; }
  void queue_kicked(uint32_t) override {
    // Drain whatever the ring holds, as a device would.
    for (int i = 0; vq_ && i < 100; ++i) {
      auto p = vq_->pop();
      if (p.chain)
        vq_->push(p.chain->head, 0);
      else if (p.bad_head)
        vq_->push(*p.bad_head, 0);
      else if (p.error == virtio::ChainError::kNone || vq_->broken())
        break;
    }
    if (vq_) vq_->notify();
  }
  virtio::Virtqueue* vq_ = nullptr;
  std::atomic<int> started_{0};
};

TEST(Server, SurvivesHostileFrontEnd) {
  char tmpl[] = "/tmp/axl-vu-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string sock = dir + "/s.sock";
  FakeBackend backend;
  iommu::DmaContext dma;
  {
    Server server(sock, backend, dma);
    ASSERT_TRUE(server.start().ok());
    // AXL_FUZZ_SEED / AXL_FUZZ_ROUNDS widen the search when run by hand.
    const char* seed = getenv("AXL_FUZZ_SEED");
    const char* rounds = getenv("AXL_FUZZ_ROUNDS");
    std::mt19937_64 rng(seed ? strtoull(seed, nullptr, 0) : 1234);
    int nrounds = rounds ? atoi(rounds) : 60;
    for (int round = 0; round < nrounds; ++round) {
      testing::Frontend fe;
      ASSERT_TRUE(fe.connect(sock));
      timeval tv{0, 200000};
      setsockopt(fe.sock(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      // Start from a valid setup half the time so later garbage hits live rings.
      if (round % 2 == 0) fe.handshake(2, ~0ull);
      for (int i = 0; i < 40; ++i) {
        uint32_t req = uint32_t(rng() % 40);
        uint32_t flags =
            (rng() % 8 == 0) ? uint32_t(rng()) : (kVersion | (rng() % 2 ? kFlagNeedReply : 0));
        std::vector<uint8_t> payload;
        switch (rng() % 4) {
          case 0:
            payload.resize(rng() % 64);
            break;
          case 1:
            payload = encode_u64(rng() % 2 ? rng() : rng() % 0x200);
            break;
          case 2:
            payload = encode_vring_state(
                {uint32_t(rng() % 4), uint32_t(rng() % 3 ? 1u << (rng() % 17) : rng())});
            break;
          case 3: {
            VringAddr a{uint32_t(rng() % 3),
                        0,
                        fe.uva(testing::Frontend::kGpaBase) + rng() % 0x500000,
                        rng(),
                        fe.uva(testing::Frontend::kGpaBase) + (rng() % 0x10000),
                        0};
            payload = encode_vring_addr(a);
            break;
          }
        }
        for (auto& b : payload)
          if (rng() % 16 == 0) b = uint8_t(rng());
        std::vector<int> fds;
        UniqueFd e;
        if (rng() % 3 == 0) {
          e.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
          fds.push_back(e.get());
        }
        if (!send_request(fe.sock(), static_cast<Req>(req), flags, payload, fds).ok()) break;
        if (round % 2 == 0 && rng() % 4 == 0) {
          uint64_t one = 1;
          (void)!::write(fe.ring(0).kick.get(), &one, 8);
        }
        // Read and discard whatever comes back (or the close).
        uint8_t buf[512];
        if (::recv(fe.sock(), buf, sizeof buf, MSG_DONTWAIT) == 0) break;
      }
    }
    // Still serving: a clean front-end completes the handshake.
    testing::Frontend good;
    ASSERT_TRUE(good.connect(sock));
    good.handshake(2, ~0ull);
    EXPECT_GT(server.protocol_errors(), 0u);
  }
  ::rmdir(dir.c_str());
}

// vhost-user.rst "Starting and stopping rings": with
// VHOST_USER_F_PROTOCOL_FEATURES negotiated a ring starts disabled and runs
// only once it has a kick fd and SET_VRING_ENABLE(1); GET_VRING_BASE stops it.
TEST(Server, RingStartsOnKickAndEnable) {
  char tmpl[] = "/tmp/axl-vu-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string sock = dir + "/s.sock";
  FakeBackend backend;
  iommu::DmaContext dma;
  {
    Server server(sock, backend, dma);
    ASSERT_TRUE(server.start().ok());
    testing::Frontend fe;
    ASSERT_TRUE(fe.connect(sock));
    using F = testing::Frontend;
    // Without iommu_platform QEMU never acks ACCESS_PLATFORM: ring
    // addresses stay front-end virtual addresses.
    uint64_t f = fe.call_u64(Req::kGetFeatures) & ~virtio::bit(kFAccessPlatform);
    ASSERT_EQ(fe.call_ack(Req::kSetOwner, {}), 0u);
    ASSERT_EQ(fe.call_ack(Req::kSetProtocolFeatures, encode_u64(virtio::bit(kPfReplyAck))), 0u);
    ASSERT_EQ(fe.call_ack(Req::kSetFeatures, encode_u64(f)), 0u);
    MemRegion r{F::kGpaBase, F::kRamSize, fe.uva(F::kGpaBase), 0};
    // Only the ring addresses matter here: any memfd of the right size will do.
    UniqueFd mem(::memfd_create("ram", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(mem.get(), F::kRamSize), 0);
    ASSERT_EQ(fe.call_ack(Req::kSetMemTable, encode_mem_table({&r, 1}), {mem.get()}), 0u);
    ASSERT_EQ(fe.call_ack(Req::kSetVringNum, encode_vring_state({0, 64})), 0u);
    VringAddr a{0,
                0,
                fe.uva(F::kGpaBase + 0x10000),
                fe.uva(F::kGpaBase + 0x18000),
                fe.uva(F::kGpaBase + 0x14000),
                0};
    ASSERT_EQ(fe.call_ack(Req::kSetVringAddr, encode_vring_addr(a)), 0u);
    UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int kfd = kick.get();
    ASSERT_EQ(fe.call_ack(Req::kSetVringKick, encode_u64(0), {kfd}), 0u);
    EXPECT_EQ(backend.started_.load(), 0);  // kick fd alone: still disabled
    ASSERT_EQ(fe.call_ack(Req::kSetVringEnable, encode_vring_state({0, 1})), 0u);
    EXPECT_EQ(backend.started_.load(), 1);
    auto rep = fe.call(Req::kGetVringBase, encode_vring_state({0, 0}));
    ASSERT_EQ(rep.size(), 8u);
    // Stopped: a new kick fd restarts it (still enabled).
    UniqueFd kick2(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    kfd = kick2.get();
    ASSERT_EQ(fe.call_ack(Req::kSetVringKick, encode_u64(0), {kfd}), 0u);
    EXPECT_EQ(backend.started_.load(), 2);
    // Ring addresses outside guest memory never start a ring.
    ASSERT_EQ(fe.call_ack(Req::kSetVringNum, encode_vring_state({1, 64})), 0u);
    VringAddr bad{1, 0, 0x1000, 0x2000, 0x3000, 0};
    ASSERT_EQ(fe.call_ack(Req::kSetVringAddr, encode_vring_addr(bad)), 0u);
    ASSERT_EQ(fe.call_ack(Req::kSetVringEnable, encode_vring_state({1, 1})), 0u);
    UniqueFd kick3(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    kfd = kick3.get();
    ASSERT_EQ(fe.call_ack(Req::kSetVringKick, encode_u64(1), {kfd}), 0u);
    EXPECT_EQ(backend.started_.load(), 2);
  }
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace axl::vhost_user
