#include "hypervisor/io/blk/device.h"

#include <string.h>

#include <poll.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"

namespace axl::hv::io::blk {

namespace {
constexpr uint64_t kSector = 512;

void put(std::vector<uint8_t>& b, size_t off, const void* v, size_t n) { memcpy(&b[off], v, n); }

uint8_t to_virtio_status(int32_t s) {
  switch (static_cast<channel::RespStatus>(s)) {
    case channel::RespStatus::kOk:
      return kSOk;
    case channel::RespStatus::kIoErr:
      return kSIoErr;
    case channel::RespStatus::kUnsupported:
      return kSUnsupp;
  }
  return kSIoErr;
}
bool known_status(int32_t s) { return s >= 0 && s <= 2; }
}  // namespace

BlkDevice::BlkDevice(BlkDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms)
    : spec_(std::move(spec)),
      capacity_sectors_(spec_.capacity_bytes / kSector),
      chan_(std::make_unique<channel::HvEnd>(std::move(chan))),
      watchdog_(io_timeout_ms) {
  // Slots beyond what the device can use are simply never handed out; a
  // slot smaller than kSlotSize only lowers the largest request accepted.
  inflight_.resize(chan_->slots());
  for (uint32_t i = 0; i < chan_->slots(); ++i) free_.push_back(i);
}

uint64_t BlkDevice::features() const {
  uint64_t f = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingIndirectDesc) |
               virtio::bit(virtio::kFRingEventIdx) | virtio::bit(kFSegMax) |
               virtio::bit(kFSizeMax) | virtio::bit(kFBlkSize) | virtio::bit(kFFlush);
  if (spec_.read_only) f |= virtio::bit(kFRo);
  return f;
}

Result<std::vector<uint8_t>> BlkDevice::get_config(uint32_t offset, uint32_t size) {
  // §5.2.4 struct virtio_blk_config, little-endian.
  std::vector<uint8_t> cfg(256, 0);
  uint64_t cap = capacity_sectors_;
  uint32_t size_max = std::min(kSizeMax, chan_->slot_size());
  uint32_t seg_max = std::max<uint32_t>(1, std::min(kSegMax, chan_->slot_size() / size_max));
  uint32_t blk_size = kSector;
  put(cfg, 0, &cap, 8);
  put(cfg, 8, &size_max, 4);
  put(cfg, 12, &seg_max, 4);
  put(cfg, 20, &blk_size, 4);
  uint16_t num_queues = 1;
  put(cfg, 34, &num_queues, 2);
  if (uint64_t(offset) + size > cfg.size()) return make_error("config read beyond the space");
  return std::vector<uint8_t>(cfg.begin() + offset, cfg.begin() + offset + size);
}

void BlkDevice::queue_started(uint32_t index, virtio::Virtqueue& vq) {
  vq_ = &vq;
  ++queue_gen_;
}

void BlkDevice::queue_stopped(uint32_t index) {
  // vhost-user.rst: after GET_VRING_BASE the front-end owns the ring and
  // resumes it from the index we return (VM pause/resume, device reset).  A
  // request popped but not completed would be lost, so let the driver finish
  // first; only a driver that hangs past the deadline loses requests (its
  // completions are then dropped: the ring they came from is gone).
  if (vq_) drain_ring();
  vq_ = nullptr;
}

void BlkDevice::drain_ring() {
  constexpr auto kDrainTimeout = std::chrono::seconds(2);
  auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  stopping_ = true;
  auto pending = [this] {
    size_t n = 0;
    for (const Inflight& f : inflight_) n += f.busy && f.queue_gen == queue_gen_;
    return n;
  };
  while (!quarantined_ && pending() > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      AXL_WARN("virtio-blk: ring stopped with %zu requests still at the driver", pending());
      break;
    }
    pollfd p{chan_->resp_kick_fd(), POLLIN, 0};
    ::poll(&p, 1, int(left.count()));
    chan_->ack_doorbell();
    handle_responses();
  }
  stopping_ = false;
}

void BlkDevice::queue_kicked(uint32_t index) { process(); }

std::vector<int> BlkDevice::extra_fds() const {
  if (quarantined_) return {};
  if (watchdog_.fd() >= 0) return {chan_->resp_kick_fd(), watchdog_.fd()};
  return {chan_->resp_kick_fd()};
}

