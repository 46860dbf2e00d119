// axl-bench-blk: a synthetic vhost-user-blk frontend for benchmarking block
// backends. It plays both QEMU (the vhost-user handshake, guest RAM as one
// memfd) and the guest's virtio-blk driver (a split virtqueue it lays out in
// that memfd), so a backend can be measured without booting a guest under
// TCG, whose CPU cost would dwarf the backend's.
//
// Every completion is checked (status byte, used id in flight, length), and a
// data-integrity pass runs first so a backend that acknowledges without doing
// the I/O cannot post good numbers.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/split_queue.h"
#include "bench/vhost_user_wire.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::bench {
namespace {

using Clock = std::chrono::steady_clock;

inline constexpr uint64_t kGpaBase = 0x40000000;  // nonzero, so GPA/HVA mix-ups show
inline constexpr uint64_t kPage = 4096;
inline constexpr uint32_t kMaxSlots = 256;
inline constexpr uint64_t kMiB = 1024 * 1024;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// ---------------------------------------------------------------- options

struct Options {
  std::string socket;
  std::string workload;
  bool all = false;
  uint32_t qd = 1;
  double seconds = 5;
  uint64_t range = 0;  // bytes from the start of the device; 0 = all of it
  bool verify = true;
  bool verify_only = false;
  bool check_data = false;
  bool poll = false;
  bool event_idx = true;
  uint32_t queue_size = 128;  // QEMU's vhost-user-blk default
  bool indirect = true;
  uint64_t seed = 0;
  double timeout = 10;
  double connect_timeout = 10;
  std::string label;
  int backend_pid = 0;  // count CPU time of this process and its descendants
  // Guest IOMMU emulation: none, identity (IOVA = GPA), offset (IOVA = GPA +
  // 1 TiB) as one IOTLB entry over all of guest RAM, or pages (identity, one
  // IOTLB entry per 4 KiB page, as a guest's per-buffer mappings look).
  std::string iommu = "none";
};

void usage(FILE* f) {
  std::fprintf(
      f,
      "usage: axl-bench-blk --socket PATH (--workload W --qd N | --all) [options]\n"
      "  --workload W        randread4k | randwrite4k | seqread1m | seqwrite1m\n"
      "  --qd N              requests in flight (default 1; capped by ring size)\n"
      "  --all               run the whole matrix: 4k random at QD 1 and 32,\n"
      "                      1M sequential at QD 32\n"
      "  --seconds S         duration of each workload (default 5, may be fractional)\n"
      "  --range BYTES       limit I/O to the first BYTES of the device (K/M/G suffix)\n"
      "  --no-verify         skip the write/read-back integrity pass\n"
      "  --verify-only       run only the integrity pass\n"
      "  --check-data        fill the range with a known pattern first, write that\n"
      "                      pattern in every write and check every read against it\n"
      "                      (costs frontend CPU: for proving a backend, not timing it)\n"
      "  --poll              busy-poll the used ring instead of waiting for calls\n"
      "  --no-event-idx      do not negotiate VIRTIO_RING_F_EVENT_IDX\n"
      "  --no-indirect       do not negotiate VIRTIO_RING_F_INDIRECT_DESC (by default,\n"
      "                      like a Linux guest, every request is one indirect table)\n"
      "  --queue-size N      virtqueue size, power of two (default 128, QEMU's default)\n"
      "  --seed N            random seed (default: from the clock)\n"
      "  --timeout S         fail when no completion arrives for S seconds (default 10)\n"
      "  --connect-timeout S keep retrying the socket for S seconds (default 10)\n"
      "  --label NAME        tag every JSON line with this name\n"
      "  --backend-pid PID   also report the CPU time of PID and its descendants\n"
      "  --iommu MODE        none | identity | offset | pages: ack VIRTIO_F_ACCESS_PLATFORM\n"
      "                      and program the backend's IOTLB (offset: IOVA = GPA + 1 TiB;\n"
      "                      pages: identity, one entry per 4 KiB page)\n"
      "Prints one JSON object per line: device info, the integrity check, and one\n"
      "line per workload with iops, mb_s (10^6 B/s), mib_s and latency.\n");
}

std::optional<uint64_t> parse_size(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno || end == s.c_str()) return std::nullopt;
  uint64_t mul = 1;
  std::string suffix(end);
  if (suffix == "" || suffix == "B")
    mul = 1;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB")
    mul = 1ull << 10;
  else if (suffix == "M" || suffix == "MiB")
    mul = 1ull << 20;
  else if (suffix == "G" || suffix == "GiB")
    mul = 1ull << 30;
  else
    return std::nullopt;
  return v * mul;
}

Result<Options> parse_args(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> Result<std::string> {
    if (i + 1 >= argc) return make_error(std::string(argv[i]) + " needs a value");
    return std::string(argv[++i]);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--all") {
      o.all = true;
      continue;
    }
    if (a == "--no-verify") {
      o.verify = false;
      continue;
    }
    if (a == "--verify-only") {
      o.verify_only = true;
      continue;
    }
    if (a == "--check-data") {
      o.check_data = true;
      continue;
    }
    if (a == "--poll") {
      o.poll = true;
      continue;
    }
    if (a == "--no-event-idx") {
      o.event_idx = false;
      continue;
    }
    if (a == "--no-indirect") {
      o.indirect = false;
      continue;
    }
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    }
    auto v = need(i);
    if (!v) return v.error();
    const std::string& s = *v;
    try {
      if (a == "--socket")
        o.socket = s;
      else if (a == "--workload")
        o.workload = s;
      else if (a == "--qd")
        o.qd = static_cast<uint32_t>(std::stoul(s));
      else if (a == "--seconds")
        o.seconds = std::stod(s);
      else if (a == "--timeout")
        o.timeout = std::stod(s);
      else if (a == "--connect-timeout")
        o.connect_timeout = std::stod(s);
      else if (a == "--queue-size")
        o.queue_size = static_cast<uint32_t>(std::stoul(s));
      else if (a == "--seed")
        o.seed = std::stoull(s);
      else if (a == "--label")
        o.label = s;
      else if (a == "--iommu")
        o.iommu = s;
      else if (a == "--backend-pid")
        o.backend_pid = std::stoi(s);
      else if (a == "--range") {
        auto r = parse_size(s);
        if (!r) return make_error("bad --range " + s);
        o.range = *r;
      } else
        return make_error("unknown option " + a);
    } catch (const std::exception&) {
      return make_error("bad value for " + a + ": " + s);
    }
  }
  if (o.socket.empty()) return make_error("--socket is required");
  if (o.iommu != "none" && o.iommu != "identity" && o.iommu != "offset" && o.iommu != "pages")
    return make_error("--iommu must be none, identity, offset or pages");
  if (!o.all && !o.verify_only && o.workload.empty())
    return make_error("give --workload, --all or --verify-only");
  if (o.qd == 0 || o.qd > kMaxSlots)
    return make_error("--qd must be 1.." + std::to_string(kMaxSlots));
  if (o.queue_size < 4 || o.queue_size > 32768 || (o.queue_size & (o.queue_size - 1)))
    return make_error("--queue-size must be a power of two in 4..32768");
  if (!(o.seconds > 0)) return make_error("--seconds must be positive");
  if (o.seed == 0)
    o.seed =
        static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^ (uint64_t(getpid()) << 32);
  return o;
}

