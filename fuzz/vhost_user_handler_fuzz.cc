// The vhost-user back-end state machine (hypervisor/io/vhost_user/handler.h)
// driven by a hostile front-end, with a fake device behind it.  Guest RAM is
// a real memfd that SET_MEM_TABLE maps; ring fds are real eventfds; replies
// go to a real socket.  Once a ring runs, the fake device pops and completes
// chains from it, so the guest-memory writes in the input reach the
// virtqueue code through the handler's own ring translation.
//
// Input: a sequence of steps, each led by an op byte:
//   0 message:  request u8, flags u8 (bit0 NEED_REPLY, bit1 REPLY),
//               fds u8 (bits 0-3 count mod 9, bit 4: guest-RAM memfd instead
//               of eventfds), payload length u16 (mod 1024), payload
//   1 kick:     queue u8
//   2 guest:    offset u16, length u8, bytes written into guest RAM
//   3 the front-end disconnects
// The oracle: the ring lifecycle the handler shows the device is consistent
// (no start twice, no kick or stop of a ring that is not running, nothing
// running after a disconnect), and every chain the device sees is valid.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>

#include "fuzz/fuzz_support.h"
#include "hypervisor/io/vhost_user/handler.h"

namespace {

using namespace axl;
using namespace axl::vhost_user;

constexpr uint64_t kRamSize = 64 * 1024;
int g_ram = -1;

class FakeDevice final : public Backend {
 public:
  explicit FakeDevice(uint32_t queues, uint64_t features) : queues_(queues), features_(features) {}
  uint64_t features() const override { return features_; }
  uint32_t queue_count() const override { return queues_; }
  uint32_t max_queue_size() const override { return 256; }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override {
    if (uint64_t(offset) + size > 64) return make_error("beyond config space");
    return std::vector<uint8_t>(size, 0x5a);
  }
  Status set_config(uint32_t offset, std::span<const uint8_t> data) override {
    AXL_FUZZ_CHECK(data.size() <= kMaxConfigSize);
    return {};
  }
  void set_acked_features(uint64_t f) override {
    // Only bits the device offered reach it.
    AXL_FUZZ_CHECK((f & ~features_) == 0);
  }
  void queue_started(uint32_t index, virtio::Virtqueue& vq) override {
    AXL_FUZZ_CHECK(index < queues_ && index < Handler::kMaxQueues);
    AXL_FUZZ_CHECK(vqs_[index] == nullptr);
    AXL_FUZZ_CHECK(vq.size() >= 1 && vq.size() <= 256 && (vq.size() & (vq.size() - 1)) == 0);
    vqs_[index] = &vq;
  }
  void queue_stopped(uint32_t index) override {
    AXL_FUZZ_CHECK(index < Handler::kMaxQueues && vqs_[index] != nullptr);
    vqs_[index] = nullptr;
  }
  void queue_kicked(uint32_t index) override {
    AXL_FUZZ_CHECK(index < Handler::kMaxQueues && vqs_[index] != nullptr);
    virtio::Virtqueue& vq = *vqs_[index];
    for (uint32_t n = 0; n < 2 * vq.size() && !vq.broken(); ++n) {
      auto p = vq.pop();
      if (p.error != virtio::ChainError::kNone) {
        if (p.bad_head) {
          AXL_FUZZ_CHECK(*p.bad_head < vq.size());
          vq.push(*p.bad_head, 0);
        }
        continue;
      }
      if (!p.chain) break;
      const virtio::Chain& c = *p.chain;
      AXL_FUZZ_CHECK(c.head < vq.size());
      AXL_FUZZ_CHECK(vq.dma().check(c.segs) == iommu::Fault::kNone);
      // Move a few bytes each way, as a device would.
      uint8_t buf[64];
      auto r = vq.dma().copy_from_guest(c.segs, 0, buf);
      AXL_FUZZ_CHECK(r.ok() || c.writable_bytes > 0);
      uint32_t wrote = 0;
      if (c.writable_bytes) {
        auto w = vq.dma().copy_to_guest(c.segs, c.readable_bytes, {buf, sizeof buf});
        AXL_FUZZ_CHECK(w.ok());
        wrote = uint32_t(w.bytes);
      }
      vq.push(c.head, wrote);
    }
    vq.notify();
  }
  bool any_running() const {
    for (auto* v : vqs_)
      if (v) return true;
    return false;
  }