void BlkDevice::extra_fd_ready(int fd) {
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

// The driver serves in order, so the oldest request sent is the one it owes
// first; every request at the driver counts, whichever ring it came from.
void BlkDevice::check_progress() {
  const Inflight* oldest = nullptr;
  uint32_t oldest_id = 0;
  for (uint32_t id = 0; id < inflight_.size(); ++id) {
    const Inflight& f = inflight_[id];
    if (f.busy && (!oldest || f.sent_ns < oldest->sent_ns)) {
      oldest = &f;
      oldest_id = id;
    }
  }
  if (!oldest) return;
  if (auto cause = stall_cause(watchdog_.deadline_ms(), monotonic_ns(), oldest_id, oldest->sent_ns))
    violation(*cause);
}

DeviceStats BlkDevice::stats() const {
  DeviceStats s;
  s.requests = requests_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.bad_descriptors = bad_descriptors_.load(std::memory_order_relaxed);
  s.driver_violations = violations_.load(std::memory_order_relaxed);
  clock_.fill(s);
  return s;
}

void BlkDevice::process() {
  if (!vq_ || quarantined_ || stopping_) return;
  for (;;) {
    while (!free_.empty()) {
      auto p = vq_->pop();
      if (p.error != virtio::ChainError::kNone) {
        bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
        AXL_WARN("virtio-blk: bad chain: %s", virtio::to_string(p.error));
        // Hand the buffers back so the guest does not wait forever.
        if (p.bad_head) vq_->push(*p.bad_head, 0);
        if (vq_->broken()) break;
        continue;
      }
      if (!p.chain) break;
      submit(std::move(*p.chain));
    }
    // All slots busy: the rest waits in the ring until a completion frees one.
    if (free_.empty() || vq_->broken() || !vq_->enable_notification()) break;
  }
  chan_->kick();
  vq_->notify();
}

void BlkDevice::complete_now(const virtio::Chain& c, uint64_t status_off, uint8_t status,
                             uint32_t used_len) {
  uint8_t st = status;
  auto r = vq_->dma().copy_to_guest(c.segs, status_off, {&st, 1});
  if (!r.ok()) AXL_WARN("virtio-blk: status byte: %s", iommu::to_string(r.fault));
  vq_->push(c.head, used_len);
  requests_.fetch_add(1, std::memory_order_relaxed);
}

void BlkDevice::submit(virtio::Chain c) {
  // §5.2.6: 16-byte header (type, reserved, sector) readable, status byte
  // writable and last.
  if (c.readable_bytes < 16 || c.writable_bytes < 1) {
    bad_descriptors_.fetch_add(1, std::memory_order_relaxed);
    AXL_WARN("virtio-blk: request without header or status byte");
    vq_->push(c.head, 0);
    return;
  }
  uint8_t hdr[16];
  auto hr = vq_->dma().copy_from_guest(c.segs, 0, hdr);
  uint64_t status_off = c.readable_bytes + c.writable_bytes - 1;
  if (!hr.ok() || hr.bytes != 16) {
    complete_now(c, status_off, kSIoErr, 1);
    return;
  }
  uint32_t type;
  uint64_t sector;
  memcpy(&type, hdr, 4);
  memcpy(&sector, hdr + 8, 8);

  channel::Request req{};
  uint64_t data_len = 0;
  switch (type) {
    case kTIn:
      req.op = uint16_t(channel::Op::kBlkRead);
      data_len = c.writable_bytes - 1;
      break;
    case kTOut:
      req.op = uint16_t(channel::Op::kBlkWrite);
      data_len = c.readable_bytes - 16;
      if (spec_.read_only) {
        complete_now(c, status_off, kSIoErr, 1);
        return;
      }
      break;
    case kTFlush:
      req.op = uint16_t(channel::Op::kBlkFlush);
      break;
    case kTGetId:
      req.op = uint16_t(channel::Op::kBlkGetId);
      data_len = std::min<uint64_t>(kIdBytes, c.writable_bytes - 1);
      break;
    default:
      complete_now(c, status_off, kSUnsupp, 1);
      return;
  }
  if (type == kTIn || type == kTOut) {
    // Overflow-safe: sectors and data length both bounded before adding.
    uint64_t sectors = (data_len + kSector - 1) / kSector;
    if (data_len % kSector != 0 || sector > capacity_sectors_ ||
        sectors > capacity_sectors_ - sector) {
      complete_now(c, status_off, kSIoErr, 1);
      return;
    }
  }
  if (data_len > chan_->slot_size()) {
    complete_now(c, status_off, kSIoErr, 1);
    return;
  }
  uint32_t id = free_.front();
  if (type == kTOut) {
    auto r = vq_->dma().copy_from_guest(c.segs, 16, {chan_->slot(id), size_t(data_len)});
    if (!r.ok() || r.bytes != data_len) {
      complete_now(c, status_off, kSIoErr, 1);
      return;
    }
  }
  free_.pop_front();
  req.id = id;
  req.sector = (type == kTIn || type == kTOut) ? sector : 0;
  req.pool_off = uint32_t(uint64_t(id) * chan_->slot_size());
  req.len = uint32_t(data_len);
  Inflight& f = inflight_[id];
  f.busy = true;
  f.completed = false;
  f.sent_ns = monotonic_ns();
  f.queue_gen = queue_gen_;
  f.seq = next_seq_++;
  f.chain = std::move(c);
  f.req = req;
  f.status_off = status_off;
  chan_->push(req);
}

Status BlkDevice::rebind(channel::HvEnd fresh) {
  if (fresh.slots() != inflight_.size() || fresh.slot_size() != chan_->slot_size())
    return make_error("rebind: channel shape differs from the device's");
  chan_ = std::make_unique<channel::HvEnd>(std::move(fresh));
  clock_.rebound();
  quarantined_ = false;
  for (Inflight& f : inflight_) f.completed = false;  // answers count per channel
  // Replay in first-sent order: the driver serves in order, so writes stay
  // ordered around flushes exactly as the guest issued them.
  std::vector<uint32_t> ids;
  for (uint32_t id = 0; id < inflight_.size(); ++id)
    if (inflight_[id].busy) ids.push_back(id);
  std::sort(ids.begin(), ids.end(),
            [this](uint32_t a, uint32_t b) { return inflight_[a].seq < inflight_[b].seq; });
  size_t replayed = 0;
  for (uint32_t id : ids) {
    Inflight& f = inflight_[id];
    if (!vq_ || f.queue_gen != queue_gen_) {
      // Its ring is gone; nobody waits for it.
      f.busy = false;
      f.chain = {};
      free_.push_back(id);
      continue;
    }
    if (static_cast<channel::Op>(f.req.op) == channel::Op::kBlkWrite) {
      // The guest still owns the data (not completed), so copy it again
      // rather than trusting the old pool a faulty driver could have touched.
      auto r = vq_->dma().copy_from_guest(f.chain.segs, 16, {chan_->slot(id), size_t(f.req.len)});
      if (!r.ok() || r.bytes != f.req.len) {
        f.busy = false;
        free_.push_back(id);
        complete_now(f.chain, f.status_off, kSIoErr, 1);
        f.chain = {};
        continue;
      }
    }
    f.sent_ns = monotonic_ns();
    chan_->push(f.req);
    ++replayed;
  }
  chan_->kick();
  AXL_INFO("virtio-blk: rebound to a fresh channel, %zu requests replayed", replayed);
  if (vq_) vq_->notify();
  process();
  return {};
}

void BlkDevice::violation(const std::string& cause) {
  violations_.fetch_add(1, std::memory_order_relaxed);
  AXL_ERROR("virtio-blk: %s: channel quarantined", cause.c_str());
  // Fail nothing to the guest: in-flight requests stay in the table for a
  // replay on a fresh channel, once the driver is replaced.
  quarantined_ = true;
  report_quarantine(cause);
}

void BlkDevice::handle_responses() {
  bool any = false;
  while (!quarantined_) {
    auto r = chan_->pop();
    if (!r) {
      violation("protocol violation: " + r.error().message);
      break;
    }
    if (!r->has_value()) break;
    const channel::Response resp = **r;
    const std::string id = std::to_string(resp.id);
    if (resp.id >= inflight_.size()) {
      violation("protocol violation: completion id " + id + " was never issued");
      break;
    }
    const Inflight& f = inflight_[resp.id];
    if (!f.busy) {
      violation(f.completed ? "protocol violation: duplicate completion id " + id
                            : "protocol violation: completion id " + id + " was never issued");
      break;
    }
    if (!known_status(resp.status)) {
      violation("protocol violation: unknown status " + std::to_string(resp.status) + " for id " +
                id);
      break;
    }
    if (resp.len > f.req.len) {
      violation("protocol violation: length " + std::to_string(resp.len) + " beyond the " +
                std::to_string(f.req.len) + " posted for id " + id);
      break;
    }
    if (clock_.served()) report_first_served(clock_.last_rebind_ns(), clock_.first_served_ns());
    finish(resp.id, resp);
    any = true;
  }
  if (any && vq_) vq_->notify();
  // Freed slots let waiting requests in.
  process();
}

void BlkDevice::finish(uint32_t id, const channel::Response& resp) {
  Inflight& f = inflight_[id];
  f.busy = false;
  f.completed = true;
  free_.push_back(id);
  if (!vq_ || f.queue_gen != queue_gen_) return;  // the ring it came from is gone
  uint8_t status = to_virtio_status(resp.status);
  uint32_t used = 1;
  auto op = static_cast<channel::Op>(f.req.op);
  if (status == kSOk && (op == channel::Op::kBlkRead || op == channel::Op::kBlkGetId)) {
    uint8_t* slot = chan_->slot(id);
    // A short answer never exposes stale pool bytes: the rest reads as zero.
    if (resp.len < f.req.len) memset(slot + resp.len, 0, f.req.len - resp.len);
    auto r =
        vq_->dma().copy_to_guest(f.chain.segs, f.chain.readable_bytes, {slot, size_t(f.req.len)});
    if (!r.ok()) {
      AXL_WARN("virtio-blk: copy to guest: %s", iommu::to_string(r.fault));
      status = kSIoErr;
    } else {
      used += f.req.len;
    }
  }
  if (status == kSOk) bytes_.fetch_add(f.req.len, std::memory_order_relaxed);
  complete_now(f.chain, f.status_off, status, used);
  f.chain = {};
}

}  // namespace axl::hv::io::blk