// ---------------------------------------------------------------- vhost-user socket

class VhostUserClient {
 public:
  static Result<VhostUserClient> connect(const std::string& path, double timeout_s) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return make_error("socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd) return make_error(errno_text("socket"));
      if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
        return VhostUserClient(std::move(fd));
      // The backend may still be starting: its socket appears, or starts
      // accepting, a moment after the process does.
      if ((errno != ENOENT && errno != ECONNREFUSED) || Clock::now() >= deadline)
        return make_error(errno_text(("connect " + path).c_str()));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  int fd() const { return fd_.get(); }
  void set_reply_ack(bool on) { reply_ack_ = on; }

  // Sends a message that expects no reply payload; with REPLY_ACK negotiated
  // it asks for and checks the ack, so a backend that rejects a message is
  // caught at that message rather than as a stalled queue later.
  Status set(VhostUserRequest req, const void* payload, uint32_t size,
             std::span<const int> fds = {}) {
    if (auto s = send(req, payload, size, fds, reply_ack_); !s) return s;
    if (!reply_ack_) return {};
    auto r = recv_reply(req);
    if (!r) return r.error();
    uint64_t v = 0;
    if (r->size() != sizeof(v)) return make_error(name(req) + ": bad ack size");
    std::memcpy(&v, r->data(), sizeof(v));
    if (v != 0) return make_error(name(req) + ": backend answered failure " + std::to_string(v));
    return {};
  }

  Status set_u64(VhostUserRequest req, uint64_t v, std::span<const int> fds = {}) {
    return set(req, &v, sizeof(v), fds);
  }

  Result<uint64_t> get_u64(VhostUserRequest req) {
    if (auto s = send(req, nullptr, 0, {}, false); !s) return s.error();
    auto r = recv_reply(req);
    if (!r) return r.error();
    uint64_t v = 0;
    if (r->size() != sizeof(v)) return make_error(name(req) + ": bad reply size");
    std::memcpy(&v, r->data(), sizeof(v));
    return v;
  }

  Status send(VhostUserRequest req, const void* payload, uint32_t size, std::span<const int> fds,
              bool need_reply) {
    VhostUserHeader h{static_cast<uint32_t>(req),
                      kVhostUserVersion | (need_reply ? kVhostUserFlagNeedReply : 0u), size};
    std::vector<uint8_t> buf(sizeof(h) + size);
    std::memcpy(buf.data(), &h, sizeof(h));
    if (size) std::memcpy(buf.data() + sizeof(h), payload, size);
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
    if (!fds.empty()) {
      if (fds.size() > 8) return make_error("too many fds");
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return make_error(errno_text(("send " + name(req)).c_str()));
    if (static_cast<size_t>(n) != buf.size()) {
      // fds went with the first byte; the rest is plain data.
      if (auto s = write_all(buf.data() + n, buf.size() - n); !s) return s;
    }
    return {};
  }

  Result<std::vector<uint8_t>> recv_reply(VhostUserRequest req) {
    VhostUserHeader h{};
    if (auto s = read_all(&h, sizeof(h)); !s) return s.error();
    if (h.request != static_cast<uint32_t>(req))
      return make_error("reply to " + name(req) + " names request " + std::to_string(h.request));
    if (!(h.flags & kVhostUserFlagReply)) return make_error(name(req) + ": reply flag missing");
    if (h.size > 4096) return make_error(name(req) + ": reply too large");
    std::vector<uint8_t> payload(h.size);
    if (h.size) {
      if (auto s = read_all(payload.data(), h.size); !s) return s.error();
    }
    return payload;
  }

  static std::string name(VhostUserRequest r) {
    return "vhost-user request " + std::to_string(static_cast<uint32_t>(r));
  }

 private:
  explicit VhostUserClient(UniqueFd fd) : fd_(std::move(fd)) {}

  Status read_all(void* p, size_t n) {
    auto* b = static_cast<uint8_t*>(p);
    while (n) {
      ssize_t r = ::recv(fd_.get(), b, n, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return make_error(errno_text("recv"));
      if (r == 0) return make_error("backend closed the vhost-user connection");
      b += r;
      n -= static_cast<size_t>(r);
    }
    return {};
  }
  Status write_all(const uint8_t* b, size_t n) {
    while (n) {
      ssize_t r = ::send(fd_.get(), b, n, MSG_NOSIGNAL);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return make_error(errno_text("send"));
      b += r;
      n -= static_cast<size_t>(r);
    }
    return {};
  }

  UniqueFd fd_;
  bool reply_ack_ = false;
};

// ---------------------------------------------------------------- guest memory

class GuestMemory {
 public:
  static Result<GuestMemory> create(size_t size) {
    UniqueFd fd(::memfd_create("axl-bench-guest-ram", MFD_CLOEXEC));
    if (!fd) return make_error(errno_text("memfd_create"));
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
      return make_error(errno_text("ftruncate"));
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
    if (p == MAP_FAILED) return make_error(errno_text("mmap guest memory"));
    return GuestMemory(std::move(fd), static_cast<uint8_t*>(p), size);
  }
  GuestMemory(GuestMemory&& o) noexcept
      : fd_(std::move(o.fd_)), base_(std::exchange(o.base_, nullptr)), size_(o.size_) {}
  GuestMemory& operator=(GuestMemory&&) = delete;
  ~GuestMemory() {
    if (base_) ::munmap(base_, size_);
  }

  int fd() const { return fd_.get(); }
  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }
  uint64_t gpa(size_t off) const { return kGpaBase + off; }
  // The address the device is given: the GPA, or with a guest IOMMU the IOVA.
  uint64_t iova(size_t off) const { return kGpaBase + iova_offset_ + off; }
  void set_iova_offset(uint64_t o) { iova_offset_ = o; }
  uint64_t hva(size_t off) const { return reinterpret_cast<uint64_t>(base_ + off); }

 private:
  GuestMemory(UniqueFd fd, uint8_t* base, size_t size)
      : fd_(std::move(fd)), base_(base), size_(size) {}
  UniqueFd fd_;
  uint8_t* base_;
  size_t size_;
  uint64_t iova_offset_ = 0;
};

// ---------------------------------------------------------------- the device

struct DeviceInfo {
  uint64_t features = 0;
  uint64_t protocol_features = 0;
  uint64_t capacity_bytes = 0;
  uint32_t seg_max = 0;   // 0 = no limit offered
  uint32_t size_max = 0;  // 0 = no limit offered
  bool read_only = false;
  bool event_idx = false;
  bool indirect = false;
};

// Per-slot layout: a request header and status byte in the header area, and a
// data buffer of max_req bytes in the data area.
struct Slot {
  size_t hdr_off;
  size_t data_off;
  size_t table_off;  // indirect descriptor table
  bool busy = false;
  Clock::time_point submitted;
  uint32_t expect_len = 0;
};

struct Completion {
  uint32_t slot;
  Clock::duration latency;
};

class BlkFrontend {
 public:
  static Result<std::unique_ptr<BlkFrontend>> open(const Options& o) {
    auto client = VhostUserClient::connect(o.socket, o.connect_timeout);
    if (!client) return client.error();
    std::unique_ptr<BlkFrontend> f(new BlkFrontend(std::move(*client), o));
    if (auto s = f->handshake(); !s) return s.error();
    return f;
  }

  const DeviceInfo& info() const { return info_; }
  uint32_t slots() const { return static_cast<uint32_t>(slots_.size()); }
  uint64_t max_req() const { return max_req_; }
  uint16_t queue_size() const { return queue_->size(); }
  uint64_t kicks() const { return kicks_; }
  uint64_t calls() const { return calls_; }
  size_t in_flight() const { return queue_->in_flight(); }
  uint8_t* data(uint32_t slot) const { return mem_->base() + slots_[slot].data_off; }

  // Descriptors a request of len bytes needs, with data split into segments
  // no longer than seg_limit (and size_max).
  uint32_t descs_for(uint64_t len, uint64_t seg_limit = 0) const {
    if (info_.indirect) return 1;
    uint64_t seg = segment_size(seg_limit);
    return static_cast<uint32_t>(2 + (len + seg - 1) / seg);
  }

  std::optional<uint32_t> free_slot() {
    for (uint32_t i = 0; i < slots_.size(); ++i) {
      uint32_t s = (next_slot_ + i) % slots_.size();
      if (!slots_[s].busy) {
        next_slot_ = s + 1;
        return s;
      }
    }
    return std::nullopt;
  }

  // Queues one read or write of len bytes at byte offset off from/to the
  // slot's buffer; call kick() to make it (and others) visible.
  Status queue(uint32_t slot, bool write, uint64_t off, uint64_t len, uint64_t seg_limit = 0) {
    Slot& s = slots_[slot];
    if (s.busy) return make_error("slot busy");
    if (len == 0 || len > max_req_ || len % kSectorSize || off % kSectorSize)
      return make_error("bad request geometry");
    if (off + len > info_.capacity_bytes) return make_error("request beyond capacity");
    auto* hdr = reinterpret_cast<BlkReqHeader*>(mem_->base() + s.hdr_off);
    hdr->type = write ? kBlkTOut : kBlkTIn;
    hdr->reserved = 0;
    hdr->sector = off / kSectorSize;
    // A backend that completes without writing the status byte must not
    // read as success.
    mem_->base()[s.hdr_off + sizeof(BlkReqHeader)] = 0xff;
    bufs_.clear();
    bufs_.push_back({mem_->iova(s.hdr_off), sizeof(BlkReqHeader), false});
    uint64_t seg = segment_size(seg_limit);
    for (uint64_t done = 0; done < len; done += seg)
      bufs_.push_back({mem_->iova(s.data_off + done),
                       static_cast<uint32_t>(std::min(seg, len - done)), !write});
    bufs_.push_back({mem_->iova(s.hdr_off + sizeof(BlkReqHeader)), 1, true});
    if (bufs_.size() > max_chain_) return make_error("request needs more segments than allowed");
    Status st = info_.indirect
                    ? queue_->add_indirect(reinterpret_cast<VringDesc*>(mem_->base() + s.table_off),
                                           mem_->iova(s.table_off), bufs_, slot)
                    : queue_->add(bufs_, slot);
    if (!st) return st;
    s.busy = true;
    s.submitted = Clock::now();
    s.expect_len = static_cast<uint32_t>(write ? 1 : len + 1);
    return {};
  }

  Status flush_cache(uint32_t slot) {
    Slot& s = slots_[slot];
    auto* hdr = reinterpret_cast<BlkReqHeader*>(mem_->base() + s.hdr_off);
    hdr->type = kBlkTFlush;
    hdr->reserved = 0;
    hdr->sector = 0;
    mem_->base()[s.hdr_off + sizeof(BlkReqHeader)] = 0xff;
    QueueBuf b[2] = {{mem_->iova(s.hdr_off), sizeof(BlkReqHeader), false},
                     {mem_->iova(s.hdr_off + sizeof(BlkReqHeader)), 1, true}};
    if (auto st = queue_->add(b, slot); !st) return st;
    s.busy = true;
    s.submitted = Clock::now();
    s.expect_len = 1;
    return {};
  }

  Status kick() {
    if (!queue_->publish()) return {};
    uint64_t one = 1;
    if (::write(kick_fd_.get(), &one, sizeof(one)) != sizeof(one))
      return make_error(errno_text("kick"));
    ++kicks_;
    return {};
  }

  // Waits until at least one request completes and returns all that have.
  Status wait(std::vector<Completion>& out) {
    out.clear();
    auto stall_deadline = Clock::now() + std::chrono::duration<double>(opt_.timeout);
    for (;;) {
      if (queue_->has_used()) break;
      if (queue_->in_flight() == 0) return make_error("wait with nothing in flight");
      if (opt_.poll) {
        if (Clock::now() > stall_deadline) return stalled();
        continue;
      }
      queue_->enable_notify();
      if (queue_->has_used()) break;
      pollfd p[2] = {{call_fd_.get(), POLLIN, 0}, {client_.fd(), POLLIN, 0}};
      int ms = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(stall_deadline - Clock::now())
              .count());
      int r = ::poll(p, 2, std::max(ms, 0));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return make_error(errno_text("poll"));
      if (r == 0) return stalled();
      if (p[1].revents)
        return make_error("backend closed or wrote to the vhost-user socket mid-run");
      if (p[0].revents & POLLIN) {
        uint64_t n;
        if (::read(call_fd_.get(), &n, sizeof(n)) == sizeof(n)) ++calls_;
      }
    }
    // Harvest with calls off: it is what a guest driver's interrupt handler
    // does, and it spares the backend eventfd writes nobody waits for.
    queue_->disable_notify();
    used_.clear();
    if (auto s = queue_->harvest(used_); !s) return s;
    auto now = Clock::now();
    for (const UsedEntry& u : used_) {
      if (u.token >= slots_.size() || !slots_[u.token].busy)
        return make_error("completion for an idle slot");
      Slot& s = slots_[u.token];
      uint8_t status = mem_->base()[s.hdr_off + sizeof(BlkReqHeader)];
      if (status != kBlkSOk)
        return make_error(
            "request completed with status " + std::to_string(status) + " (sector " +
            std::to_string(reinterpret_cast<BlkReqHeader*>(mem_->base() + s.hdr_off)->sector) +
            ")");
      if (u.len != s.expect_len) ++len_mismatches_;
      s.busy = false;
      out.push_back({u.token, now - s.submitted});
    }
    return {};
  }

  uint64_t len_mismatches() const { return len_mismatches_; }

  Status drain() {
    std::vector<Completion> done;
    while (queue_->in_flight())
      if (auto s = wait(done); !s) return s;
    return {};
  }

  // Stops the ring the way QEMU does at shutdown; the backend answers with the
  // next avail index it would have read, which must be everything we offered.
  Status stop() {
    if (auto s = drain(); !s) return s;
    VringState st{0, 0};
    if (auto s = client_.send(VhostUserRequest::kGetVringBase, &st, sizeof(st), {}, false); !s)
      return s;
    auto r = client_.recv_reply(VhostUserRequest::kGetVringBase);
    if (!r) return r.error();
    if (r->size() != sizeof(st)) return make_error("GET_VRING_BASE: bad reply size");
    std::memcpy(&st, r->data(), sizeof(st));
    if (st.num != queue_->avail_idx())
      return make_error("GET_VRING_BASE says " + std::to_string(st.num) + ", we offered " +
                        std::to_string(queue_->avail_idx()));
    return {};
  }

 private:
  BlkFrontend(VhostUserClient client, const Options& o) : client_(std::move(client)), opt_(o) {}

  Status stalled() {
    return make_error("backend stalled: no completion for " + std::to_string(opt_.timeout) +
                      " s with " + std::to_string(queue_->in_flight()) + " requests in flight");
  }

  uint64_t segment_size(uint64_t seg_limit) const {
    uint64_t seg = max_req_;
    if (info_.size_max) seg = std::min<uint64_t>(seg, info_.size_max);
    if (seg_limit) seg = std::min(seg, seg_limit);
    return seg;
  }

  Status handshake() {
    using R = VhostUserRequest;
    auto features = client_.get_u64(R::kGetFeatures);
    if (!features) return features.error();
    info_.features = *features;
    auto has = [&](int bit) { return (info_.features >> bit) & 1; };
    if (!has(kFVersion1)) return make_error("backend does not offer VIRTIO_F_VERSION_1");

    bool config = false;
    if (has(kVhostUserFProtocolFeatures)) {
      auto pf = client_.get_u64(R::kGetProtocolFeatures);
      if (!pf) return pf.error();
      info_.protocol_features = *pf;
      uint64_t want = *pf & ((1ull << kProtocolFReplyAck) | (1ull << kProtocolFConfig));
      if (iommu()) {
        uint64_t need = (1ull << kProtocolFIotlb) | (1ull << kProtocolFBackendReq) |
                        (1ull << kProtocolFReplyAck);
        if ((*pf & need) != need)
          return make_error("--iommu: backend does not offer IOTLB, BACKEND_REQ and REPLY_ACK");
        want |= need;
      }
      if (auto s = client_.set_u64(R::kSetProtocolFeatures, want); !s) return s;
      client_.set_reply_ack((want >> kProtocolFReplyAck) & 1);
      config = (want >> kProtocolFConfig) & 1;
    }
    if (auto s = client_.set(R::kSetOwner, nullptr, 0); !s) return s;
    if (!config)
      return make_error("backend does not offer VHOST_USER_PROTOCOL_F_CONFIG; capacity unknown");

    // GET_CONFIG never takes NEED_REPLY: it always answers with the config.
    std::vector<uint8_t> req(sizeof(ConfigHeader) + sizeof(BlkConfigPrefix), 0);
    ConfigHeader ch{0, sizeof(BlkConfigPrefix), 0};
    std::memcpy(req.data(), &ch, sizeof(ch));
    if (auto s =
            client_.send(R::kGetConfig, req.data(), static_cast<uint32_t>(req.size()), {}, false);
        !s)
      return s;
    auto reply = client_.recv_reply(R::kGetConfig);
    if (!reply) return reply.error();
    if (reply->size() != req.size())
      return make_error("GET_CONFIG failed (reply of " + std::to_string(reply->size()) + " bytes)");
    BlkConfigPrefix cfg;
    std::memcpy(&cfg, reply->data() + sizeof(ConfigHeader), sizeof(cfg));
    info_.capacity_bytes = cfg.capacity * kSectorSize;
    if (has(kBlkFSegMax)) info_.seg_max = cfg.seg_max;
    if (has(kBlkFSizeMax)) info_.size_max = cfg.size_max;
    info_.read_only = has(kBlkFRo);
    if (info_.capacity_bytes < kMiB) return make_error("device smaller than 1 MiB");

    uint64_t ack = (1ull << kFVersion1);
    for (int bit : {kBlkFSizeMax, kBlkFSegMax, kBlkFRo, kBlkFBlkSize, kBlkFFlush})
      if (has(bit)) ack |= 1ull << bit;
    if (opt_.event_idx && has(kRingFEventIdx)) ack |= 1ull << kRingFEventIdx;
    if (opt_.indirect && has(kRingFIndirectDesc)) ack |= 1ull << kRingFIndirectDesc;
    if (has(kVhostUserFProtocolFeatures)) ack |= 1ull << kVhostUserFProtocolFeatures;
    if (iommu()) {
      if (!has(kFAccessPlatform))
        return make_error("--iommu: backend does not offer VIRTIO_F_ACCESS_PLATFORM");
      if (!has(kVhostUserFProtocolFeatures)) return make_error("--iommu: needs protocol features");
      ack |= 1ull << kFAccessPlatform;
      // The back-end channel (misses would come here; the whole of guest RAM
      // is mapped up front, so none should).
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return make_error(errno_text("socketpair"));
      backend_chan_.reset(sv[0]);
      UniqueFd theirs(sv[1]);
      int t = theirs.get();
      if (auto s = client_.set(R::kSetBackendReqFd, nullptr, 0, {&t, 1}); !s) return s;
    }
    info_.event_idx = (ack >> kRingFEventIdx) & 1;
    info_.indirect = (ack >> kRingFIndirectDesc) & 1;
    if (auto s = client_.set_u64(R::kSetFeatures, ack); !s) return s;

    // Largest request: 1 MiB, or whatever seg_max * size_max allows, in
    // whole 4 KiB pages; and no more segments than the ring can hold.
    max_req_ = kMiB;
    uint64_t seg = info_.size_max ? info_.size_max : max_req_;
    uint64_t segs = info_.seg_max ? info_.seg_max : max_req_ / kPage;
    // A chain, indirect or not, may not be longer than the queue (virtio
    // 2.7.5.3.1).
    segs = std::min<uint64_t>(segs, opt_.queue_size - 2);
    max_req_ = std::min(max_req_, seg * segs) / kPage * kPage;
    max_chain_ = static_cast<uint32_t>(segs + 2);
    if (max_req_ == 0) return make_error("seg_max/size_max leave no room for a 4 KiB request");

    // Guest RAM: rings, then the request headers, then the data buffers.
    uint16_t n = static_cast<uint16_t>(opt_.queue_size);
    uint32_t nslots = std::max<uint32_t>(opt_.qd, 32);
    size_t desc_off = 0;
    size_t avail_off = align_up(desc_off + SplitQueue::desc_bytes(n), kPage);
    size_t used_off = align_up(avail_off + SplitQueue::avail_bytes(n), kPage);
    size_t hdr_off = align_up(used_off + SplitQueue::used_bytes(n), kPage);
    size_t table_off = align_up(hdr_off + 64 * nslots, kPage);
    size_t table_bytes = align_up(sizeof(VringDesc) * max_chain_, 64);
    size_t data_off = align_up(table_off + table_bytes * nslots, kPage);
    size_t total = align_up(data_off + max_req_ * nslots, 2 * kMiB);
    auto mem = GuestMemory::create(total);
    if (!mem) return mem.error();
    mem_.emplace(std::move(*mem));
    for (uint32_t i = 0; i < nslots; ++i)
      slots_.push_back(
          {hdr_off + 64 * i, data_off + max_req_ * i, table_off + table_bytes * i, false, {}, 0});
    uint8_t* b = mem_->base();
    queue_.emplace(reinterpret_cast<VringDesc*>(b + desc_off),
                   reinterpret_cast<uint16_t*>(b + avail_off),
                   reinterpret_cast<uint16_t*>(b + used_off), n, info_.event_idx);

    MemoryTableOne table{1, 0, {mem_->gpa(0), mem_->size(), mem_->hva(0), 0}};
    int memfd = mem_->fd();
    if (auto s = client_.set(R::kSetMemTable, &table, sizeof(table), {&memfd, 1}); !s) return s;
    if (iommu()) {
      if (opt_.iommu == "offset") mem_->set_iova_offset(1ull << 40);
      uint64_t step = opt_.iommu == "pages" ? kPage : mem_->size();
      for (uint64_t off = 0; off < mem_->size(); off += step) {
        IotlbMsg m{mem_->iova(off), step, mem_->hva(off), kIotlbPermRw, kIotlbUpdate, {}};
        if (auto s = client_.set(R::kIotlbMsg, &m, sizeof(m)); !s) return s;
      }
    }

    kick_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    call_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!kick_fd_ || !call_fd_) return make_error(errno_text("eventfd"));

    VringState num{0, n};
    if (auto s = client_.set(R::kSetVringNum, &num, sizeof(num)); !s) return s;
    VringState base{0, 0};
    if (auto s = client_.set(R::kSetVringBase, &base, sizeof(base)); !s) return s;
    // With a guest IOMMU ring addresses are IOVAs, else front-end addresses.
    VringAddr addr =
        iommu()
            ? VringAddr{0, 0, mem_->iova(desc_off), mem_->iova(used_off), mem_->iova(avail_off), 0}
            : VringAddr{0, 0, mem_->hva(desc_off), mem_->hva(used_off), mem_->hva(avail_off), 0};
    if (auto s = client_.set(R::kSetVringAddr, &addr, sizeof(addr)); !s) return s;
    int call = call_fd_.get();
    if (auto s = client_.set_u64(R::kSetVringCall, 0, {&call, 1}); !s) return s;
    int kick = kick_fd_.get();
    if (auto s = client_.set_u64(R::kSetVringKick, 0, {&kick, 1}); !s) return s;
    if (has(kVhostUserFProtocolFeatures)) {
      VringState en{0, 1};
      if (auto s = client_.set(R::kSetVringEnable, &en, sizeof(en)); !s) return s;
    }
    // A request that always answers: once it has, every message before it
    // has been processed and the ring is live.
    auto sync = client_.get_u64(R::kGetFeatures);
    if (!sync) return sync.error();
    if (opt_.poll) queue_->disable_notify();
    return {};
  }

