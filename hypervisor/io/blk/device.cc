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
}  // namespace

BlkDevice::BlkDevice(BlkDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms)
    : spec_(std::move(spec)),
      capacity_sectors_(spec_.capacity_bytes / kSector),
      port_("virtio-blk", std::move(chan), io_timeout_ms,
            {[this](const std::string& cause) { report_quarantine(cause); },
             [this](uint64_t rebind_ns, uint64_t served_ns) {
               report_first_served(rebind_ns, served_ns);
             }}),
      on_answer_([this](uint32_t id, const channel::Request& req, const channel::Response& r) {
        finish(id, req, r);
      }) {
  // Slots beyond what the device can use are simply never handed out; a
  // slot smaller than kSlotSize only lowers the largest request accepted.
  queues_.resize(std::clamp<uint32_t>(spec_.queues, 1, kMaxBlkQueues));
  inflight_.resize(port_.slots());
  for (uint32_t i = 0; i < port_.slots(); ++i) free_.push_back(i);
}

uint64_t BlkDevice::features() const {
  uint64_t f = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingIndirectDesc) |
               virtio::bit(virtio::kFRingEventIdx) | virtio::bit(kFSegMax) |
               virtio::bit(kFSizeMax) | virtio::bit(kFBlkSize) | virtio::bit(kFFlush) |
               virtio::bit(kFMq);
  if (spec_.read_only) f |= virtio::bit(kFRo);
  return f;
}

Result<std::vector<uint8_t>> BlkDevice::get_config(uint32_t offset, uint32_t size) {
  // §5.2.4 struct virtio_blk_config, little-endian.
  std::vector<uint8_t> cfg(256, 0);
  uint64_t cap = capacity_sectors_;
  uint32_t size_max = std::min(kSizeMax, port_.slot_size());
  uint32_t seg_max = std::max<uint32_t>(
      1, std::min({kSegMax, port_.slot_size() / size_max, spec_.queue_size - 2}));
  uint32_t blk_size = spec_.block_size;
  put(cfg, 0, &cap, 8);
  put(cfg, 8, &size_max, 4);
  put(cfg, 12, &seg_max, 4);
  put(cfg, 20, &blk_size, 4);
  uint16_t num_queues = uint16_t(queues_.size());
  put(cfg, 34, &num_queues, 2);
  if (uint64_t(offset) + size > cfg.size()) return make_error("config read beyond the space");
  return std::vector<uint8_t>(cfg.begin() + offset, cfg.begin() + offset + size);
}

void BlkDevice::queue_started(uint32_t index, virtio::Virtqueue& vq) {
  if (index >= queues_.size()) return;  // the handler offers queue_count() queues only
  queues_[index].vq = &vq;
  ++queues_[index].gen;
}

void BlkDevice::queue_stopped(uint32_t index) {
  if (index >= queues_.size()) return;
  Queue& q = queues_[index];
  // vhost-user.rst: after GET_VRING_BASE the front-end owns the ring and
  // resumes it from the index we return (VM pause/resume, device reset).  A
  // request popped but not completed would be lost, so let the driver finish
  // first; only a driver that hangs past the deadline loses requests (its
  // completions are then dropped: the ring they came from is gone).
  if (q.vq) {
    drain_ring(index);
    // A request that waited for slots was popped: serve it before handing
    // the ring back, or it would be lost.  Other queues' requests may hold
    // the slots it needs, so those finish first too.
    if (q.waiting && port_.state() == DriverPort::State::kLive) {
      port_.drain([this] { return port_.slots() - free_.size(); }, on_answer_);
      auto c = std::move(*q.waiting);
      q.waiting.reset();
      submit(index, std::move(c));
      drain_ring(index);
    }
  }
  q.waiting.reset();
  q.vq = nullptr;
  notify_all();  // completions reaped while draining, for the other queues
}

