#include "hypervisor/io/vhost_user/handler.h"

#include <fcntl.h>
#include <errno.h>
#include <unistd.h>

#include <string>

#include "common/log.h"

namespace axl::vhost_user {

namespace {
bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }
}  // namespace

Handler::Handler(Backend& backend, iommu::DmaContext& dma) : backend_(backend), dma_(dma) {}

Handler::~Handler() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) stop(i);
  dma_.set_memory(nullptr);
}

Handler::Vring* Handler::ring(uint32_t index) {
  if (index >= backend_.queue_count() || index >= kMaxQueues) return nullptr;
  return &rings_[index];
}

Handler::Done Handler::fail(const Message& m, const std::string& why) {
  protocol_errors_.fetch_add(1, std::memory_order_relaxed);
  AXL_WARN("vhost-user %s rejected: %s", to_string(m.req()), why.c_str());
  return Done{false, false, false};
}

Handler::Done Handler::malformed(const Message& m, const std::string& why) {
  protocol_errors_.fetch_add(1, std::memory_order_relaxed);
  AXL_WARN("vhost-user malformed %s (request %u): %s; closing connection", to_string(m.req()),
           m.hdr.request, why.c_str());
  return Done{false, true, false};
}

Handler::Done Handler::reply(int sock, const Message& m, std::span<const uint8_t> payload) {
  if (auto st = send_reply(sock, m.hdr, payload); !st) {
    AXL_WARN("vhost-user reply to %s failed: %s", to_string(m.req()), st.error().message.c_str());
    return Done{false, true, true};
  }
  return Done{true, false, true};
}

Handler::Outcome Handler::handle(int sock, Message msg) {
  if (msg.hdr.flags & kFlagReply) {
    malformed(msg, "front-end sent a reply");
    return Outcome::kClose;
  }
  AXL_DEBUG("vhost-user <- %s flags=0x%x size=%u fds=%zu", to_string(msg.req()), msg.hdr.flags,
            msg.hdr.size, msg.fds.size());
  Done d = dispatch(sock, msg);
  if (d.close) return Outcome::kClose;
  // REPLY_ACK: a request with NEED_REPLY and no reply of its own gets a u64,
  // zero for success (vhost-user.rst "REPLY_ACK").
  if (msg.need_reply() && !d.replied) {
    auto ack = encode_u64(d.ok ? 0 : 1);
    if (!send_reply(sock, msg.hdr, ack)) return Outcome::kClose;
  }
  return Outcome::kKeep;
}