  bool iommu() const { return opt_.iommu != "none"; }

  VhostUserClient client_;
  UniqueFd backend_chan_;
  Options opt_;
  DeviceInfo info_;
  std::optional<GuestMemory> mem_;
  std::optional<SplitQueue> queue_;
  std::vector<Slot> slots_;
  UniqueFd kick_fd_;
  UniqueFd call_fd_;
  uint64_t max_req_ = 0;
  uint32_t max_chain_ = 0;
  uint32_t next_slot_ = 0;
  uint64_t kicks_ = 0;
  uint64_t calls_ = 0;
  uint64_t len_mismatches_ = 0;
  std::vector<QueueBuf> bufs_;
  std::vector<UsedEntry> used_;
};

// ---------------------------------------------------------------- output

std::string label_field(const Options& o) {
  if (o.label.empty()) return "";
  std::string s = "\"label\":\"";
  for (char c : o.label)
    if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20) s += c;
  return s + "\",";
}

// ---------------------------------------------------------------- integrity pass

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Content that depends on the run's seed and on the device offset of every
// 8 bytes: stale data from an earlier run, data from another offset, or a
// zero-filled reply all fail the comparison.
void fill_pattern(uint8_t* p, uint64_t dev_off, uint64_t len, uint64_t seed) {
  for (uint64_t i = 0; i < len; i += 8) {
    uint64_t v = mix64(seed ^ (dev_off + i));
    std::memcpy(p + i, &v, 8);
  }
}

