// A tiny synthetic vhost-user front-end for tests: it plays QEMU (socket
// handshake, memfd guest RAM, split rings) and the guest driver (chains,
// avail index, kicks).  Test-only; not part of axl_hv_io.
#pragma once
#include <gtest/gtest.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hypervisor/io/vhost_user/protocol.h"
#include "hypervisor/io/virtio/virtio.h"

namespace axl::vhost_user::testing {

class Frontend {
 public:
  static constexpr uint64_t kRamSize = 8 << 20;
  static constexpr uint64_t kGpaBase = 0x100000;  // guest-physical base of RAM
  static constexpr uint32_t kQueueSize = 64;

  Frontend() {
    mem_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(mem_.get(), kRamSize), 0);
    ram_ = static_cast<uint8_t*>(
        ::mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_SHARED, mem_.get(), 0));
    EXPECT_NE(ram_, MAP_FAILED);
  }
  ~Frontend() { ::munmap(ram_, kRamSize); }

  bool connect(const std::string& path) {
    sock_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    for (int i = 0; i < 100; ++i) {
      if (::connect(sock_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        timeval tv{5, 0};
        setsockopt(sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  int sock() const { return sock_.get(); }

  // Request with no reply expected (NEED_REPLY set: waits for the ack).
  uint64_t call_ack(Req r, std::vector<uint8_t> payload, std::vector<int> fds = {}) {
    EXPECT_TRUE(send_request(sock(), r, kFlagNeedReply, payload, fds).ok());
    auto rep = read_reply(r);
    EXPECT_EQ(rep.size(), 8u);
    uint64_t v = ~0ull;
    if (rep.size() == 8) memcpy(&v, rep.data(), 8);
    return v;
  }
  std::vector<uint8_t> call(Req r, std::vector<uint8_t> payload = {}) {
    EXPECT_TRUE(send_request(sock(), r, 0, payload).ok());
    return read_reply(r);
  }
  uint64_t call_u64(Req r) {
    auto p = call(r);
    uint64_t v = 0;
    if (p.size() == 8) memcpy(&v, p.data(), 8);
    return v;
  }
  std::vector<uint8_t> read_reply(Req r) {
    auto m = recv_message(sock());
    if (!m.ok() || !m->has_value()) {
      ADD_FAILURE() << "no reply to " << to_string(r);
      return {};
    }
    EXPECT_EQ((*m)->hdr.request, uint32_t(r));
    EXPECT_TRUE((*m)->hdr.flags & kFlagReply);
    return (*m)->payload;
  }

  // Guest memory helpers: gpa <-> our mapping; our mapping's address doubles
  // as the "QEMU virtual address" of the region.
  uint8_t* at(uint64_t gpa) { return ram_ + (gpa - kGpaBase); }
  uint64_t uva(uint64_t gpa) { return reinterpret_cast<uint64_t>(at(gpa)); }

  struct Ring {
    uint32_t index;
    uint64_t desc, avail, used;  // gpas
    UniqueFd kick, call;
    uint16_t avail_idx = 0, seen_used = 0, next_desc = 0;
  };

  // Guest IOMMU mode (QEMU's iommu_platform=on): VIRTIO_F_ACCESS_PLATFORM is
  // acked, a back-end channel is set up, and ring addresses are IOVAs =
  // gpa + `iova_offset` (the test maps them with iotlb()).  Call before
  // handshake(); without it ACCESS_PLATFORM is never acked, as QEMU does for
  // a device without iommu_platform.
  void use_iommu(uint64_t iova_offset) {
    iommu_ = true;
    iova_offset_ = iova_offset;
  }
  uint64_t iova(uint64_t gpa) const { return iommu_ ? gpa + iova_offset_ : gpa; }
  int backend_sock() const { return backend_.get(); }
  // IOTLB_MSG from the front-end (NEED_REPLY): returns the ack (0 = ok).
  uint64_t iotlb(IotlbType type, uint64_t iova, uint64_t size, uint64_t gpa, uint8_t perm) {
    IotlbMsg m{iova, size, type == IotlbType::kUpdate ? uva(gpa) : 0, perm, type};
    return call_ack(Req::kIotlbMsg, encode_iotlb(m));
  }
  // Maps [gpa, gpa+size) at its IOVA.
  uint64_t map(uint64_t gpa, uint64_t size, uint8_t perm = 3) {
    return iotlb(IotlbType::kUpdate, iova(gpa), size, gpa, perm);
  }
  // Reads one miss from the back-end channel (nullopt: none within timeout).
  std::optional<IotlbMsg> next_miss(int timeout_ms = 2000) {
    pollfd p{backend_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    auto m = recv_message(backend_.get());
    if (!m.ok() || !m->has_value()) return std::nullopt;
    EXPECT_EQ((*m)->hdr.request, uint32_t(BackendReq::kIotlbMsg));
    EXPECT_TRUE((*m)->need_reply());
    auto r = parse_iotlb_miss((*m)->payload);
    return r;
  }
  // Answers the oldest miss, QEMU-style: the update (if any) on the main
  // socket first, then the ack on the back-end channel.
  void answer_miss(bool ok) {
    Header h{uint32_t(BackendReq::kIotlbMsg), kVersion, 0};
    EXPECT_TRUE(send_reply(backend_.get(), h, encode_u64(ok ? 0 : 1)).ok());
  }

  // The handshake QEMU's vhost-user-blk / vhost-user-net performs.
  void handshake(uint32_t queues, uint64_t want_features) {
    uint64_t f = call_u64(Req::kGetFeatures);
    ASSERT_TRUE(f & virtio::bit(kFProtocolFeatures));
    ASSERT_EQ(call_ack(Req::kSetOwner, {}), 0u);
    uint64_t pf = call_u64(Req::kGetProtocolFeatures);
    ASSERT_TRUE(pf & virtio::bit(kPfReplyAck));
    ASSERT_EQ(call_ack(Req::kSetProtocolFeatures, encode_u64(pf)), 0u);
    features_ =
        (f & want_features & ~virtio::bit(kFAccessPlatform)) | virtio::bit(kFProtocolFeatures);
    if (iommu_) {
      ASSERT_TRUE(f & virtio::bit(kFAccessPlatform));
      ASSERT_TRUE(pf & virtio::bit(kPfIotlb));
      ASSERT_TRUE(pf & virtio::bit(kPfBackendReq));
      features_ |= virtio::bit(kFAccessPlatform);
      int sv[2];
      ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
      backend_.reset(sv[0]);
      UniqueFd theirs(sv[1]);
      ASSERT_EQ(call_ack(Req::kSetBackendReqFd, {}, {theirs.get()}), 0u);
    }
    ASSERT_EQ(call_ack(Req::kSetFeatures, encode_u64(features_)), 0u);
    MemRegion r{kGpaBase, kRamSize, uva(kGpaBase), 0};
    ASSERT_EQ(call_ack(Req::kSetMemTable, encode_mem_table({&r, 1}), {mem_.get()}), 0u);
    // Like QEMU (which pre-sends the used ring), map the rings up front.
    if (iommu_) {
      for (uint32_t q = 0; q < queues; ++q) {
        ASSERT_EQ(map(kGpaBase + 0x10000 * (q + 1), 0x10000), 0u);
      }
    }
    for (uint32_t q = 0; q < queues; ++q) {
      Ring ring;
      ring.index = q;
      ring.desc = kGpaBase + 0x10000 * (q + 1);
      ring.avail = ring.desc + 0x4000;
      ring.used = ring.desc + 0x8000;
      ring.kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      ring.call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      ASSERT_EQ(call_ack(Req::kSetVringNum, encode_vring_state({q, kQueueSize})), 0u);
      ASSERT_EQ(call_ack(Req::kSetVringBase, encode_vring_state({q, 0})), 0u);
      VringAddr a{q, 0, uva(ring.desc), uva(ring.used), uva(ring.avail), 0};
      if (iommu_) a = VringAddr{q, 0, iova(ring.desc), iova(ring.used), iova(ring.avail), 0};
      ASSERT_EQ(call_ack(Req::kSetVringAddr, encode_vring_addr(a)), 0u);
      ASSERT_EQ(call_ack(Req::kSetVringCall, encode_u64(q), {ring.call.get()}), 0u);
      ASSERT_EQ(call_ack(Req::kSetVringKick, encode_u64(q), {ring.kick.get()}), 0u);
      ASSERT_EQ(call_ack(Req::kSetVringEnable, encode_vring_state({q, 1})), 0u);
      rings_.push_back(std::move(ring));
    }
  }
  uint64_t features() const { return features_; }
  Ring& ring(uint32_t q) { return rings_[q]; }

  struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
  };
  // Adds one chain (direct descriptors), publishes it and kicks.
  uint16_t add_chain(uint32_t q, const std::vector<Buf>& bufs, bool kick = true) {
    Ring& r = rings_[q];
    uint16_t head = r.next_desc;
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint16_t idx = uint16_t((head + i) % kQueueSize);
      virtio::Desc d{iova(bufs[i].gpa), bufs[i].len,
                     uint16_t((bufs[i].writable ? virtio::kDescFWrite : 0) |
                              (i + 1 < bufs.size() ? virtio::kDescFNext : 0)),
                     uint16_t((idx + 1) % kQueueSize)};
      memcpy(at(r.desc) + 16 * idx, &d, sizeof d);
    }
    r.next_desc = uint16_t((head + bufs.size()) % kQueueSize);
    auto* avail = reinterpret_cast<uint16_t*>(at(r.avail));
    avail[2 + r.avail_idx % kQueueSize] = head;
    __atomic_store_n(&avail[1], uint16_t(r.avail_idx + 1), __ATOMIC_RELEASE);
    ++r.avail_idx;
    if (kick) this->kick(q);
    return head;
  }
  void kick(uint32_t q) {
    uint64_t one = 1;
    EXPECT_EQ(::write(rings_[q].kick.get(), &one, 8), 8);
  }
  uint16_t used_idx(uint32_t q) {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(at(rings_[q].used) + 2), __ATOMIC_ACQUIRE);
  }
  // Waits until `n` more used entries appeared; returns them (id, len).
  std::vector<virtio::UsedElem> wait_used(uint32_t q, uint16_t n, int timeout_ms = 5000) {
    Ring& r = rings_[q];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (uint16_t(used_idx(q) - r.seen_used) < n) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "timed out waiting for used entries on queue " << q;
        return {};
      }
      pollfd p{r.call.get(), POLLIN, 0};
      ::poll(&p, 1, 10);
      uint64_t v;
      (void)!::read(r.call.get(), &v, 8);
    }
    std::vector<virtio::UsedElem> out;
    for (uint16_t i = 0; i < n; ++i) {
      virtio::UsedElem e;
      memcpy(&e, at(r.used) + 4 + 8 * ((r.seen_used + i) % kQueueSize), sizeof e);
      out.push_back(e);
    }
    r.seen_used = uint16_t(r.seen_used + n);
    return out;
  }

 private:
  static std::optional<IotlbMsg> parse_iotlb_miss(const std::vector<uint8_t>& p) {
    if (p.size() != kIotlbMsgSize) return std::nullopt;
    IotlbMsg m;
    memcpy(&m.iova, p.data(), 8);
    memcpy(&m.size, p.data() + 8, 8);
    memcpy(&m.uaddr, p.data() + 16, 8);
    m.perm = p[24];
    m.type = IotlbType(p[25]);
    return m;
  }
  bool iommu_ = false;
  uint64_t iova_offset_ = 0;
  UniqueFd backend_;
  UniqueFd mem_, sock_;
  uint8_t* ram_ = nullptr;
  uint64_t features_ = 0;
  std::vector<Ring> rings_;
};

}  // namespace axl::vhost_user::testing