Handler::Done Handler::dispatch(int sock, Message& m) {
  switch (m.req()) {
    case Req::kGetFeatures: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(backend_.features() | virtio::bit(kFProtocolFeatures)));
    }
    case Req::kSetFeatures: {
      auto v = parse_u64(m);
      if (!v) return malformed(m, v.error().message);
      uint64_t offered = backend_.features() | virtio::bit(kFProtocolFeatures);
      if (*v & ~offered) {
        char buf[64];
        snprintf(buf, sizeof buf, "bits 0x%llx were never offered",
                 static_cast<unsigned long long>(*v & ~offered));
        return fail(m, buf);
      }
      acked_features_ = *v;
      features_set_ = true;
      backend_.set_acked_features(*v & ~virtio::bit(kFProtocolFeatures));
      return {};
    }
    case Req::kGetProtocolFeatures: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(backend_.protocol_features()));
    }
    case Req::kSetProtocolFeatures: {
      auto v = parse_u64(m);
      if (!v) return malformed(m, v.error().message);
      if (*v & ~backend_.protocol_features()) return fail(m, "protocol bits never offered");
      acked_protocol_ = *v;
      return {};
    }
    case Req::kSetOwner: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      if (owner_) return fail(m, "session already has an owner");
      owner_ = true;
      return {};
    }
    case Req::kResetOwner: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      for (uint32_t i = 0; i < kMaxQueues; ++i) stop(i);
      owner_ = false;
      return {};
    }
    case Req::kResetDevice: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      for (uint32_t i = 0; i < kMaxQueues; ++i) {
        stop(i);
        rings_[i] = Vring{};
      }
      acked_features_ = 0;
      return {};
    }
    case Req::kGetQueueNum: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(backend_.queue_count()));
    }
    case Req::kSetMemTable:
      return set_mem_table(m);
    case Req::kSetVringNum: {
      auto s = parse_vring_state(m);
      if (!s) return malformed(m, s.error().message);
      Vring* r = ring(s->index);
      if (!r) return fail(m, "no ring " + std::to_string(s->index));
      if (r->vq) return fail(m, "ring is running");
      // §2.7: a power of two, at most 32768 (and what the device allows).
      if (!is_pow2(s->num) || s->num > backend_.max_queue_size())
        return fail(m, "bad ring size " + std::to_string(s->num));
      r->num = s->num;
      return {};
    }
    case Req::kSetVringAddr: {
      auto a = parse_vring_addr(m);
      if (!a) return malformed(m, a.error().message);
      Vring* r = ring(a->index);
      if (!r) return fail(m, "no ring " + std::to_string(a->index));
      if (r->vq) return fail(m, "ring is running");
      r->addr = *a;
      r->addr_set = true;
      return {};
    }
    case Req::kSetVringBase: {
      auto s = parse_vring_state(m);
      if (!s) return malformed(m, s.error().message);
      Vring* r = ring(s->index);
      if (!r) return fail(m, "no ring " + std::to_string(s->index));
      if (r->vq) return fail(m, "ring is running");
      if (s->num > 0xffff) return fail(m, "base beyond 16 bits");
      r->base = uint16_t(s->num);
      return {};
    }
    case Req::kGetVringBase: {
      auto s = parse_vring_state(m);
      if (!s) return malformed(m, s.error().message);
      Vring* r = ring(s->index);
      if (!r) {
        fail(m, "no ring " + std::to_string(s->index));
        return reply(sock, m, encode_vring_state({s->index, 0}));
      }
      stop(s->index);
      r->kick_ready = false;
      r->kick.reset();
      r->call.reset();
      return reply(sock, m, encode_vring_state({s->index, r->base}));
    }
    case Req::kSetVringKick:
    case Req::kSetVringCall:
    case Req::kSetVringErr:
      return set_vring_fd(m);
    case Req::kSetVringEnable: {
      auto s = parse_vring_state(m);
      if (!s) return malformed(m, s.error().message);
      Vring* r = ring(s->index);
      if (!r) return fail(m, "no ring " + std::to_string(s->index));
      if (s->num > 1) return fail(m, "enable must be 0 or 1");
      r->enabled = s->num == 1;
      if (r->enabled)
        try_start(s->index);
      else
        stop(s->index);
      return {};
    }
    case Req::kGetConfig: {
      auto c = parse_config(m);
      if (!c) return malformed(m, c.error().message);
      auto data = backend_.get_config(c->offset, c->size);
      if (!data || data->size() != c->size) {
        fail(m, data ? "short config" : data.error().message);
        // vhost-user.rst: a failed GET_CONFIG is answered with an empty payload.
        return reply(sock, m, {});
      }
      Config out{c->offset, c->size, c->flags, std::move(data).value()};
      return reply(sock, m, encode_config(out));
    }
    case Req::kSetConfig: {
      auto c = parse_config(m);
      if (!c) return malformed(m, c.error().message);
      if (auto st = backend_.set_config(c->offset, c->data); !st) return fail(m, st.error().message);
      return {};
    }
    default:
      // Unknown or not offered: the connection stays, the request fails.
      for (auto& fd : m.fds) fd.reset();
      return fail(m, "unsupported request " + std::to_string(m.hdr.request));
  }
}

Handler::Done Handler::set_mem_table(Message& m) {
  auto regions = parse_mem_table(m);
  if (!regions) return malformed(m, regions.error().message);
  std::vector<iommu::RegionSpec> specs;
  for (size_t i = 0; i < regions->size(); ++i) {
    const MemRegion& r = (*regions)[i];
    specs.push_back(iommu::RegionSpec{r.guest_phys_addr, r.memory_size, r.userspace_addr,
                                      r.mmap_offset, std::move(m.fds[i])});
  }
  auto mem = iommu::GuestMemory::map(std::move(specs));
  if (!mem) return fail(m, mem.error().message);
  // Swap tables; running rings get their host views re-derived (chains in
  // flight carry guest addresses only, so nothing else dangles).
  std::unique_ptr<iommu::GuestMemory> old = std::move(mem_);
  mem_ = std::move(mem).value();
  dma_.set_memory(mem_.get());
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    Vring& r = rings_[i];
    if (r.vq) {
      auto layout = translate_ring(r);
      if (layout) {
        r.vq->relocate(*layout);
      } else {
        AXL_WARN("vhost-user ring %u no longer inside guest memory: stopped", i);
        stop(i);
      }
    } else {
      try_start(i);
    }
  }
  AXL_INFO("vhost-user memory table: %zu regions", mem_->region_count());
  return {};
}

