#include "hypervisor/io/vhost_user/handler.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>

#include "common/log.h"

namespace axl::vhost_user {

namespace {
bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }
}  // namespace

Handler::Handler(Backend& backend, iommu::DmaContext& dma, std::string label)
    : backend_(backend), dma_(dma), label_(std::move(label)) {
  dma_.set_label(label_);
  iommu_.set_miss_sink([this](uint64_t iova, iommu::Access a) { return send_miss(iova, a); });
}

Handler::~Handler() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) stop(i);
  dma_.set_memory(nullptr);
  dma_.set_translator(nullptr);
}

uint64_t Handler::offered_features() const {
  return backend_.features() | virtio::bit(kFProtocolFeatures) | virtio::bit(kFAccessPlatform);
}

uint64_t Handler::offered_protocol() const {
  uint64_t p = backend_.protocol_features();
  // IOTLB misses need the back-end channel and REPLY_ACK (QEMU refuses an
  // IOMMU device without both).
  if (p & virtio::bit(kPfReplyAck)) p |= virtio::bit(kPfIotlb) | virtio::bit(kPfBackendReq);
  return p | virtio::bit(kPfInflightShmfd);
}

void Handler::set_translating(bool on) {
  if (on == translating_) return;
  // Ring addresses change meaning (front-end VAs <-> IOVAs): no ring keeps
  // host views derived the other way.
  for (uint32_t i = 0; i < kMaxQueues; ++i) stop(i);
  translating_ = on;
  iommu_.reset();
  dma_.set_translator(on ? &iommu_ : nullptr);
  if (on) AXL_INFO("%s: guest IOMMU on: ring and buffer addresses are IOVAs", label_.c_str());
  for (uint32_t i = 0; i < kMaxQueues; ++i) try_start(i);
}

Handler::Done Handler::set_features(const Message& m, uint64_t v) {
  uint64_t offered = offered_features();
  if (v & ~offered) {
    char buf[64];
    snprintf(buf, sizeof buf, "bits 0x%llx were never offered",
             static_cast<unsigned long long>(v & ~offered));
    return fail(m, buf);
  }
  acked_features_ = v;
  features_set_ = true;
  set_translating(v & virtio::bit(kFAccessPlatform));
  backend_.set_acked_features(v &
                              ~(virtio::bit(kFProtocolFeatures) | virtio::bit(kFAccessPlatform)));
  return {};
}

