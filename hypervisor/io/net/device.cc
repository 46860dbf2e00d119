#include "hypervisor/io/net/device.h"

#include <string.h>

#include <poll.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"

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
      slots_(port_.slots()) {
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
         virtio::bit(kFHostEcn);
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
void NetDevice::drain_tx() {
  port_.drain(
      [this] {
        size_t n = 0;
        for (const Slot& s : slots_) n += s.use == Use::kTx && s.queue_gen == tx_gen_;
        return n;
      },
      on_answer_);
  // No new frames: the ring is being handed back.
  if (tx_done_ && tx_vq_) tx_vq_->notify();
  tx_done_ = false;
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
  if (!tx_vq_ || port_.state() != DriverPort::State::kLive) return;
  for (;;) {
    while (!tx_free_.empty()) {
      auto p = tx_vq_->pop();
      if (p.error != virtio::ChainError::kNone) {
        bad_chain("tx", virtio::to_string(p.error));
        if (p.bad_head) tx_vq_->push(*p.bad_head, 0);
        if (tx_vq_->broken()) break;
        continue;
      }
      if (!p.chain) break;
      virtio::Chain& c = *p.chain;
      // §5.1.6.2: a TX chain is header + frame, all device-readable.
      if (c.writable_bytes != 0 || c.readable_bytes < kHdrBytes ||
          c.readable_bytes > port_.slot_size()) {
        bad_chain("tx", "not a header and a frame, device-readable, within a slot");
        tx_vq_->push(c.head, 0);
        continue;
      }
      uint32_t id = tx_free_.front();
      auto r = tx_vq_->dma().copy_from_guest(c.segs, 0, {port_.slot(id), size_t(c.readable_bytes)});
      if (!r.ok() || r.bytes != c.readable_bytes) {
        tx_vq_->push(c.head, 0);
        continue;
      }
      tx_free_.pop_front();
      sanitize_tx(id);
      Slot& s = slots_[id];
      s.use = Use::kTx;
      s.queue_gen = tx_gen_;
      channel::Request req{};
      req.id = id;
      req.op = uint16_t(channel::Op::kNetTx);
      req.len = uint32_t(c.readable_bytes);
      s.chain = std::move(c);
      port_.issue(req);
    }
    if (tx_free_.empty() || tx_vq_->broken() || !tx_vq_->enable_notification()) break;
  }
  port_.kick();
  tx_vq_->notify();
}

bool NetDevice::deliver_one(const Filled& f) {
  // Gather guest buffers until the frame fits (§5.1.6.3.1); without
  // MRG_RXBUF one chain must take it whole.
  while (rx_held_bytes_ < f.len && (mrg_rxbuf_ || rx_held_.empty())) {
    auto p = rx_vq_->pop();
    if (p.error != virtio::ChainError::kNone) {
      bad_chain("rx", virtio::to_string(p.error));
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
  uint8_t* frame = port_.slot(f.id);
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
      if (!port_.quarantined()) {
        post_rx(id);
        reposted = true;
      }
    }
    if (rx_filled_.empty() || rx_vq_->broken() || !rx_vq_->enable_notification()) break;
  }
  if (reposted) port_.kick();
  rx_vq_->notify();
}

Status NetDevice::rebind(channel::HvEnd fresh) {
  // TX frames still at the old driver go again, in the order first sent.
  auto resent = port_.rebind(std::move(fresh), [this](uint32_t id, const channel::Request& req) {
    Slot& s = slots_[id];
    const bool live = tx_vq_ && s.queue_gen == tx_gen_;
    iommu::CopyResult r;
    if (live) r = tx_vq_->dma().copy_from_guest(s.chain.segs, 0, {port_.slot(id), size_t(req.len)});
    if (!live || !r.ok() || r.bytes != req.len) {
      if (live) tx_vq_->push(s.chain.head, 0);
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
  rx_filled_.clear();
  for (uint32_t id = 0; id < rx_slots_; ++id) post_rx(id);
  port_.kick();
  AXL_INFO("virtio-net: rebound to a fresh channel, %zu tx frames resent", *resent);
  if (tx_vq_) tx_vq_->notify();
  process_tx();
  return {};
}

void NetDevice::on_answer(uint32_t id, const channel::Request& req, const channel::Response& resp) {
  Slot& s = slots_[id];
  if (s.use == Use::kTx) {
    s.use = Use::kFree;
    tx_free_.push_back(id);
    if (tx_vq_ && s.queue_gen == tx_gen_) {
      tx_vq_->push(s.chain.head, 0);
      tx_done_ = true;
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
  rx_filled_.push_back({id, resp.len});
  rx_new_ = true;
}

void NetDevice::after_answers() {
  if (tx_done_ && tx_vq_) tx_vq_->notify();
  tx_done_ = false;
  if (rx_new_) deliver_rx();
  rx_new_ = false;
  port_.kick();
  // Freed TX slots let waiting frames in.
  process_tx();
}

}  // namespace axl::hv::io::net