struct VerifyOp {
  uint64_t off;
  uint64_t len;
  uint64_t seg_limit;
};

Status run_ops(BlkFrontend& dev, const std::vector<VerifyOp>& ops, bool write, uint64_t seed,
               uint64_t& mismatch_at) {
  std::vector<int> op_of_slot(dev.slots(), -1);
  std::vector<Completion> done;
  size_t next = 0;
  while (next < ops.size() || dev.in_flight()) {
    while (next < ops.size()) {
      const VerifyOp& op = ops[next];
      if (dev.descs_for(op.len, op.seg_limit) > dev.queue_size())
        return make_error("verify op too large");
      auto slot = dev.free_slot();
      if (!slot) break;
      uint8_t* buf = dev.data(*slot);
      if (write)
        fill_pattern(buf, op.off, op.len, seed);
      else
        std::memset(buf, 0xa5, op.len);
      auto s = dev.queue(*slot, write, op.off, op.len, op.seg_limit);
      if (!s) {
        if (dev.in_flight()) break;  // ring full: let some finish first
        return s;
      }
      op_of_slot[*slot] = static_cast<int>(next++);
    }
    if (auto s = dev.kick(); !s) return s;
    if (auto s = dev.wait(done); !s) return s;
    if (write) continue;
    std::vector<uint8_t> want;
    for (const Completion& c : done) {
      const VerifyOp& op = ops[op_of_slot[c.slot]];
      want.resize(op.len);
      fill_pattern(want.data(), op.off, op.len, seed);
      const uint8_t* got = dev.data(c.slot);
      if (std::memcmp(got, want.data(), op.len) != 0) {
        uint64_t i = 0;
        while (got[i] == want[i]) ++i;
        mismatch_at = op.off + i;
        return make_error("read-back mismatch at device offset " + std::to_string(op.off + i));
      }
    }
  }
  return {};
}

