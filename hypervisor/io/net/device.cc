#include "hypervisor/io/net/device.h"

#include <string.h>

#include <poll.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"

namespace axl::hv::io::net {

NetDevice::NetDevice(NetDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms)
    : spec_(spec),
      chan_(std::make_unique<channel::HvEnd>(std::move(chan))),
      rx_slots_(chan_->slots() / 2),
      slots_(chan_->slots()),
      watchdog_(io_timeout_ms) {
  for (uint32_t id = rx_slots_; id < chan_->slots(); ++id) tx_free_.push_back(id);
  // RX buffers are posted from the start: frames may arrive before the
  // guest's driver is up and wait in their slots.
  for (uint32_t id = 0; id < rx_slots_; ++id) post_rx(id);
  chan_->kick();
}

uint64_t NetDevice::features() const {
  return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingIndirectDesc) |
         virtio::bit(virtio::kFRingEventIdx) | virtio::bit(kFMrgRxbuf) | virtio::bit(kFCsum) |
         virtio::bit(kFGuestCsum) | virtio::bit(kFGuestTso4) | virtio::bit(kFGuestTso6) |
         virtio::bit(kFGuestEcn) | virtio::bit(kFHostTso4) | virtio::bit(kFHostTso6) |
         virtio::bit(kFHostEcn);
}

void NetDevice::set_acked_features(uint64_t f) {
  mrg_rxbuf_ = f & virtio::bit(kFMrgRxbuf);
  offloads_ = GuestOffloads::from_features(f);
  host_csum_ = f & virtio::bit(kFCsum);
  host_tso_ = host_csum_ && (f & (virtio::bit(kFHostTso4) | virtio::bit(kFHostTso6)));
}

void NetDevice::post_rx(uint32_t id) {
  Slot& s = slots_[id];
  s.use = Use::kRxPosted;
  s.completed = false;
  s.posted_len = chan_->slot_size();
  s.filled_len = 0;
  channel::Request r{};
  r.id = id;
  r.op = uint16_t(channel::Op::kNetRxPost);
  r.pool_off = uint32_t(uint64_t(id) * chan_->slot_size());
  r.len = chan_->slot_size();
  chan_->push(r);
}

void NetDevice::queue_started(uint32_t index, virtio::Virtqueue& vq) {
  if (index == kRxQueue) {
    rx_vq_ = &vq;
  } else if (index == kTxQueue) {
    tx_vq_ = &vq;
    ++tx_gen_;
  }
}

void NetDevice::queue_stopped(uint32_t index) {
  // The front-end resumes the ring from last_avail (vhost-user.rst
  // GET_VRING_BASE): nothing popped may stay unanswered.
  if (index == kRxQueue) {
    // RX buffers held for a frame that did not fit yet go back empty (the
    // driver counts a length error and reuses them).
    if (rx_vq_) {
      for (auto& c : rx_held_) rx_vq_->push(c.head, 0);
      if (!rx_held_.empty()) rx_vq_->notify();
    }
    rx_vq_ = nullptr;
    rx_held_.clear();
    rx_held_bytes_ = 0;
  } else if (index == kTxQueue) {
    if (tx_vq_) drain_tx();
    tx_vq_ = nullptr;
  }
}

void NetDevice::queue_kicked(uint32_t index) {
  if (index == kRxQueue)
    deliver_rx();
  else if (index == kTxQueue)
    process_tx();
}

std::vector<int> NetDevice::extra_fds() const {
  if (quarantined_) return {};
  if (watchdog_.fd() >= 0) return {chan_->resp_kick_fd(), watchdog_.fd()};
  return {chan_->resp_kick_fd()};
}

void NetDevice::extra_fd_ready(int fd) {
  if (quarantined_) return;
  if (fd == watchdog_.fd()) {
    watchdog_.ack();
    check_progress();
    return;
  }
  if (fd != chan_->resp_kick_fd()) return;
  chan_->ack_doorbell();
  handle_responses();
}

// Only TX frames are owed: a posted RX buffer waits, legitimately, for a
// frame that may never come.
void NetDevice::check_progress() {
  const Slot* oldest = nullptr;
  uint32_t oldest_id = 0;
  for (uint32_t id = rx_slots_; id < slots_.size(); ++id) {
    const Slot& s = slots_[id];
    if (s.use == Use::kTx && (!oldest || s.sent_ns < oldest->sent_ns)) {
      oldest = &s;
      oldest_id = id;
    }
  }
  if (!oldest) return;
  if (auto cause = stall_cause(watchdog_.deadline_ms(), monotonic_ns(), oldest_id, oldest->sent_ns))
    violation(*cause);
}