 private:
  uint32_t queues_;
  uint64_t features_;
  std::array<virtio::Virtqueue*, Handler::kMaxQueues> vqs_{};
};

// A fresh open file description of guest RAM (not a dup: a dup would share
// the file offset across inputs when it is used as a ring fd).
int open_ram() {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", g_ram);
  int fd = ::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) abort();
  return fd;
}

void drain(int sock) {
  uint8_t buf[4096];
  while (::recv(sock, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  g_ram = ::memfd_create("fuzz-guest-ram", MFD_CLOEXEC);
  if (g_ram < 0 || ::ftruncate(g_ram, kRamSize) < 0) abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  // Fresh, zeroed guest RAM for every input.
  if (::ftruncate(g_ram, 0) < 0 || ::ftruncate(g_ram, kRamSize) < 0) abort();
  uint32_t queues = 1 + in.byte() % 4;
  uint64_t features = virtio::bit(virtio::kFVersion1);
  uint8_t fsel = in.byte();
  if (fsel & 1) features |= virtio::bit(virtio::kFRingIndirectDesc);
  if (fsel & 2) features |= virtio::bit(virtio::kFRingEventIdx);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) abort();
  UniqueFd ours(sv[0]), peer(sv[1]);
  ::fcntl(ours.get(), F_SETFL, O_NONBLOCK);

  FakeDevice dev(queues, features);
  iommu::DmaContext dma;
  {
    Handler h(dev, dma);
    for (int step = 0; step < 256 && !in.empty(); ++step) {
      switch (in.byte() % 4) {
        case 0: {
          Message m;
          m.hdr.request = in.byte();
          uint8_t fl = in.byte();
          m.hdr.flags = kVersion | ((fl & 1) ? kFlagNeedReply : 0) | ((fl & 2) ? kFlagReply : 0);
          uint8_t fdspec = in.byte();
          unsigned nfds = (fdspec & 0xf) % (kMaxFds + 1);
          for (unsigned i = 0; i < nfds; ++i)
            m.fds.emplace_back((fdspec & 0x10) ? open_ram()
                                               : ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
          size_t len = in.take<uint16_t>() % 1024;
          auto p = in.bytes(len);
          m.payload.assign(p.begin(), p.end());
          m.hdr.size = uint32_t(m.payload.size());
          if (h.handle(ours.get(), std::move(m)) == Handler::Outcome::kClose) {
            h.disconnect();
            AXL_FUZZ_CHECK(!dev.any_running());
          }
          drain(peer.get());
          break;
        }
        case 1: {
          uint32_t q = in.byte() % (Handler::kMaxQueues + 2);
          // What the server does: only kick fds it was handed poll readable.
          for (auto k : h.kick_fds()) {
            if (k.queue != q) continue;
            uint64_t one = 1;
            (void)!::write(k.fd, &one, sizeof one);
          }
          h.kicked(q);
          drain(peer.get());
          break;
        }
        case 2: {
          uint64_t off = in.take<uint16_t>() % kRamSize;
          size_t len = in.byte();
          auto b = in.bytes(len);
          if (off + b.size() > kRamSize) b = b.first(kRamSize - off);
          if (::pwrite(g_ram, b.data(), b.size(), off_t(off)) < 0) abort();
          break;
        }
        case 3:
          h.disconnect();
          AXL_FUZZ_CHECK(!dev.any_running());
          AXL_FUZZ_CHECK(dma.memory() == nullptr);
          break;
      }
    }
  }
  AXL_FUZZ_CHECK(!dev.any_running());
  return 0;
}