Status verify(BlkFrontend& dev, const Options& o, uint64_t range) {
  std::mt19937_64 rng(o.seed ^ 0x5a5a5a5a);
  std::vector<VerifyOp> ops;
  auto overlaps = [&](uint64_t off, uint64_t len) {
    for (const VerifyOp& v : ops)
      if (off < v.off + v.len && v.off < off + len) return true;
    return false;
  };
  // One large request split into many small segments (exercises segment
  // walking and the data offset inside each), one unaligned to 4 KiB, and a
  // handful of random 4 KiB blocks, all disjoint so completion order cannot
  // matter.
  uint64_t big = std::min<uint64_t>(dev.max_req(), range / 4) / kPage * kPage;
  if (big >= kPage) {
    uint64_t seg = std::max<uint64_t>(kPage, big / 8);
    ops.push_back({(rng() % (range / big)) * big, big, seg});
  }
  for (int tries = 0; ops.size() < 10 && tries < 1000; ++tries) {
    bool odd = ops.size() == 1;
    uint64_t len = odd ? 3 * kSectorSize : kPage;
    uint64_t off =
        odd ? (rng() % (range / kSectorSize - 3)) * kSectorSize : (rng() % (range / kPage)) * kPage;
    if (!overlaps(off, len)) ops.push_back({off, len, 0});
  }
  uint64_t bytes = 0;
  for (const VerifyOp& v : ops) bytes += v.len;
  uint64_t mismatch_at = 0;
  Status s = run_ops(dev, ops, true, o.seed, mismatch_at);
  if (s && (dev.info().features >> kBlkFFlush & 1)) {
    auto slot = dev.free_slot();
    std::vector<Completion> done;
    if (!slot) s = make_error("no slot for flush");
    if (s) s = dev.flush_cache(*slot);
    if (s) s = dev.kick();
    if (s) s = dev.drain();
  }
  if (s) s = run_ops(dev, ops, false, o.seed, mismatch_at);
  std::printf("{%s\"check\":\"integrity\",\"ok\":%s,\"requests\":%zu,\"bytes\":%" PRIu64
              ",\"seed\":%" PRIu64 "%s}\n",
              label_field(o).c_str(), s ? "true" : "false", ops.size(), bytes, o.seed,
              s ? "" : (",\"error\":\"" + s.error().message + "\"").c_str());
  std::fflush(stdout);
  return s;
}