DeviceStats NetDevice::stats() const {
  DeviceStats s;
  s.requests = frames_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.bad_descriptors = bad_descriptors_.load(std::memory_order_relaxed);
  s.driver_violations = violations_.load(std::memory_order_relaxed);
  clock_.fill(s);
  return s;
}

void NetDevice::drain_tx() {
  constexpr auto kDrainTimeout = std::chrono::seconds(2);
  auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  stopping_ = true;
  auto pending = [this] {
    size_t n = 0;
    for (const Slot& s : slots_) n += s.use == Use::kTx && s.queue_gen == tx_gen_;
    return n;
  };
  while (!quarantined_ && pending() > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      AXL_WARN("virtio-net: tx ring stopped with %zu frames still at the driver", pending());
      break;
    }
    pollfd p{chan_->resp_kick_fd(), POLLIN, 0};
    ::poll(&p, 1, int(left.count()));
    chan_->ack_doorbell();
    handle_responses();
  }
  stopping_ = false;
}

void NetDevice::process_tx() {
  if (!tx_vq_ || quarantined_ || stopping_) return;
  for (;;) {
    while (!tx_free_.empty()) {
      auto p = tx_vq_->pop();
      if (p.error != virtio::ChainError::kNone) {
        bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
        AXL_WARN("virtio-net tx: bad chain: %s", virtio::to_string(p.error));
        if (p.bad_head) tx_vq_->push(*p.bad_head, 0);
        if (tx_vq_->broken()) break;
        continue;
      }
      if (!p.chain) break;
      virtio::Chain& c = *p.chain;
      // §5.1.6.2: a TX chain is header + frame, all device-readable.
      if (c.writable_bytes != 0 || c.readable_bytes < kHdrBytes ||
          c.readable_bytes > chan_->slot_size()) {
        bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
        AXL_WARN("virtio-net tx: chain of %llu readable / %llu writable bytes dropped",
                 static_cast<unsigned long long>(c.readable_bytes),
                 static_cast<unsigned long long>(c.writable_bytes));
        tx_vq_->push(c.head, 0);
        continue;
      }
      uint32_t id = tx_free_.front();
      auto r =
          tx_vq_->dma().copy_from_guest(c.segs, 0, {chan_->slot(id), size_t(c.readable_bytes)});
      if (!r.ok() || r.bytes != c.readable_bytes) {
        tx_vq_->push(c.head, 0);
        continue;
      }
      tx_free_.pop_front();
      // Offloads the guest did not negotiate are not asked of the TAP or of
      // other guests on its behalf.
      uint8_t* txh = chan_->slot(id);
      if (!host_csum_) txh[0] = 0;
      if (!host_tso_) txh[1] = kGsoNone;
      Slot& s = slots_[id];
      s.use = Use::kTx;
      s.completed = false;
      s.sent_ns = monotonic_ns();
      s.posted_len = uint32_t(c.readable_bytes);
      s.queue_gen = tx_gen_;
      s.seq = next_seq_++;
      s.chain = std::move(c);
      channel::Request req{};
      req.id = id;
      req.op = uint16_t(channel::Op::kNetTx);
      req.pool_off = uint32_t(uint64_t(id) * chan_->slot_size());
      req.len = s.posted_len;
      chan_->push(req);
    }
    if (tx_free_.empty() || tx_vq_->broken() || !tx_vq_->enable_notification()) break;
  }
  chan_->kick();
  tx_vq_->notify();
}