Handler::Done Handler::set_vring_fd(Message& m) {
  auto v = parse_vring_fd(m);
  if (!v) return malformed(m, v.error().message);
  Vring* r = ring(v->index);
  if (!r) return fail(m, "no ring " + std::to_string(v->index));
  UniqueFd fd = v->fd ? std::move(*v->fd) : UniqueFd();
  // The front-end's eventfds are shared with it; never block the device
  // thread on one it might have handed over in blocking mode.
  if (fd) {
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
  }
  switch (m.req()) {
    case Req::kSetVringKick:
      // vhost-user.rst: the ring starts when the kick fd arrives.  NOFD
      // (polling) is not supported: the ring then never runs.
      if (r->vq) stop(v->index);
      r->kick = std::move(fd);
      r->kick_ready = true;
      if (!r->kick) return fail(m, "polling mode (no kick fd) is not supported");
      try_start(v->index);
      return {};
    case Req::kSetVringCall:
      r->call = std::move(fd);
      if (r->vq) r->vq->set_call_fd(r->call.get());
      return {};
    default:
      r->err = std::move(fd);
      return {};
  }
}

std::optional<virtio::Virtqueue::Layout> Handler::translate_ring(const Vring& r) const {
  if (!mem_ || !r.addr_set || r.num == 0) return std::nullopt;
  auto d = mem_->translate_uva(r.addr.desc, virtio::desc_table_bytes(r.num));
  auto a = mem_->translate_uva(r.addr.avail, virtio::avail_ring_bytes(r.num));
  auto u = mem_->translate_uva(r.addr.used, virtio::used_ring_bytes(r.num));
  using L = iommu::GuestMemory::Lookup;
  if (d.result != L::kOk || a.result != L::kOk || u.result != L::kOk) return std::nullopt;
  // §2.7 alignment: descriptor table 16, avail 2, used 4; also what the
  // atomic accesses to the indices need.
  if (reinterpret_cast<uintptr_t>(d.host) % 16 || reinterpret_cast<uintptr_t>(a.host) % 2 ||
      reinterpret_cast<uintptr_t>(u.host) % 4)
    return std::nullopt;
  return virtio::Virtqueue::Layout{r.num, d.host, a.host, u.host};
}

void Handler::try_start(uint32_t index) {
  Vring& r = rings_[index];
  if (r.vq || !r.kick_ready || !r.kick) return;
  if (protocol_features_on() && !r.enabled) return;
  auto layout = translate_ring(r);
  if (!layout) {
    if (mem_ && r.addr_set)
      AXL_WARN("vhost-user ring %u: addresses outside guest memory or misaligned", index);
    return;
  }
  bool event_idx = acked_features_ & virtio::bit(virtio::kFRingEventIdx);
  bool indirect = acked_features_ & virtio::bit(virtio::kFRingIndirectDesc);
  r.vq = std::make_unique<virtio::Virtqueue>(&dma_, *layout, r.base, event_idx, indirect);
  r.vq->set_call_fd(r.call.get());
  AXL_INFO("vhost-user ring %u started: size %u base %u", index, r.num, r.base);
  backend_.queue_started(index, *r.vq);
  // Chains may have been queued before the kick fd arrived.
  backend_.queue_kicked(index);
}

void Handler::stop(uint32_t index) {
  Vring& r = rings_[index];
  if (!r.vq) return;
  backend_.queue_stopped(index);
  r.base = r.vq->last_avail_idx();
  r.vq.reset();
  AXL_INFO("vhost-user ring %u stopped at %u", index, r.base);
}

void Handler::disconnect() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    stop(i);
    rings_[i] = Vring{};
  }
  owner_ = false;
  features_set_ = false;
  acked_features_ = 0;
  acked_protocol_ = 0;
  dma_.set_memory(nullptr);
  mem_.reset();
}

std::vector<Handler::KickFd> Handler::kick_fds() const {
  std::vector<KickFd> out;
  for (uint32_t i = 0; i < kMaxQueues; ++i)
    if (rings_[i].vq && rings_[i].kick) out.push_back({rings_[i].kick.get(), i});
  return out;
}

void Handler::kicked(uint32_t queue) {
  if (queue >= kMaxQueues) return;
  Vring& r = rings_[queue];
  if (!r.vq || !r.kick) return;
  uint64_t v;
  while (::read(r.kick.get(), &v, sizeof v) < 0 && errno == EINTR) {
  }
  backend_.queue_kicked(queue);
}

}  // namespace axl::vhost_user