Handler::Done Handler::set_backend_req_fd(Message& m) {
  if (!m.payload.empty()) return malformed(m, "SET_BACKEND_REQ_FD: unexpected payload");
  if (m.fds.size() != 1) return malformed(m, "SET_BACKEND_REQ_FD: needs exactly one fd");
  drop_backend_channel("replaced");
  backend_req_ = std::move(m.fds[0]);
  m.fds.clear();
  // A front-end that stops reading must not wedge the device thread.
  struct timeval tv {
    1, 0
  };
  ::setsockopt(backend_req_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(backend_req_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return {};
}

void Handler::drop_backend_channel(const std::string& why) {
  if (!backend_req_) return;
  if (why != "replaced") AXL_WARN("%s: back-end channel dropped: %s", label_.c_str(), why.c_str());
  backend_req_.reset();
  if (iommu_.outstanding()) {
    // Nobody will answer: what waited on a miss faults on its retry.
    iommu_.fail_outstanding();
    retry_pending_ = true;
  }
}

bool Handler::send_miss(uint64_t iova, iommu::Access access) {
  if (!translating_ || !backend_req_ || !(acked_protocol_ & virtio::bit(kPfReplyAck))) return false;
  IotlbMsg msg{iova, iommu::IommuContext::kPageSize, 0,
               uint8_t(access == iommu::Access::kWrite ? iommu::Perm::kWrite : iommu::Perm::kRead),
               IotlbType::kMiss};
  auto st =
      send_backend_request(backend_req_.get(), BackendReq::kIotlbMsg, true, encode_iotlb(msg));
  if (!st) {
    AXL_WARN("%s: IOTLB miss not sent: %s", label_.c_str(), st.error().message.c_str());
    return false;
  }
  return true;
}

void Handler::backend_readable() {
  if (!backend_req_) return;
  auto m = recv_message(backend_req_.get());
  if (!m) {
    drop_backend_channel(m.error().message);
  } else if (!m->has_value()) {
    drop_backend_channel("closed by the front-end");
  } else {
    auto v = parse_backend_ack(**m, BackendReq::kIotlbMsg);
    if (!v) {
      protocol_errors_.fetch_add(1, std::memory_order_relaxed);
      drop_backend_channel(v.error().message);
    } else {
      iommu_.miss_answered(*v == 0);
      // A failure must turn the wait into a fault; an answered batch lets
      // the waiting rings go on (the update itself came on the main socket
      // before this answer).
      if (*v != 0 || iommu_.outstanding() == 0) retry_pending_ = true;
    }
  }
  if (retry_pending_) {
    retry_pending_ = false;
    retry_waiting();
  }
}

Handler::Done Handler::iotlb_msg(const Message& m) {
  auto msg = parse_iotlb(m);
  if (!msg) return malformed(m, msg.error().message);
  switch (msg->type) {
    case IotlbType::kUpdate:
      if (auto st = iommu_.update(msg->iova, msg->size, msg->uaddr, iommu::Perm(msg->perm)); !st)
        return fail(m, st.error().message);
      retry_pending_ = true;
      return {};
    case IotlbType::kInvalidate:
      // Takes effect now: buffers translate at every access, and rings whose
      // memory went are suspended before the front-end hears back.
      iommu_.invalidate(msg->iova, msg->size);
      revalidate_rings();
      return {};
    case IotlbType::kAccessFail:
      iommu_.access_failed(msg->iova, msg->size);
      retry_pending_ = true;
      return {};
    default:
      return fail(m, "unexpected IOTLB message type");
  }
}

void Handler::revalidate_rings() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    Vring& r = rings_[i];
    if (!r.vq || r.vq->suspended()) continue;
    RingMap rm = translate_ring(r);
    if (rm.fault == iommu::Fault::kNone) {
      r.vq->relocate(rm.layout);
    } else {
      AXL_DEBUG("%s: ring %u suspended: its memory is no longer translated (%s)", label_.c_str(), i,
                iommu::to_string(rm.fault));
      r.vq->suspend();
    }
  }
}

void Handler::retry_waiting() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    Vring& r = rings_[i];
    if (!r.vq) {
      try_start(i);
      continue;
    }
    bool kick = false;
    if (r.vq->suspended()) {
      RingMap rm = translate_ring(r);
      if (rm.fault == iommu::Fault::kNone) {
        r.vq->resume(rm.layout);
        r.vq->notify();
        kick = true;
      }
    }
    if (r.vq->waiting()) {
      r.vq->clear_wait();
      kick = true;
    }
    if (kick) backend_.queue_kicked(i);
  }
  iommu_.end_retry_round();
}

Handler::Vring* Handler::ring(uint32_t index) {
  if (index >= backend_.queue_count() || index >= kMaxQueues) return nullptr;
  return &rings_[index];
}

Handler::Done Handler::fail(const Message& m, const std::string& why) {
  const uint64_t n = protocol_errors_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log::worth_logging(n))
    AXL_WARN("vhost-user %s rejected: %s (%llu protocol errors so far)", to_string(m.req()),
             why.c_str(), static_cast<unsigned long long>(n));
  return Done{false, false, false};
}

Handler::Done Handler::malformed(const Message& m, const std::string& why) {
  const uint64_t n = protocol_errors_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log::worth_logging(n))
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