bool NetDevice::deliver_one(const Filled& f) {
  // Gather guest buffers until the frame fits (§5.1.6.3.1); without
  // MRG_RXBUF one chain must take it whole.
  while (rx_held_bytes_ < f.len && (mrg_rxbuf_ || rx_held_.empty())) {
    auto p = rx_vq_->pop();
    if (p.error != virtio::ChainError::kNone) {
      bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
      AXL_WARN("virtio-net rx: bad chain: %s", virtio::to_string(p.error));
      if (p.bad_head) rx_vq_->push(*p.bad_head, 0);
      if (rx_vq_->broken()) return false;
      continue;
    }
    if (!p.chain) return false;  // wait for the guest to add buffers
    if (p.chain->readable_bytes != 0 || p.chain->writable_bytes < kHdrBytes) {
      bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
      rx_vq_->push(p.chain->head, 0);
      continue;
    }
    rx_held_bytes_ += p.chain->writable_bytes;
    rx_held_.push_back(std::move(*p.chain));
  }
  uint8_t* frame = chan_->slot(f.id);
  // The header is the driver's: copy it out once and make it valid for
  // this guest before anything of the frame reaches guest memory.
  NetHdr nh;
  memcpy(&nh, frame, sizeof nh);
  if (sanitize_rx(nh, {frame + kHdrBytes, f.len - kHdrBytes}, offloads_) != RxVerdict::kDeliver) {
    rx_dropped_.fetch_add(1, std::memory_order_relaxed);
    return true;  // the held guest buffers stay for the next frame
  }
  if (rx_held_bytes_ < f.len) {
    // No MRG_RXBUF and the one buffer is too small: drop the frame.
    rx_dropped_.fetch_add(1, std::memory_order_relaxed);
    rx_vq_->push(rx_held_.front().head, 0);
  } else {
    uint8_t hdr[kHdrBytes];
    memcpy(hdr, &nh, sizeof hdr);
    size_t used_chains = 0;
    uint64_t off = 0;
    std::vector<std::pair<uint16_t, uint32_t>> used;
    bool fault = false;
    for (auto& c : rx_held_) {
      if (off >= f.len) break;
      uint64_t n = std::min<uint64_t>(c.writable_bytes, f.len - off);
      iommu::CopyResult r;
      if (off == 0) {
        r = rx_vq_->dma().copy_to_guest(c.segs, 0, hdr);
        if (r.ok())
          r = rx_vq_->dma().copy_to_guest(c.segs, kHdrBytes,
                                          {frame + kHdrBytes, size_t(n - kHdrBytes)});
      } else {
        r = rx_vq_->dma().copy_to_guest(c.segs, 0, {frame + off, size_t(n)});
      }
      if (!r.ok()) fault = true;
      used.push_back({c.head, uint32_t(n)});
      off += n;
      ++used_chains;
    }
    // num_buffers (§5.1.6.4) goes into the first buffer's header.
    uint16_t num_buffers = uint16_t(used_chains);
    rx_vq_->dma().copy_to_guest(rx_held_.front().segs, 10,
                                {reinterpret_cast<uint8_t*>(&num_buffers), 2});
    for (auto& [head, len] : used) rx_vq_->push(head, fault ? 0 : len);
    if (!fault) {
      frames_.fetch_add(1, std::memory_order_relaxed);
      bytes_.fetch_add(f.len - kHdrBytes, std::memory_order_relaxed);
    }
    rx_held_.erase(rx_held_.begin(), rx_held_.begin() + used_chains);
    rx_held_bytes_ = 0;
    for (auto& c : rx_held_) rx_held_bytes_ += c.writable_bytes;
    return true;
  }
  rx_held_.erase(rx_held_.begin());
  rx_held_bytes_ = 0;
  for (auto& c : rx_held_) rx_held_bytes_ += c.writable_bytes;
  return true;
}

void NetDevice::deliver_rx() {
  if (!rx_vq_) return;
  bool reposted = false;
  for (;;) {
    while (!rx_filled_.empty()) {
      if (!deliver_one(rx_filled_.front())) break;
      uint32_t id = rx_filled_.front().id;
      rx_filled_.pop_front();
      if (!quarantined_) {
        post_rx(id);
        reposted = true;
      }
    }
    if (rx_filled_.empty() || rx_vq_->broken() || !rx_vq_->enable_notification()) break;
  }
  if (reposted) chan_->kick();
  rx_vq_->notify();
}