// ---------------------------------------------------------------- CPU accounting

// CPU seconds (user + system, reaped children included) used so far by pid
// and every live descendant. A disaggregated backend spends its CPU in
// several processes (hypervisor, driver domain), so the whole tree counts;
// per-request CPU cost is what a 2-core host runs out of first.
double tree_cpu_seconds(int root) {
  struct Proc {
    int ppid;
    double cpu;
  };
  std::map<int, Proc> procs;
  static const double kTick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    size_t close = line.rfind(')');  // the command name may hold spaces and parens
    if (close == std::string::npos) continue;
    std::vector<std::string> fields;
    size_t pos = close + 2;
    while (pos < line.size() && fields.size() < 15) {
      size_t sp = line.find(' ', pos);
      if (sp == std::string::npos) sp = line.size();
      fields.push_back(line.substr(pos, sp - pos));
      pos = sp + 1;
    }
    if (fields.size() < 15) continue;
    // After the name: state ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime.
    double ticks = std::stod(fields[11]) + std::stod(fields[12]) + std::stod(fields[13]) +
                   std::stod(fields[14]);
    procs[static_cast<int>(pid)] = {std::stoi(fields[1]), ticks / kTick};
  }
  ::closedir(d);
  double total = 0;
  for (const auto& [pid, p] : procs) {
    int cur = pid;
    for (int hops = 0; hops < 64 && cur > 1; ++hops) {
      if (cur == root) {
        total += p.cpu;
        break;
      }
      auto it = procs.find(cur);
      if (it == procs.end()) break;
      cur = it->second.ppid;
    }
  }
  return total;
}

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// ---------------------------------------------------------------- workloads