namespace {
// The messages whose effect a successor must replay (session.h), and the
// state each one sets; ring messages are per ring ("r3.kick").
const char* journal_key(Req r) {
  switch (r) {
    case Req::kSetFeatures:
      return "features";
    case Req::kSetProtocolFeatures:
      return "protocol";
    case Req::kSetOwner:
      return "owner";
    case Req::kSetBackendReqFd:
      return "backend";
    case Req::kSetMemTable:
      return "mem";
    case Req::kSetInflightFd:
      return "inflight";
    case Req::kSetVringNum:
      return "num";
    case Req::kSetVringAddr:
      return "addr";
    case Req::kSetVringBase:
      return "base";
    case Req::kSetVringCall:
      return "call";
    case Req::kSetVringErr:
      return "err";
    case Req::kSetVringEnable:
      return "enable";
    case Req::kSetVringKick:
      return "kick";
    default:
      return nullptr;
  }
}
bool is_ring_message(Req r) {
  switch (r) {
    case Req::kSetVringNum:
    case Req::kSetVringAddr:
    case Req::kSetVringBase:
    case Req::kGetVringBase:
    case Req::kSetVringCall:
    case Req::kSetVringErr:
    case Req::kSetVringEnable:
    case Req::kSetVringKick:
      return true;
    default:
      return false;
  }
}
// The ring a ring message is about (u32 index first; the fd messages' u64
// carries it in its low byte).
uint32_t ring_of(const Message& m) {
  uint32_t idx = 0;
  if (m.payload.size() >= 4) memcpy(&idx, m.payload.data(), 4);
  if (m.req() == Req::kSetVringKick || m.req() == Req::kSetVringCall ||
      m.req() == Req::kSetVringErr)
    idx &= uint32_t(kVringIdxMask);
  return idx;
}
// The order a successor replays them in: what the rings need first, then
// each ring with its kick last (the kick starts it).
std::vector<std::string> replay_order() {
  std::vector<std::string> keys{"protocol", "features", "owner", "backend", "mem", "inflight"};
  for (uint32_t i = 0; i < Handler::kMaxQueues; ++i)
    for (const char* k : {"num", "addr", "base", "call", "err", "enable", "kick"})
      keys.push_back("r" + std::to_string(i) + "." + k);
  return keys;
}
}  // namespace

void Handler::journal(const Message& m, std::vector<UniqueFd>& copies) {
  const char* what = journal_key(m.req());
  if (!what) return;
  const std::string key =
      is_ring_message(m.req()) ? "r" + std::to_string(ring_of(m)) + "." + what : what;
  Journaled j;
  Header h = m.hdr;
  h.flags &= ~kFlagNeedReply;  // a replay answers no one
  j.bytes.resize(kHeaderSize);
  memcpy(j.bytes.data(), &h.request, 4);
  memcpy(j.bytes.data() + 4, &h.flags, 4);
  memcpy(j.bytes.data() + 8, &h.size, 4);
  j.bytes.insert(j.bytes.end(), m.payload.begin(), m.payload.end());
  j.fds = copies.size();
  if (auto old = journal_.find(key); old != journal_.end())
    for (size_t i = j.fds; i < old->second.fds; ++i)
      keeper_->drop_fd(key + "." + std::to_string(i));
  for (size_t i = 0; i < copies.size(); ++i)
    keeper_->keep_fd(key + "." + std::to_string(i), copies[i].get());
  journal_[key] = std::move(j);
  publish_journal();
}

void Handler::unjournal(const std::string& key) {
  auto it = journal_.find(key);
  if (it == journal_.end()) return;
  if (keeper_)
    for (size_t i = 0; i < it->second.fds; ++i) keeper_->drop_fd(key + "." + std::to_string(i));
  journal_.erase(it);
}

void Handler::unjournal_rings() {
  std::vector<std::string> keys;
  for (auto& [k, j] : journal_)
    if (k[0] == 'r') keys.push_back(k);
  for (auto& k : keys) unjournal(k);
}

void Handler::publish_journal() {
  if (!keeper_) return;
  KvRecord rec;
  for (auto& [k, j] : journal_) {
    rec["m." + k] = hex_encode(j.bytes.data(), j.bytes.size());
    rec["n." + k] = std::to_string(j.fds);
  }
  keeper_->keep_record(rec);
}