Status NetDevice::rebind(channel::HvEnd fresh) {
  if (fresh.slots() != slots_.size() || fresh.slot_size() != chan_->slot_size())
    return make_error("rebind: channel shape differs from the device's");
  chan_ = std::make_unique<channel::HvEnd>(std::move(fresh));
  clock_.rebound();
  quarantined_ = false;
  for (Slot& s : slots_) s.completed = false;  // answers count per channel
  // Frames that arrived into the old pool are dropped (the old memory is not
  // trusted; TCP retransmits); every RX slot is posted again on the new one.
  rx_filled_.clear();
  for (uint32_t id = 0; id < rx_slots_; ++id) post_rx(id);
  std::vector<uint32_t> tx;
  for (uint32_t id = rx_slots_; id < slots_.size(); ++id)
    if (slots_[id].use == Use::kTx) tx.push_back(id);
  std::sort(tx.begin(), tx.end(),
            [this](uint32_t a, uint32_t b) { return slots_[a].seq < slots_[b].seq; });
  for (uint32_t id : tx) {
    Slot& s = slots_[id];
    iommu::CopyResult r;
    bool live = tx_vq_ && s.queue_gen == tx_gen_;
    if (live)
      r = tx_vq_->dma().copy_from_guest(s.chain.segs, 0, {chan_->slot(id), size_t(s.posted_len)});
    if (!live || !r.ok() || r.bytes != s.posted_len) {
      if (live) tx_vq_->push(s.chain.head, 0);
      s.use = Use::kFree;
      s.chain = {};
      tx_free_.push_back(id);
      continue;
    }
    channel::Request req{};
    req.id = id;
    req.op = uint16_t(channel::Op::kNetTx);
    req.pool_off = uint32_t(uint64_t(id) * chan_->slot_size());
    req.len = s.posted_len;
    s.sent_ns = monotonic_ns();
    chan_->push(req);
  }
  chan_->kick();
  AXL_INFO("virtio-net: rebound to a fresh channel, %zu tx frames resent", tx.size());
  if (tx_vq_) tx_vq_->notify();
  process_tx();
  return {};
}

void NetDevice::violation(const std::string& cause) {
  violations_.fetch_add(1, std::memory_order_relaxed);
  AXL_ERROR("virtio-net: %s: channel quarantined", cause.c_str());
  quarantined_ = true;
  report_quarantine(cause);
}

void NetDevice::handle_responses() {
  bool tx_done = false, rx_new = false;
  while (!quarantined_) {
    auto r = chan_->pop();
    if (!r) {
      violation("protocol violation: " + r.error().message);
      break;
    }
    if (!r->has_value()) break;
    const channel::Response resp = **r;
    const std::string id = std::to_string(resp.id);
    if (resp.id >= slots_.size()) {
      violation("protocol violation: completion id " + id + " was never issued");
      break;
    }
    Slot& s = slots_[resp.id];
    if (s.use != Use::kTx && s.use != Use::kRxPosted) {
      violation(s.completed ? "protocol violation: duplicate completion id " + id
                            : "protocol violation: completion id " + id + " was never issued");
      break;
    }
    if (resp.status < 0 || resp.status > 2) {
      violation("protocol violation: unknown status " + std::to_string(resp.status) + " for id " +
                id);
      break;
    }
    if (resp.len > s.posted_len) {
      violation("protocol violation: length " + std::to_string(resp.len) + " beyond the " +
                std::to_string(s.posted_len) + " posted for id " + id);
      break;
    }
    if (clock_.served()) report_first_served(clock_.last_rebind_ns(), clock_.first_served_ns());
    s.completed = true;
    if (s.use == Use::kTx) {
      s.use = Use::kFree;
      tx_free_.push_back(resp.id);
      if (tx_vq_ && s.queue_gen == tx_gen_) {
        tx_vq_->push(s.chain.head, 0);
        tx_done = true;
        if (resp.status == 0) {
          frames_.fetch_add(1, std::memory_order_relaxed);
          bytes_.fetch_add(s.posted_len - kHdrBytes, std::memory_order_relaxed);
        }
      }
      s.chain = {};
      continue;
    }
    // RX: a frame of resp.len bytes (header first) now sits in the slot.
    if (resp.status != 0 || resp.len < kHdrBytes) {
      if (resp.status == 0) {
        violation("protocol violation: rx frame of " + std::to_string(resp.len) + " bytes for id " +
                  id + " is shorter than its header");
        break;
      }
      post_rx(resp.id);
      continue;
    }
    s.use = Use::kRxFilled;
    s.filled_len = resp.len;
    rx_filled_.push_back({resp.id, resp.len});
    rx_new = true;
  }
  if (tx_done && tx_vq_) tx_vq_->notify();
  if (rx_new) deliver_rx();
  chan_->kick();
  // Freed TX slots let waiting frames in.
  process_tx();
}

}  // namespace axl::hv::io::net
