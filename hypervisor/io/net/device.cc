#include "hypervisor/io/net/device.h"

#include <string.h>

#include <poll.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "hypervisor/io/net/steer.h"

namespace axl::hv::io::net {

NetDevice::NetDevice(NetDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms)
    : spec_(spec),
      port_("virtio-net", std::move(chan), io_timeout_ms,
            {[this](const std::string& cause) { report_quarantine(cause); },
             [this](uint64_t rebind_ns, uint64_t served_ns) {
               report_first_served(rebind_ns, served_ns);
             }}),
      on_answer_([this](uint32_t id, const channel::Request& req, const channel::Response& r) {
        on_answer(id, req, r);
      }),
      rx_slots_(port_.slots() / 2),
      slots_(port_.slots()),
      rxq_(std::clamp<uint32_t>(spec_.queue_pairs, 1, kMaxNetQueuePairs)),
      txq_(rxq_.size()) {
  for (uint32_t id = rx_slots_; id < port_.slots(); ++id) tx_free_.push_back(id);
  // RX buffers are posted from the start: frames may arrive before the
  // guest's driver is up and wait in their slots.
  for (uint32_t id = 0; id < rx_slots_; ++id) post_rx(id);
  port_.kick();
}

uint64_t NetDevice::features() const {
  return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingIndirectDesc) |
         virtio::bit(virtio::kFRingEventIdx) | virtio::bit(kFMrgRxbuf) | virtio::bit(kFCsum) |
         virtio::bit(kFGuestCsum) | virtio::bit(kFGuestTso4) | virtio::bit(kFGuestTso6) |
         virtio::bit(kFGuestEcn) | virtio::bit(kFHostTso4) | virtio::bit(kFHostTso6) |
         virtio::bit(kFHostEcn) | (rxq_.size() > 1 ? virtio::bit(kFMq) : 0);
}

void NetDevice::set_acked_features(uint64_t f) {
  mrg_rxbuf_ = f & virtio::bit(kFMrgRxbuf);
  offloads_ = GuestOffloads::from_features(f);
  host_csum_ = f & virtio::bit(kFCsum);
  host_tso_ = host_csum_ && (f & (virtio::bit(kFHostTso4) | virtio::bit(kFHostTso6)));
}

void NetDevice::post_rx(uint32_t id) {
  slots_[id].use = Use::kRxPosted;
  channel::Request r{};
  r.id = id;
  r.op = uint16_t(channel::Op::kNetRxPost);
  r.len = port_.slot_size();
  port_.issue(r, DriverPort::Kind::kWaiting);
}

void NetDevice::sanitize_tx(uint32_t id) {
  uint8_t* txh = port_.slot(id);
  if (!host_csum_) txh[0] = 0;
  if (!host_tso_) txh[1] = kGsoNone;
}

void NetDevice::queue_started(uint32_t index, virtio::Virtqueue& vq) {
  const uint32_t pair = index / 2;
  if (pair >= rxq_.size()) return;  // the handler offers queue_count() rings only
  if (index % 2 == 0) {
    rxq_[pair].vq = &vq;
    rehome_rx();
  } else {
    txq_[pair].vq = &vq;
    ++txq_[pair].gen;
  }
}

void NetDevice::queue_stopped(uint32_t index) {
  const uint32_t pair = index / 2;
  if (pair >= rxq_.size()) return;
  // The front-end resumes the ring from last_avail (vhost-user.rst
  // GET_VRING_BASE): nothing popped may stay unanswered.
  if (index % 2 == 0) {
    RxQueue& q = rxq_[pair];
    // RX buffers held for a frame that did not fit yet go back empty (the
    // driver counts a length error and reuses them).
    if (q.vq) {
      for (auto& c : q.held) q.vq->push(c.head, 0);
      if (!q.held.empty()) q.vq->notify();
    }
    q.vq = nullptr;
    q.held.clear();
    q.held_bytes = 0;
    rehome_rx();
  } else {
    if (txq_[pair].vq) drain_tx(pair);
    txq_[pair].vq = nullptr;
  }
}