struct WorkloadSpec {
  const char* name;
  bool write;
  bool random;
  uint64_t bs;
};

constexpr WorkloadSpec kWorkloads[] = {
    {"randread4k", false, true, 4096},
    {"randwrite4k", true, true, 4096},
    {"seqread1m", false, false, kMiB},
    {"seqwrite1m", true, false, kMiB},
};

const WorkloadSpec* find_workload(const std::string& name) {
  for (const WorkloadSpec& w : kWorkloads)
    if (name == w.name) return &w;
  return nullptr;
}

Status run_workload(BlkFrontend& dev, const Options& o, const WorkloadSpec& w, uint32_t qd_req,
                    uint64_t range, std::mt19937_64& rng) {
  if (w.write && dev.info().read_only)
    return make_error(std::string(w.name) + ": device is read-only");
  // A 1 MiB transfer becomes several requests when seg_max * size_max is
  // smaller, the way a guest's block layer splits it.
  uint64_t req = std::min(w.bs, dev.max_req());
  if (range < req) return make_error("--range smaller than one request");
  uint32_t qd =
      std::min({qd_req, dev.slots(), static_cast<uint32_t>(dev.queue_size() / dev.descs_for(req))});
  if (qd == 0) return make_error("ring too small for one request");
  for (uint32_t i = 0; i < dev.slots(); ++i)
    std::memset(dev.data(i), static_cast<int>(0x11 * (i % 15 + 1)), req);  // never all zeros
  std::vector<uint64_t> slot_off(dev.slots());
  std::vector<uint8_t> want;
  uint64_t checked = 0;

  uint64_t blocks = range / req;
  uint64_t cursor = 0;
  std::vector<Completion> done;
  std::vector<uint32_t> lat_ns;
  lat_ns.reserve(1 << 20);
  uint64_t completed = 0;
  uint64_t kicks0 = dev.kicks(), calls0 = dev.calls();
  double self_cpu0 = self_cpu_seconds();
  double backend_cpu0 = o.backend_pid ? tree_cpu_seconds(o.backend_pid) : 0;
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration<double>(o.seconds);
  Clock::time_point end{};
  bool stopping = false;
  while (!stopping || dev.in_flight()) {
    while (!stopping && dev.in_flight() < qd) {
      auto slot = dev.free_slot();
      if (!slot) break;
      uint64_t off;
      if (w.random) {
        off = (rng() % blocks) * req;
      } else {
        if (cursor + req > range) cursor = 0;
        off = cursor;
        cursor += req;
      }
      if (o.check_data) {
        slot_off[*slot] = off;
        if (w.write)
          fill_pattern(dev.data(*slot), off, req, o.seed);
        else
          std::memset(dev.data(*slot), 0xa5, req);
      }
      if (auto s = dev.queue(*slot, w.write, off, req); !s) return s;
    }
    if (auto s = dev.kick(); !s) return s;
    if (auto s = dev.wait(done); !s) return s;
    if (o.check_data && !w.write) {
      for (const Completion& c : done) {
        want.resize(req);
        fill_pattern(want.data(), slot_off[c.slot], req, o.seed);
        if (std::memcmp(want.data(), dev.data(c.slot), req) != 0)
          return make_error(std::string(w.name) + ": read at device offset " +
                            std::to_string(slot_off[c.slot]) + " returned the wrong data");
        ++checked;
      }
    }
    if (stopping) continue;  // draining: not counted
    for (const Completion& c : done) {
      lat_ns.push_back(static_cast<uint32_t>(std::min<int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(c.latency).count(), UINT32_MAX)));
    }
    completed += done.size();
    auto now = Clock::now();
    if (now >= deadline) {
      stopping = true;
      end = now;
      self_cpu0 = self_cpu_seconds() - self_cpu0;
      if (o.backend_pid) backend_cpu0 = tree_cpu_seconds(o.backend_pid) - backend_cpu0;
    }
  }
  double secs = std::chrono::duration<double>(end - start).count();
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double p) -> double {
    if (lat_ns.empty()) return 0;
    size_t i = std::min(lat_ns.size() - 1, static_cast<size_t>(p * lat_ns.size()));
    return lat_ns[i] / 1000.0;
  };
  double avg = 0;
  for (uint32_t v : lat_ns) avg += v;
  avg = lat_ns.empty() ? 0 : avg / lat_ns.size() / 1000.0;
  double iops = completed / secs;
  double bytes_s = iops * static_cast<double>(req);
  double reqs = std::max<double>(1, static_cast<double>(completed));
  char backend_cpu[128] = "";
  if (o.backend_pid)
    std::snprintf(backend_cpu, sizeof(backend_cpu),
                  ",\"backend_cpu_pct\":%.1f,\"backend_cpu_us_per_req\":%.2f",
                  100 * backend_cpu0 / secs, 1e6 * backend_cpu0 / reqs);
  std::printf("{%s\"workload\":\"%s\",\"qd\":%u,\"qd_requested\":%u,\"req_bytes\":%" PRIu64
              ",\"seconds\":%.3f,\"requests\":%" PRIu64
              ",\"iops\":%.1f,\"mb_s\":%.2f,\"mib_s\":%.2f,\"lat_avg_us\":%.1f,\"lat_p50_us\":%.1f,"
              "\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f,\"kicks\":%" PRIu64 ",\"calls\":%" PRIu64
              ",\"frontend_cpu_pct\":%.1f,\"reads_checked\":%" PRIu64 "%s}\n",
              label_field(o).c_str(), w.name, qd, qd_req, req, secs, completed, iops, bytes_s / 1e6,
              bytes_s / kMiB, avg, pct(0.5), pct(0.99), pct(1.0), dev.kicks() - kicks0,
              dev.calls() - calls0, 100 * self_cpu0 / secs, checked, backend_cpu);
  std::fflush(stdout);
  return {};
}