void BlkDevice::drain_ring(uint32_t q) {
  port_.drain(
      [this, q] {
        size_t n = 0;
        for (uint32_t id = 0; id < inflight_.size(); ++id)
          n += port_.busy(id) && inflight_[id].queue == q &&
               inflight_[id].queue_gen == queues_[q].gen;
        return n;
      },
      on_answer_);
}

BlkDevice::Queue* BlkDevice::live_queue(const Inflight& f) {
  Queue& q = queues_[f.queue];
  return q.vq && f.queue_gen == q.gen ? &q : nullptr;
}

void BlkDevice::queue_kicked(uint32_t index) { process(); }

void BlkDevice::notify_all() {
  for (Queue& q : queues_)
    if (q.vq) q.vq->notify();
}

std::vector<int> BlkDevice::extra_fds() const { return port_.fds(); }

void BlkDevice::extra_fd_ready(int fd) {
  if (!port_.fd_ready(fd, on_answer_)) return;
  notify_all();
  process();  // freed slots let waiting requests in
}

DeviceStats BlkDevice::stats() const {
  DeviceStats s;
  s.requests = requests_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.bad_descriptors = bad_descriptors_.load(std::memory_order_relaxed);
  port_.fill(s);
  return s;
}

void BlkDevice::process() {
  if (port_.state() != DriverPort::State::kLive) return;
  const uint32_t n = uint32_t(queues_.size());
  const uint32_t first = next_queue_;
  next_queue_ = (next_queue_ + 1) % n;
  for (uint32_t i = 0; i < n; ++i) process_queue((first + i) % n);
  port_.kick();
  notify_all();
}

void BlkDevice::process_queue(uint32_t qi) {
  Queue& q = queues_[qi];
  virtio::Virtqueue* vq = q.vq;
  if (!vq) return;
  if (q.waiting) {
    auto c = std::move(*q.waiting);
    q.waiting.reset();
    submit(qi, std::move(c));
    if (q.waiting) return;  // still not enough free slots
  }
  for (;;) {
    while (!free_.empty() && !q.waiting) {
      auto p = vq->pop();
      if (p.error != virtio::ChainError::kNone) {
        bad_chain(virtio::to_string(p.error));
        // Hand the buffers back so the guest does not wait forever.
        if (p.bad_head) vq->push(*p.bad_head, 0);
        if (vq->broken()) break;
        continue;
      }
      if (!p.chain) break;
      submit(qi, std::move(*p.chain));
    }
    // All slots busy: the rest waits in the ring until a completion frees one.
    if (free_.empty() || q.waiting || vq->broken() || !vq->enable_notification()) break;
  }
}

void BlkDevice::bad_chain(const char* why) {
  const uint64_t n = bad_descriptors_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log::worth_logging(n))
    AXL_WARN("virtio-blk: bad chain: %s (%llu so far)", why, static_cast<unsigned long long>(n));
}

void BlkDevice::complete_now(Queue& q, const virtio::Chain& c, uint64_t status_off, uint8_t status,
                             uint32_t used_len) {
  uint8_t st = status;
  auto r = q.vq->dma().copy_to_guest(c.segs, status_off, {&st, 1});
  // Faults are counted by the DMA context, and logged as often as it logs them.
  if (!r.ok() && log::worth_logging(q.vq->dma().faults()))
    AXL_WARN("virtio-blk: status byte: %s", iommu::to_string(r.fault));
  q.vq->push(c.head, used_len);
  requests_.fetch_add(1, std::memory_order_relaxed);
}