Status Handler::resume(const KvRecord& record, std::map<std::string, UniqueFd>& fds) {
  for (const std::string& key : replay_order()) {
    auto it = record.find("m." + key);
    if (it == record.end()) continue;
    auto bytes = hex_decode(it->second);
    auto nfds = kv_number(record, "n." + key, kMaxFds);
    if (!bytes || !nfds || bytes->size() < kHeaderSize)
      return make_error("kept session: message '" + key + "' is malformed");
    Message m;
    memcpy(&m.hdr.request, bytes->data(), 4);
    memcpy(&m.hdr.flags, bytes->data() + 4, 4);
    memcpy(&m.hdr.size, bytes->data() + 8, 4);
    m.payload.assign(bytes->begin() + kHeaderSize, bytes->end());
    if (m.hdr.size != m.payload.size() || m.hdr.size > kMaxPayload || !journal_key(m.req()) ||
        (m.hdr.flags & (kFlagReply | kFlagNeedReply)))
      return make_error("kept session: message '" + key + "' is malformed");
    for (uint64_t i = 0; i < *nfds; ++i) {
      auto f = fds.find(key + "." + std::to_string(i));
      if (f == fds.end() || !f->second)
        return make_error("kept session: fd " + std::to_string(i) + " of '" + key +
                          "' was not kept");
      m.fds.push_back(std::move(f->second));
      fds.erase(f);
    }
    const Req req = m.req();
    if (handle(-1, std::move(m)) == Outcome::kClose)
      return make_error(std::string("kept session: ") + to_string(req) + " did not apply");
    if (req == Req::kSetBackendReqFd) discard_stale_backend_replies();
  }
  return {};
}

void Handler::discard_stale_backend_replies() {
  // The previous process may have died with IOTLB misses unanswered; their
  // answers are on this channel now.  Answers are matched to misses in
  // order, so one taken for this process's own first miss would settle the
  // wrong page, and a failure would mark that page untranslatable until the
  // front-end maps it again (a ring on it would never start).  What is
  // already here when the channel is taken over is the predecessor's; an
  // answer the front-end sends later still could be taken for ours, a
  // window of the front-end's own latency, not of the restart.
  size_t n = 0;
  while (backend_req_) {
    pollfd p{backend_req_.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) != 1 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) break;
    auto m = recv_message(backend_req_.get());
    if (!m || !m->has_value()) {
      drop_backend_channel(m ? "closed by the front-end" : m.error().message);
      break;
    }
    ++n;
  }
  if (n)
    AXL_INFO("%s: %zu answer%s to the previous process's requests discarded", label_.c_str(), n,
             n == 1 ? "" : "s");
}