void NetDevice::queue_kicked(uint32_t index) {
  const uint32_t pair = index / 2;
  if (pair >= rxq_.size()) return;
  if (index % 2 == 0)
    deliver_rx(pair);
  else
    process_tx(pair);
}

uint32_t NetDevice::steer(uint32_t hash) const {
  uint32_t started = 0;
  for (const RxQueue& q : rxq_) started += q.vq != nullptr;
  if (started == 0) return 0;
  uint32_t pick = hash % started;
  for (uint32_t i = 0; i < rxq_.size(); ++i)
    if (rxq_[i].vq && pick-- == 0) return i;
  return 0;
}

void NetDevice::rehome_rx() {
  RxQueue* to = nullptr;
  for (RxQueue& q : rxq_)
    if (q.vq) {
      to = &q;
      break;
    }
  if (!to) return;  // none started (the device is stopping): frames wait where they are
  bool moved = false;
  for (RxQueue& q : rxq_) {
    if (q.vq || q.filled.empty()) continue;
    to->filled.insert(to->filled.end(), q.filled.begin(), q.filled.end());
    q.filled.clear();
    moved = true;
  }
  if (moved) deliver_rx();
}

std::vector<int> NetDevice::extra_fds() const { return port_.fds(); }

void NetDevice::extra_fd_ready(int fd) {
  if (port_.fd_ready(fd, on_answer_)) after_answers();
}

DeviceStats NetDevice::stats() const {
  DeviceStats s;
  s.requests = frames_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.bad_descriptors = bad_descriptors_.load(std::memory_order_relaxed);
  port_.fill(s);
  return s;
}

// Only TX frames are owed (the port's watchdog checks them): a posted RX
// buffer waits, legitimately, for a frame that may never come.
void NetDevice::drain_tx(uint32_t pair) {
  port_.drain(
      [this, pair] {
        size_t n = 0;
        for (const Slot& s : slots_)
          n += s.use == Use::kTx && s.queue == pair && s.queue_gen == txq_[pair].gen;
        return n;
      },
      on_answer_);
  // No new frames from this queue: its ring is being handed back.  What the
  // drain completed for the others is signalled as after any answers.
  for (TxQueue& t : txq_) {
    if (t.done && t.vq) t.vq->notify();
    t.done = false;
  }
  if (rx_new_) deliver_rx();
  rx_new_ = false;
  port_.kick();
}

void NetDevice::bad_chain(const char* ring, const char* why) {
  const uint64_t n = bad_descriptors_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log::worth_logging(n))
    AXL_WARN("virtio-net %s: bad chain: %s (%llu so far)", ring, why,
             static_cast<unsigned long long>(n));
}

void NetDevice::process_tx() {
  const uint32_t n = uint32_t(txq_.size());
  const uint32_t first = next_tx_;
  next_tx_ = (next_tx_ + 1) % n;
  for (uint32_t i = 0; i < n; ++i) process_tx((first + i) % n);
}

void NetDevice::process_tx(uint32_t pair) {
  TxQueue& t = txq_[pair];
  virtio::Virtqueue* vq = t.vq;
  if (!vq || port_.state() != DriverPort::State::kLive) return;
  for (;;) {
    while (!tx_free_.empty()) {
      auto p = vq->pop();
      if (p.error != virtio::ChainError::kNone) {
        bad_chain("tx", virtio::to_string(p.error));
        if (p.bad_head) vq->push(*p.bad_head, 0);
        if (vq->broken()) break;
        continue;
      }
      if (!p.chain) break;
      virtio::Chain& c = *p.chain;
      // §5.1.6.2: a TX chain is header + frame, all device-readable.
      if (c.writable_bytes != 0 || c.readable_bytes < kHdrBytes ||
          c.readable_bytes > port_.slot_size()) {
        bad_chain("tx", "not a header and a frame, device-readable, within a slot");
        vq->push(c.head, 0);
        continue;
      }
      uint32_t id = tx_free_.front();
      auto r = vq->dma().copy_from_guest(c.segs, 0, {port_.slot(id), size_t(c.readable_bytes)});
      if (!r.ok() || r.bytes != c.readable_bytes) {
        vq->push(c.head, 0);
        continue;
      }
      tx_free_.pop_front();
      sanitize_tx(id);
      Slot& s = slots_[id];
      s.use = Use::kTx;
      s.queue = pair;
      s.queue_gen = t.gen;
      channel::Request req{};
      req.id = id;
      req.op = uint16_t(channel::Op::kNetTx);
      req.len = uint32_t(c.readable_bytes);
      s.chain = std::move(c);
      port_.issue(req);
    }
    if (tx_free_.empty() || vq->broken() || !vq->enable_notification()) break;
  }
  port_.kick();
  vq->notify();
}