void BlkDevice::submit(uint32_t qi, virtio::Chain c) {
  Queue& q = queues_[qi];
  virtio::Virtqueue* vq = q.vq;
  // §5.2.6: 16-byte header (type, reserved, sector) readable, status byte
  // writable and last.
  if (c.readable_bytes < 16 || c.writable_bytes < 1) {
    bad_chain("request without header or status byte");
    vq->push(c.head, 0);
    return;
  }
  uint8_t hdr[16];
  auto hr = vq->dma().copy_from_guest(c.segs, 0, hdr);
  uint64_t status_off = c.readable_bytes + c.writable_bytes - 1;
  if (!hr.ok() || hr.bytes != 16) {
    complete_now(q, c, status_off, kSIoErr, 1);
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
        complete_now(q, c, status_off, kSIoErr, 1);
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
      complete_now(q, c, status_off, kSUnsupp, 1);
      return;
  }
  if (type == kTIn || type == kTOut) {
    // Overflow-safe: sectors and data length both bounded before adding.
    uint64_t sectors = (data_len + kSector - 1) / kSector;
    if (data_len % kSector != 0 || sector > capacity_sectors_ ||
        sectors > capacity_sectors_ - sector) {
      complete_now(q, c, status_off, kSIoErr, 1);
      return;
    }
  }
  if (data_len > port_.slot_size())
    return submit_split(qi, std::move(c), req, sector, data_len, status_off);
  uint32_t id = free_.front();
  if (type == kTOut) {
    auto r = vq->dma().copy_from_guest(c.segs, 16, {port_.slot(id), size_t(data_len)});
    if (!r.ok() || r.bytes != data_len) {
      complete_now(q, c, status_off, kSIoErr, 1);
      return;
    }
  }
  free_.pop_front();
  req.id = id;
  req.sector = (type == kTIn || type == kTOut) ? sector : 0;
  req.len = uint32_t(data_len);
  Inflight& f = inflight_[id];
  f.queue = qi;
  f.queue_gen = q.gen;
  f.chain = std::move(c);
  f.status_off = status_off;
  port_.issue(req);
}

void BlkDevice::submit_split(uint32_t qi, virtio::Chain c, channel::Request req, uint64_t sector,
                             uint64_t data_len, uint64_t status_off) {
  Queue& q = queues_[qi];
  const uint64_t slot = port_.slot_size();
  const uint64_t parts = (data_len + slot - 1) / slot;
  if (parts > inflight_.size()) {  // larger than the whole pool: 16 MiB
    complete_now(q, c, status_off, kSIoErr, 1);
    return;
  }
  if (free_.size() < parts) {
    q.waiting = std::move(c);  // nothing more is popped from q until it went
    return;
  }
  auto s = std::make_shared<Split>();
  s->status_off = status_off;
  s->status = kSOk;
  const bool write = static_cast<channel::Op>(req.op) == channel::Op::kBlkWrite;
  std::vector<uint32_t> ids;
  for (uint64_t off = 0; off < data_len; off += slot) {
    const uint32_t id = free_.front();
    const uint64_t len = std::min(slot, data_len - off);
    if (write) {
      auto r = q.vq->dma().copy_from_guest(c.segs, 16 + off, {port_.slot(id), size_t(len)});
      if (!r.ok() || r.bytes != len) {
        complete_now(q, c, status_off, kSIoErr, 1);
        return;  // nothing issued yet: every slot is still free
      }
    }
    free_.pop_front();
    ids.push_back(id);
    Inflight& f = inflight_[id];
    f.queue = qi;
    f.queue_gen = q.gen;
    f.split = s;
    f.part_off = off;
  }
  s->parts_left = uint32_t(ids.size());
  s->chain = std::move(c);
  for (uint32_t id : ids) {
    channel::Request part = req;
    part.id = id;
    part.sector = sector + inflight_[id].part_off / kSector;
    part.len = uint32_t(std::min(slot, data_len - inflight_[id].part_off));
    port_.issue(part);
  }
}

// One part of a split request ended (`status`, and for a read the bytes it
// copied to the guest); the last one completes the request.
void BlkDevice::part_done(uint32_t id, uint8_t status, uint64_t read_bytes) {
  Inflight& f = inflight_[id];
  auto s = std::move(f.split);
  f.split.reset();
  if (status != kSOk) s->status = kSIoErr;
  s->bytes += read_bytes;
  if (--s->parts_left) return;
  Queue* q = live_queue(f);
  if (!q) return;  // the ring it came from is gone
  if (s->status == kSOk) bytes_.fetch_add(s->bytes, std::memory_order_relaxed);
  complete_now(*q, s->chain, s->status_off, s->status,
               uint32_t(1 + (s->status == kSOk ? s->bytes : 0)));
}