Handler::Outcome Handler::handle(int sock, Message msg) {
  if (msg.hdr.flags & kFlagReply) {
    malformed(msg, "front-end sent a reply");
    return Outcome::kClose;
  }
  AXL_DEBUG("vhost-user <- %s flags=0x%x size=%u fds=%zu", to_string(msg.req()), msg.hdr.flags,
            msg.hdr.size, msg.fds.size());
  // What the journal keeps of it, taken before the handler consumes the fds.
  std::optional<Message> kept;
  std::vector<UniqueFd> copies;
  if (keeper_ && journal_key(msg.req())) {
    kept.emplace();
    kept->hdr = msg.hdr;
    kept->payload = msg.payload;
    for (auto& fd : msg.fds) copies.emplace_back(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  }
  const uint32_t ring_index = is_ring_message(msg.req()) ? ring_of(msg) : 0;
  const Req req = msg.req();
  Done d = dispatch(sock, msg);
  if (d.close) return Outcome::kClose;
  if (keeper_ && d.ok) {
    if (kept) {
      journal(*kept, copies);
    } else if (req == Req::kGetVringBase) {
      // Stopped: a successor must not start it again before QEMU does.
      unjournal("r" + std::to_string(ring_index) + ".kick");
      unjournal("r" + std::to_string(ring_index) + ".call");
      publish_journal();
    } else if (req == Req::kResetOwner || req == Req::kResetDevice) {
      unjournal_rings();
      publish_journal();
    }
  }
  // REPLY_ACK: a request with NEED_REPLY and no reply of its own gets a u64,
  // zero for success (vhost-user.rst "REPLY_ACK").
  if (msg.need_reply() && !d.replied) {
    auto ack = encode_u64(d.ok ? 0 : 1);
    if (!send_reply(sock, msg.hdr, ack)) return Outcome::kClose;
  }
  // Work an IOTLB message released runs after the front-end has its answer
  // (it waits for it, and may be what the retried accesses ask next).
  if (retry_pending_) {
    retry_pending_ = false;
    retry_waiting();
  }
  return Outcome::kKeep;
}

Handler::Done Handler::dispatch(int sock, Message& m) {
  switch (m.req()) {
    case Req::kGetFeatures: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(offered_features()));
    }
    case Req::kSetFeatures: {
      auto v = parse_u64(m);
      if (!v) return malformed(m, v.error().message);
      return set_features(m, *v);
    }
    case Req::kGetProtocolFeatures: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(offered_protocol()));
    }
    case Req::kSetProtocolFeatures: {
      auto v = parse_u64(m);
      if (!v) return malformed(m, v.error().message);
      if (*v & ~offered_protocol()) return fail(m, "protocol bits never offered");
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
      inflight_.reset();
      return {};
    }
    case Req::kResetDevice: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      for (uint32_t i = 0; i < kMaxQueues; ++i) {
        stop(i);
        rings_[i] = Vring{};
      }
      inflight_.reset();
      acked_features_ = 0;
      set_translating(false);
      return {};
    }
    case Req::kGetQueueNum: {
      if (auto st = expect_empty(m); !st) return malformed(m, st.error().message);
      return reply(sock, m, encode_u64(backend_.queue_count()));
    }
    case Req::kSetMemTable:
      return set_mem_table(m);
    case Req::kGetInflightFd:
      return get_inflight(sock, m);
    case Req::kSetInflightFd:
      return set_inflight(m);
    case Req::kSetBackendReqFd:
      return set_backend_req_fd(m);
    case Req::kIotlbMsg:
      return iotlb_msg(m);
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
      // A clean stop: nothing is in flight, and the next start takes QEMU's base.
      if (inflight_ && s->index < inflight_->queues()) inflight_->reset_queue(uint16_t(s->index));
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
      if (auto st = backend_.set_config(c->offset, c->data); !st)
        return fail(m, st.error().message);
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
  auto mem = iommu::GuestMemory::map(specs);
  if (!mem) return fail(m, mem.error().message);
  // Swap tables; running rings get their host views re-derived (chains in
  // flight carry guest addresses only, so nothing else dangles).
  std::unique_ptr<iommu::GuestMemory> old = std::move(mem_);
  mem_ = std::move(mem).value();
  dma_.set_memory(mem_.get());
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    Vring& r = rings_[i];
    if (r.vq) {
      RingMap rm = translate_ring(r);
      if (rm.fault == iommu::Fault::kNone) {
        if (r.vq->suspended())
          r.vq->resume(rm.layout);
        else
          r.vq->relocate(rm.layout);
      } else if (rm.fault == iommu::Fault::kPending) {
        r.vq->suspend();
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

Handler::Done Handler::get_inflight(int sock, const Message& m) {
  auto i = parse_inflight(m, 0);
  if (!i) return malformed(m, i.error().message);
  // QEMU takes a zero size for "no tracking" and goes on without it.
  auto none = [&](const std::string& why) {
    fail(m, why);
    return reply(sock, m, encode_inflight({}));
  };
  if (i->num_queues == 0 || i->num_queues > backend_.queue_count() ||
      i->num_queues > virtio::kInflightMaxQueues)
    return none("GET_INFLIGHT_FD: " + std::to_string(i->num_queues) + " queues");
  if (!is_pow2(i->queue_size) || i->queue_size > backend_.max_queue_size())
    return none("GET_INFLIGHT_FD: queue size " + std::to_string(i->queue_size));
  auto mem = virtio::InflightMemory::create(i->num_queues, i->queue_size);
  if (!mem) return none(mem.error().message);
  // QEMU keeps it and hands it back with SET_INFLIGHT_FD, now and after
  // a reconnect; it is used from then on.
  InflightInfo out{mem->size(), 0, i->num_queues, i->queue_size};
  const int fd = mem->fd();
  return [&] {
    if (auto st = send_reply(sock, m.hdr, encode_inflight(out), std::span<const int>(&fd, 1)); !st)
      return Done{false, true, true};
    return Done{true, false, true};
  }();
}

Handler::Done Handler::set_inflight(Message& m) {
  auto i = parse_inflight(m, 1);
  if (!i) return malformed(m, i.error().message);
  for (uint32_t r = 0; r < kMaxQueues; ++r)
    if (rings_[r].vq) return fail(m, "SET_INFLIGHT_FD while rings run");
  auto mem = virtio::InflightMemory::map(std::move(m.fds[0]), i->mmap_size, i->mmap_offset,
                                         i->num_queues, i->queue_size);
  m.fds.clear();
  if (!mem) return fail(m, "SET_INFLIGHT_FD: " + mem.error().message);
  inflight_ = std::make_unique<virtio::InflightMemory>(std::move(mem).value());
  return {};
}

void Handler::ensure_inflight() {
  if (inflight_) return;
  const uint16_t queues = uint16_t(std::min<uint32_t>(backend_.queue_count(), kMaxQueues));
  const uint16_t size = uint16_t(std::min<uint32_t>(backend_.max_queue_size(), 32768));
  auto mem = virtio::InflightMemory::create(queues, size);
  if (!mem) {
    AXL_WARN("%s: no inflight region: %s", label_.c_str(), mem.error().message.c_str());
    return;
  }
  inflight_ = std::make_unique<virtio::InflightMemory>(std::move(mem).value());
  if (!keeper_) return;
  // Journaled as if QEMU had sent it, so a successor maps the same region.
  Message m;
  m.payload = encode_inflight({inflight_->size(), 0, queues, size});
  m.hdr = Header{uint32_t(Req::kSetInflightFd), kVersion, uint32_t(m.payload.size())};
  std::vector<UniqueFd> copies;
  copies.emplace_back(::fcntl(inflight_->fd(), F_DUPFD_CLOEXEC, 0));
  journal(m, copies);
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

Handler::RingMap Handler::translate_ring(const Vring& r) {
  RingMap out;
  if (!mem_ || !r.addr_set || r.num == 0) return out;
  uint8_t *d = nullptr, *a = nullptr, *u = nullptr;
  virtio::Virtqueue::Layout paged{r.num, {}, {}, {}};
  if (translating_) {
    // IOVAs: each part must be mapped with the access the device makes
    // (descriptors and avail read, used written).  A part is contiguous in
    // IOVA only (Linux backs a coherent allocation with separate pages), so
    // it is accessed page by page (Virtqueue::RingPart).  All three are
    // asked at once.
    using iommu::Access;
    using iommu::Fault;
    virtio::Virtqueue::RingPart* parts[3] = {&paged.desc, &paged.avail, &paged.used};
    const uint64_t addrs[3] = {r.addr.desc, r.addr.avail, r.addr.used};
    const uint64_t lens[3] = {virtio::desc_table_bytes(r.num), virtio::avail_ring_bytes(r.num),
                              virtio::used_ring_bytes(r.num)};
    const Access acc[3] = {Access::kRead, Access::kRead, Access::kWrite};
    Fault f[3];
    for (int i = 0; i < 3; ++i)
      f[i] = dma_.host_pages(addrs[i], lens[i], acc[i], &parts[i]->pages, &parts[i]->first);
    out.fault = Fault::kNone;
    for (Fault x : f)
      if (x != Fault::kNone && x != Fault::kPending) out.fault = x;
    if (out.fault == Fault::kNone)
      for (Fault x : f)
        if (x == Fault::kPending) out.fault = Fault::kPending;
    if (out.fault != Fault::kNone) return out;
    // §2.7 alignment (descriptor table 16, avail 2, used 4), and what the
    // atomic accesses need: every page's host address 16-aligned too, so an
    // aligned field never straddles two pages.
    const unsigned align[3] = {16, 2, 4};
    for (int i = 0; i < 3; ++i) {
      bool ok = parts[i]->first % align[i] == 0;
      for (uint8_t* pg : parts[i]->pages) ok = ok && reinterpret_cast<uintptr_t>(pg) % 16 == 0;
      if (!ok) {
        out.fault = iommu::Fault::kOutOfRange;
        return out;
      }
    }
    out.fault = Fault::kNone;
    out.layout = std::move(paged);
    return out;
  } else {
    // Front-end virtual addresses (vhost-user "Ring addresses").
    auto td = mem_->translate_uva(r.addr.desc, virtio::desc_table_bytes(r.num));
    auto ta = mem_->translate_uva(r.addr.avail, virtio::avail_ring_bytes(r.num));
    auto tu = mem_->translate_uva(r.addr.used, virtio::used_ring_bytes(r.num));
    using L = iommu::GuestMemory::Lookup;
    if (td.result != L::kOk || ta.result != L::kOk || tu.result != L::kOk) return out;
    d = td.host;
    a = ta.host;
    u = tu.host;
  }
  // §2.7 alignment: descriptor table 16, avail 2, used 4; also what the
  // atomic accesses to the indices need.
  if (reinterpret_cast<uintptr_t>(d) % 16 || reinterpret_cast<uintptr_t>(a) % 2 ||
      reinterpret_cast<uintptr_t>(u) % 4) {
    out.fault = iommu::Fault::kOutOfRange;
    return out;
  }
  out.fault = iommu::Fault::kNone;
  out.layout = virtio::Virtqueue::Layout{r.num, d, a, u};
  return out;
}

void Handler::try_start(uint32_t index) {
  Vring& r = rings_[index];
  if (r.vq || !r.kick_ready || !r.kick) return;
  if (protocol_features_on() && !r.enabled) return;
  RingMap rm = translate_ring(r);
  // Pending: started when the front-end has answered (retry_waiting).
  if (rm.fault == iommu::Fault::kPending) return;
  if (rm.fault != iommu::Fault::kNone) {
    if (mem_ && r.addr_set)
      AXL_WARN("vhost-user ring %u: addresses outside guest memory or misaligned", index);
    return;
  }
  const auto* layout = &rm.layout;
  bool event_idx = acked_features_ & virtio::bit(virtio::kFRingEventIdx);
  bool indirect = acked_features_ & virtio::bit(virtio::kFRingIndirectDesc);
  r.vq = std::make_unique<virtio::Virtqueue>(&dma_, *layout, r.base, event_idx, indirect);
  r.vq->set_call_fd(r.call.get());
  ensure_inflight();
  size_t again = 0;
  if (inflight_ && index < inflight_->queues() && r.num <= inflight_->queue_size()) {
    again = r.vq->track_inflight(inflight_->queue(uint16_t(index)));
    if (const char* e = r.vq->inflight_error())
      AXL_WARN("%s: ring %u: inflight region ignored: %s", label_.c_str(), index, e);
  }
  AXL_INFO("vhost-user ring %u started: size %u base %u%s", index, r.num, r.vq->last_avail_idx(),
           again ? (", " + std::to_string(again) + " in flight handed out again").c_str() : "");
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
  // The session is over: nothing of it is to be resumed.
  std::vector<std::string> keys;
  for (auto& [k, j] : journal_) keys.push_back(k);
  for (auto& k : keys) unjournal(k);
  publish_journal();
  if (translating_) {
    auto st = iommu_.stats();
    AXL_INFO("%s: iotlb: %llu updates, %llu invalidates, %llu misses (%llu failed), %llu faults",
             label_.c_str(), (unsigned long long)st.updates, (unsigned long long)st.invalidates,
             (unsigned long long)st.misses, (unsigned long long)st.miss_failures,
             (unsigned long long)dma_.faults());
  }
  backend_req_.reset();
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    stop(i);
    rings_[i] = Vring{};
  }
  // QEMU hands its own region back when it reconnects; one of ours is
  // given up (its rings then resume from QEMU's base).
  inflight_.reset();
  owner_ = false;
  features_set_ = false;
  acked_features_ = 0;
  acked_protocol_ = 0;
  translating_ = false;
  retry_pending_ = false;
  iommu_.reset();
  dma_.set_translator(nullptr);
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