bool NetDevice::deliver_one(RxQueue& q, const Filled& f) {
  virtio::Virtqueue* vq = q.vq;
  // Gather guest buffers until the frame fits (§5.1.6.3.1); without
  // MRG_RXBUF one chain must take it whole.
  while (q.held_bytes < f.len && (mrg_rxbuf_ || q.held.empty())) {
    auto p = vq->pop();
    if (p.error != virtio::ChainError::kNone) {
      bad_chain("rx", virtio::to_string(p.error));
      if (p.bad_head) vq->push(*p.bad_head, 0);
      if (vq->broken()) return false;
      continue;
    }
    if (!p.chain) return false;  // wait for the guest to add buffers
    if (p.chain->readable_bytes != 0 || p.chain->writable_bytes < kHdrBytes) {
      bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
      vq->push(p.chain->head, 0);
      continue;
    }
    q.held_bytes += p.chain->writable_bytes;
    q.held.push_back(std::move(*p.chain));
  }
  uint8_t* frame = port_.slot(f.id);
  // The header is the driver's: copy it out once and make it valid for
  // this guest before anything of the frame reaches guest memory.
  NetHdr nh;
  memcpy(&nh, frame, sizeof nh);
  if (sanitize_rx(nh, {frame + kHdrBytes, f.len - kHdrBytes}, offloads_) != RxVerdict::kDeliver) {
    rx_dropped_.fetch_add(1, std::memory_order_relaxed);
    return true;  // the held guest buffers stay for the next frame
  }
  if (q.held_bytes < f.len) {
    // No MRG_RXBUF and the one buffer is too small: drop the frame.
    rx_dropped_.fetch_add(1, std::memory_order_relaxed);
    vq->push(q.held.front().head, 0);
  } else {
    uint8_t hdr[kHdrBytes];
    memcpy(hdr, &nh, sizeof hdr);
    size_t used_chains = 0;
    uint64_t off = 0;
    std::vector<std::pair<uint16_t, uint32_t>> used;
    bool fault = false;
    for (auto& c : q.held) {
      if (off >= f.len) break;
      uint64_t n = std::min<uint64_t>(c.writable_bytes, f.len - off);
      iommu::CopyResult r;
      if (off == 0) {
        r = vq->dma().copy_to_guest(c.segs, 0, hdr);
        if (r.ok())
          r = vq->dma().copy_to_guest(c.segs, kHdrBytes,
                                      {frame + kHdrBytes, size_t(n - kHdrBytes)});
      } else {
        r = vq->dma().copy_to_guest(c.segs, 0, {frame + off, size_t(n)});
      }
      if (!r.ok()) fault = true;
      used.push_back({c.head, uint32_t(n)});
      off += n;
      ++used_chains;
    }
    // num_buffers (§5.1.6.4) goes into the first buffer's header.
    uint16_t num_buffers = uint16_t(used_chains);
    vq->dma().copy_to_guest(q.held.front().segs, 10, {reinterpret_cast<uint8_t*>(&num_buffers), 2});
    for (auto& [head, len] : used) vq->push(head, fault ? 0 : len);
    if (!fault) {
      frames_.fetch_add(1, std::memory_order_relaxed);
      bytes_.fetch_add(f.len - kHdrBytes, std::memory_order_relaxed);
    }
    q.held.erase(q.held.begin(), q.held.begin() + used_chains);
    q.held_bytes = 0;
    for (auto& c : q.held) q.held_bytes += c.writable_bytes;
    return true;
  }
  q.held.erase(q.held.begin());
  q.held_bytes = 0;
  for (auto& c : q.held) q.held_bytes += c.writable_bytes;
  return true;
}