Status BlkDevice::rebind(channel::HvEnd fresh) {
  auto replayed = port_.rebind(std::move(fresh), [this](uint32_t id, const channel::Request& req) {
    Inflight& f = inflight_[id];
    Queue* q = live_queue(f);
    if (!q) {
      // Its ring is gone; nobody waits for it.
      f.chain = {};
      f.split.reset();
      free_.push_back(id);
      return false;
    }
    if (f.split) {
      if (static_cast<channel::Op>(req.op) != channel::Op::kBlkWrite) return true;
      auto r = q->vq->dma().copy_from_guest(f.split->chain.segs, 16 + f.part_off,
                                            {port_.slot(id), size_t(req.len)});
      if (r.ok() && r.bytes == req.len) return true;
      free_.push_back(id);
      part_done(id, kSIoErr, 0);
      return false;
    }
    if (static_cast<channel::Op>(req.op) == channel::Op::kBlkWrite) {
      // The guest still owns the data (not completed), so copy it again
      // rather than trusting the old pool a faulty driver could have touched.
      auto r = q->vq->dma().copy_from_guest(f.chain.segs, 16, {port_.slot(id), size_t(req.len)});
      if (!r.ok() || r.bytes != req.len) {
        free_.push_back(id);
        complete_now(*q, f.chain, f.status_off, kSIoErr, 1);
        f.chain = {};
        return false;
      }
    }
    return true;
  });
  if (!replayed) return replayed.error();
  AXL_INFO("virtio-blk: rebound to a fresh channel, %zu requests replayed", *replayed);
  notify_all();
  process();
  return {};
}

void BlkDevice::finish(uint32_t id, const channel::Request& req, const channel::Response& resp) {
  Inflight& f = inflight_[id];
  free_.push_back(id);
  Queue* q = live_queue(f);
  if (f.split) {
    uint8_t status = to_virtio_status(resp.status);
    uint64_t read = 0;
    if (q && status == kSOk && static_cast<channel::Op>(req.op) == channel::Op::kBlkRead) {
      uint8_t* slot = port_.slot(id);
      if (resp.len < req.len) memset(slot + resp.len, 0, req.len - resp.len);
      auto r = q->vq->dma().copy_to_guest(
          f.split->chain.segs, f.split->chain.readable_bytes + f.part_off, {slot, size_t(req.len)});
      if (!r.ok()) {
        if (log::worth_logging(q->vq->dma().faults()))
          AXL_WARN("virtio-blk: copy to guest: %s", iommu::to_string(r.fault));
        status = kSIoErr;
      } else {
        read = req.len;
      }
    }
    part_done(id, status, read);
    return;
  }
  if (!q) return;  // the ring it came from is gone
  uint8_t status = to_virtio_status(resp.status);
  uint32_t used = 1;
  auto op = static_cast<channel::Op>(req.op);
  if (status == kSOk && (op == channel::Op::kBlkRead || op == channel::Op::kBlkGetId)) {
    uint8_t* slot = port_.slot(id);
    // A short answer never exposes stale pool bytes: the rest reads as zero.
    if (resp.len < req.len) memset(slot + resp.len, 0, req.len - resp.len);
    auto r =
        q->vq->dma().copy_to_guest(f.chain.segs, f.chain.readable_bytes, {slot, size_t(req.len)});
    if (!r.ok()) {
      if (log::worth_logging(q->vq->dma().faults()))
        AXL_WARN("virtio-blk: copy to guest: %s", iommu::to_string(r.fault));
      status = kSIoErr;
    } else {
      used += req.len;
    }
  }
  if (status == kSOk) bytes_.fetch_add(req.len, std::memory_order_relaxed);
  complete_now(*q, f.chain, f.status_off, status, used);
  f.chain = {};
}

}  // namespace axl::hv::io::blk
