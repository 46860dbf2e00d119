#include "channel/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <new>

namespace axl::channel {

namespace {
constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
constexpr uint32_t kMaxSlots = 1024;
constexpr uint32_t kMaxSlotSize = 1u << 20;
constexpr uint64_t kPage = 4096;

void ring_doorbell(int fd) {
  uint64_t one = 1;
  // A full eventfd counter (EAGAIN) already means "pending": nothing to do.
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}
void drain_doorbell(int fd) {
  uint64_t v;
  while (::read(fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}
}  // namespace

bool compute_geometry(uint32_t slots, uint32_t slot_size, Geometry* g) {
  if (slots == 0 || slots > kMaxSlots || (slots & (slots - 1)) != 0) return false;
  if (slot_size == 0 || slot_size > kMaxSlotSize || slot_size % 64 != 0) return false;
  g->slots = slots;
  g->slot_size = slot_size;
  g->req_ring_off = align_up(sizeof(Header), 64);
  g->resp_ring_off = align_up(g->req_ring_off + uint64_t(slots) * sizeof(Request), 64);
  g->pool_off = align_up(g->resp_ring_off + uint64_t(slots) * sizeof(Response), kPage);
  g->total_size = align_up(g->pool_off + uint64_t(slots) * slot_size, kPage);
  return true;
}

Mapping::Mapping(Mapping&& o) noexcept : base_(o.base_), geo_(o.geo_) { o.base_ = nullptr; }
Mapping::~Mapping() {
  if (base_) ::munmap(base_, geo_.total_size);
}

Result<Mapping> Mapping::map(int fd, uint32_t slots, uint32_t slot_size) {
  Geometry g;
  if (!compute_geometry(slots, slot_size, &g))
    return make_error("channel geometry rejected: slots=" + std::to_string(slots) +
                      " slot_size=" + std::to_string(slot_size));
  struct stat st {};
  if (::fstat(fd, &st) < 0) return make_error(std::string("channel fstat: ") + strerror(errno));
  if (uint64_t(st.st_size) != g.total_size)
    return make_error("channel memfd size " + std::to_string(st.st_size) + " != expected " +
                      std::to_string(g.total_size));
  void* p = ::mmap(nullptr, g.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return make_error(std::string("channel mmap: ") + strerror(errno));
  Mapping m(static_cast<uint8_t*>(p), g);
  const Header* h = m.header();
  if (h->magic != kMagic || h->version != kVersion || h->slots != slots ||
      h->slot_size != slot_size)
    return make_error("channel header does not match its announced geometry");
  return m;
}

Result<ChannelFds> create(uint32_t slots, uint32_t slot_size) {
  Geometry g;
  if (!compute_geometry(slots, slot_size, &g)) return make_error("bad channel geometry");
  ChannelFds c;
  c.mem.reset(::memfd_create("axl-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!c.mem) return make_error(std::string("memfd_create: ") + strerror(errno));
  if (::ftruncate(c.mem.get(), off_t(g.total_size)) < 0)
    return make_error(std::string("ftruncate: ") + strerror(errno));
  // The driver must not be able to shrink the file under the hypervisor's
  // mapping (a SIGBUS in the trusted core) or grow it.
  if (::fcntl(c.mem.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    return make_error(std::string("memfd seal: ") + strerror(errno));
  void* p = ::mmap(nullptr, g.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, c.mem.get(), 0);
  if (p == MAP_FAILED) return make_error(std::string("mmap: ") + strerror(errno));
  auto* h = new (p) Header{};
  h->magic = kMagic;
  h->version = kVersion;
  h->slots = slots;
  h->slot_size = slot_size;
  h->req_ring_off = g.req_ring_off;
  h->resp_ring_off = g.resp_ring_off;
  h->pool_off = g.pool_off;
  h->total_size = g.total_size;
  ::munmap(p, g.total_size);
  c.req_kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  c.resp_kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!c.req_kick || !c.resp_kick) return make_error(std::string("eventfd: ") + strerror(errno));
  return c;
}

HvEnd::HvEnd(Mapping m, UniqueFd req_kick, UniqueFd resp_kick)
    : map_(std::move(m)), req_kick_(std::move(req_kick)), resp_kick_(std::move(resp_kick)) {}

void HvEnd::push(const Request& r) {
  Request* ring = map_.req_ring();
  ring[req_head_ & (slots() - 1)] = r;
  ++req_head_;
  map_.header()->req.head.store(req_head_, std::memory_order_release);
  pending_kick_ = true;
}

void HvEnd::kick() {
  if (!pending_kick_) return;
  pending_kick_ = false;
  ring_doorbell(req_kick_.get());
}

Result<std::optional<Response>> HvEnd::pop() {
  uint32_t head = map_.header()->resp.head.load(std::memory_order_acquire);
  uint32_t avail = head - resp_tail_;
  if (avail == 0) return std::optional<Response>{};
  if (avail > slots()) return make_error("driver corrupted response ring index");
  Response r = map_.resp_ring()[resp_tail_ & (slots() - 1)];
  ++resp_tail_;
  map_.header()->resp.tail.store(resp_tail_, std::memory_order_release);
  return std::optional<Response>(r);
}

void HvEnd::ack_doorbell() { drain_doorbell(resp_kick_.get()); }

DriverEnd::DriverEnd(Mapping m, UniqueFd req_kick, UniqueFd resp_kick)
    : map_(std::move(m)), req_kick_(std::move(req_kick)), resp_kick_(std::move(resp_kick)) {}

Result<std::optional<Request>> DriverEnd::pop() {
  uint32_t head = map_.header()->req.head.load(std::memory_order_acquire);
  uint32_t avail = head - req_tail_;
  if (avail == 0) return std::optional<Request>{};
  if (avail > slots()) return make_error("request ring index corrupted");
  Request r = map_.req_ring()[req_tail_ & (slots() - 1)];
  ++req_tail_;
  map_.header()->req.tail.store(req_tail_, std::memory_order_release);
  return std::optional<Request>(r);
}

bool DriverEnd::more_queued() const {
  return map_.header()->req.head.load(std::memory_order_acquire) != req_tail_;
}

void DriverEnd::push(const Response& r) {
  map_.resp_ring()[resp_head_ & (slots() - 1)] = r;
  ++resp_head_;
  map_.header()->resp.head.store(resp_head_, std::memory_order_release);
  pending_kick_ = true;
}

void DriverEnd::kick() {
  if (!pending_kick_) return;
  pending_kick_ = false;
  ring_doorbell(resp_kick_.get());
}

void DriverEnd::ack_doorbell() { drain_doorbell(req_kick_.get()); }

Status DriverEnd::claim_liveness() {
  if (claimed_) return {};
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_t* m = &map_.header()->liveness;
  int rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc == 0) rc = pthread_mutex_lock(m);
  if (rc != 0) return make_error(std::string("channel liveness lock: ") + strerror(rc));
  claimed_ = true;
  return {};
}

DriverEnd::~DriverEnd() {
  // A moved-from end has no mapping.  Unlocking takes the mutex off this
  // thread's robust list, which must never point into unmapped memory.
  if (claimed_ && map_.header()) pthread_mutex_unlock(&map_.header()->liveness);
}

}  // namespace axl::channel