int run(const Options& o) {
  auto opened = BlkFrontend::open(o);
  if (!opened) {
    std::fprintf(stderr, "axl-bench-blk: %s\n", opened.error().message.c_str());
    return 1;
  }
  BlkFrontend& dev = **opened;
  const DeviceInfo& info = dev.info();
  uint64_t range = o.range ? std::min(o.range, info.capacity_bytes) : info.capacity_bytes;
  range = range / kPage * kPage;
  if (range < 16 * kPage) {
    std::fprintf(stderr, "axl-bench-blk: --range must cover at least 64 KiB\n");
    return 2;
  }
  std::printf(
      "{%s\"device\":{\"capacity\":%" PRIu64 ",\"range\":%" PRIu64
      ",\"seg_max\":%u,\"size_max\":%u,"
      "\"max_req\":%" PRIu64 ",\"features\":\"0x%" PRIx64 "\",\"protocol_features\":\"0x%" PRIx64
      "\",\"event_idx\":%s,\"indirect\":%s,\"queue_size\":%u,\"mode\":\"%s\"}}\n",
      label_field(o).c_str(), info.capacity_bytes, range, info.seg_max, info.size_max,
      dev.max_req(), info.features, info.protocol_features, info.event_idx ? "true" : "false",
      info.indirect ? "true" : "false", dev.queue_size(), o.poll ? "poll" : "notify");
  std::fflush(stdout);

  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "axl-bench-blk: %s\n", s.error().message.c_str());
    return 1;
  };
  if (o.verify || o.verify_only) {
    if (info.read_only) {
      std::fprintf(stderr, "axl-bench-blk: device is read-only, integrity pass skipped\n");
    } else if (auto s = verify(dev, o, range); !s) {
      return fail(s);
    }
  }
  if (o.check_data && !o.verify_only) {
    // Every block of the range gets the pattern, so any later read can be
    // checked whatever offset it lands on.
    std::vector<VerifyOp> fill;
    for (uint64_t off = 0; off < range; off += dev.max_req())
      fill.push_back({off, std::min(dev.max_req(), range - off), 0});
    uint64_t unused = 0;
    if (auto s = run_ops(dev, fill, true, o.seed, unused); !s) return fail(s);
  }
  if (!o.verify_only) {
    std::mt19937_64 rng(o.seed);
    struct Item {
      const WorkloadSpec* w;
      uint32_t qd;
    };
    std::vector<Item> items;
    if (o.all) {
      items = {{find_workload("randread4k"), 1},  {find_workload("randread4k"), 32},
               {find_workload("randwrite4k"), 1}, {find_workload("randwrite4k"), 32},
               {find_workload("seqread1m"), 32},  {find_workload("seqwrite1m"), 32}};
    } else {
      const WorkloadSpec* w = find_workload(o.workload);
      if (!w) {
        std::fprintf(stderr, "axl-bench-blk: unknown workload %s\n", o.workload.c_str());
        return 2;
      }
      items = {{w, o.qd}};
    }
    for (const Item& it : items)
      if (auto s = run_workload(dev, o, *it.w, it.qd, range, rng); !s) return fail(s);
  }
  if (auto s = dev.stop(); !s) return fail(s);
  if (dev.len_mismatches())
    std::fprintf(
        stderr, "axl-bench-blk: note: %" PRIu64 " completions reported an unexpected used length\n",
        dev.len_mismatches());
  return 0;
}

}  // namespace
}  // namespace axl::bench

int main(int argc, char** argv) {
  auto o = axl::bench::parse_args(argc, argv);
  if (!o) {
    std::fprintf(stderr, "axl-bench-blk: %s\n", o.error().message.c_str());
    axl::bench::usage(stderr);
    return 2;
  }
  return axl::bench::run(*o);
}