void NetDevice::deliver_rx() {
  for (uint32_t i = 0; i < rxq_.size(); ++i)
    if (!rxq_[i].filled.empty()) deliver_rx(i);
}

void NetDevice::deliver_rx(uint32_t pair) {
  RxQueue& q = rxq_[pair];
  if (!q.vq) return;
  bool reposted = false;
  for (;;) {
    while (!q.filled.empty()) {
      if (!deliver_one(q, q.filled.front())) break;
      uint32_t id = q.filled.front().id;
      q.filled.pop_front();
      if (!port_.quarantined()) {
        post_rx(id);
        reposted = true;
      }
    }
    if (q.filled.empty() || q.vq->broken() || !q.vq->enable_notification()) break;
  }
  if (reposted) port_.kick();
  q.vq->notify();
}

Status NetDevice::rebind(channel::HvEnd fresh) {
  // TX frames still at the old driver go again, in the order first sent.
  auto resent = port_.rebind(std::move(fresh), [this](uint32_t id, const channel::Request& req) {
    Slot& s = slots_[id];
    virtio::Virtqueue* vq = txq_[s.queue].vq;
    const bool live = vq && s.queue_gen == txq_[s.queue].gen;
    iommu::CopyResult r;
    if (live) r = vq->dma().copy_from_guest(s.chain.segs, 0, {port_.slot(id), size_t(req.len)});
    if (!live || !r.ok() || r.bytes != req.len) {
      if (live) vq->push(s.chain.head, 0);
      s.use = Use::kFree;
      s.chain = {};
      tx_free_.push_back(id);
      return false;
    }
    sanitize_tx(id);
    return true;
  });
  if (!resent) return resent.error();
  // Frames that arrived into the old pool are dropped (the old memory is not
  // trusted; TCP retransmits); every RX slot is posted again on the new one.
  for (RxQueue& q : rxq_) q.filled.clear();
  for (uint32_t id = 0; id < rx_slots_; ++id) post_rx(id);
  port_.kick();
  AXL_INFO("virtio-net: rebound to a fresh channel, %zu tx frames resent", *resent);
  for (TxQueue& t : txq_)
    if (t.vq) t.vq->notify();
  process_tx();
  return {};
}

void NetDevice::on_answer(uint32_t id, const channel::Request& req, const channel::Response& resp) {
  Slot& s = slots_[id];
  if (s.use == Use::kTx) {
    s.use = Use::kFree;
    tx_free_.push_back(id);
    TxQueue& t = txq_[s.queue];
    if (t.vq && s.queue_gen == t.gen) {
      t.vq->push(s.chain.head, 0);
      t.done = true;
      if (resp.status == 0) {
        frames_.fetch_add(1, std::memory_order_relaxed);
        bytes_.fetch_add(req.len - kHdrBytes, std::memory_order_relaxed);
      }
    }
    s.chain = {};
    return;
  }
  // RX: a frame of resp.len bytes (header first) now sits in the slot.
  if (resp.status != 0 || resp.len < kHdrBytes) {
    if (resp.status == 0)
      return port_.violation("protocol violation: rx frame of " + std::to_string(resp.len) +
                             " bytes for id " + std::to_string(id) + " is shorter than its header");
    post_rx(id);
    return;
  }
  s.use = Use::kRxFilled;
  // Steered by the frame's flow; with one queue pair there is nothing to
  // choose (and nothing to parse).
  const uint32_t pair =
      rxq_.size() == 1
          ? 0
          : steer(flow_hash({port_.slot(id) + kHdrBytes, size_t(resp.len - kHdrBytes)}));
  rxq_[pair].filled.push_back({id, resp.len});
  rx_new_ = true;
}

void NetDevice::after_answers() {
  for (TxQueue& t : txq_) {
    if (t.done && t.vq) t.vq->notify();
    t.done = false;
  }
  if (rx_new_) deliver_rx();
  rx_new_ = false;
  port_.kick();
  // Freed TX slots let waiting frames in.
  process_tx();
}

}  // namespace axl::hv::io::net
