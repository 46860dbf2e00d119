#include "driverdom/blk/blk_device.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "common/log.h"

namespace axl::driverdom::blk {

using channel::Op;
using channel::Request;
using channel::Response;
using channel::RespStatus;

namespace {

constexpr uint64_t kSectorSize = 512;
// virtio 1.2 §5.2.6.1: the GET_ID string is 20 bytes, NUL-padded when shorter.
constexpr uint32_t kIdBytes = 20;

Response done(const Request& r, RespStatus s, uint32_t len = 0) {
  return Response{r.id, static_cast<int32_t>(s), len, 0};
}

// Byte offset of a request, or false when it overflows off_t.
bool byte_offset(uint64_t sector, uint32_t len, off_t* out) {
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<off_t>::max());
  if (sector > kMax / kSectorSize) return false;
  uint64_t off = sector * kSectorSize;
  if (off > kMax - len) return false;
  *out = off_t(off);
  return true;
}

}  // namespace

BlkDevice::BlkDevice(channel::DriverEnd end, std::unique_ptr<Image> image, BlkConfig cfg,
                     DataPathFaults* faults)
    : end_(std::move(end)), image_(std::move(image)), cfg_(std::move(cfg)), faults_(faults) {
  if (faults_) faults_->add_channel(&end_);
}

BlkDevice::BlkDevice(channel::DriverEnd end, UniqueFd image, BlkConfig cfg, DataPathFaults* faults)
    : BlkDevice(std::move(end), open_raw(std::move(image), cfg.read_only), std::move(cfg), faults) {
}

BlkDevice::~BlkDevice() {
  if (ring_) ring_->remove_file(ring_file_);
  if (faults_) faults_->remove_channel(&end_);
}

Status BlkDevice::use_ring(IoRing* ring, uint32_t tag) {
  const int fd = image_->raw_fd();
  if (!ring || fd < 0) return {};
  auto file = ring->add_file(fd);
  if (!file) return file.error();
  ring_ = ring;
  ring_file_ = *file;
  tag_ = uint64_t(tag) << 32;
  queued_.assign(end_.slots(), std::nullopt);
  return {};
}

void BlkDevice::answer(const Request& r, const Response& resp) {
  if (faults_)
    faults_->answer(end_, r.len, resp, true, r.op == uint16_t(channel::Op::kBlkRead));
  else
    end_.push(resp);
}

void BlkDevice::complete(uint32_t id, int32_t res) {
  if (id >= queued_.size() || !queued_[id]) return;  // not ours: ignore
  const Request r = *queued_[id];
  queued_[id].reset();
  --in_flight_;
  // A broken device answers nothing more (the hypervisor replaces the channel).
  if (state_ != State::kServing) return;
  const Op op = Op(r.op);
  Response resp;
  if (res < 0) {
    ++stats_.io_errors;
    AXL_WARN("blk: request id=%u op=%u failed: %s", r.id, unsigned(r.op), strerror(-res));
    resp = done(r, RespStatus::kIoErr);
  } else if (op == Op::kBlkFlush || uint32_t(res) == r.len) {
    resp = done(r, RespStatus::kOk, op == Op::kBlkRead ? r.len : 0);
  } else {
    // Short: a regular file's transfer may stop early (a signal, a page
    // cache under pressure).  The rest is done in place, as the sync path
    // would have done it all.
    ++stats_.short_io;
    const uint64_t off = r.sector * kSectorSize + uint32_t(res);
    uint8_t* data = end_.slot(r.id) + res;
    const size_t rest = r.len - uint32_t(res);
    Status st = op == Op::kBlkRead ? image_->read(off, std::span<uint8_t>(data, rest))
                                   : image_->write(off, std::span<const uint8_t>(data, rest));
    if (!st) ++stats_.io_errors;
    resp =
        st ? done(r, RespStatus::kOk, op == Op::kBlkRead ? r.len : 0) : done(r, RespStatus::kIoErr);
  }
  answer(r, resp);
}

bool BlkDevice::service() {
  // Drain the doorbell before the ring: a request pushed after the last pop
  // then always leaves the eventfd readable, so no wakeup is lost.  A broken
  // device still drains it, or the loop would spin on it.
  end_.ack_doorbell();
  if (state_ != State::kServing) return false;
  bool more = false;
  for (uint32_t n = 0;; ++n) {
    if (n == kBudget) {
      more = true;
      break;
    }
    auto r = end_.pop();
    if (!r) {
      AXL_ERROR("blk: %s; device stops serving", r.error().message.c_str());
      state_ = State::kBroken;
      break;
    }
    if (!r->has_value()) break;
    if (std::optional<Response> resp = execute(**r)) answer(**r, *resp);
  }
  if (ring_) ring_->submit();
  end_.kick();
  return more;
}

std::optional<Response> BlkDevice::execute(const Request& r) {
  const uint32_t slots = end_.slots(), slot_size = end_.slot_size();
  auto bad = [&](RespStatus s, const char* why) {
    ++stats_.bad_requests;
    AXL_WARN("blk: request id=%u op=%u rejected: %s", r.id, unsigned(r.op), why);
    return done(r, s);
  };
  Op op = Op(r.op);
  if (op != Op::kBlkRead && op != Op::kBlkWrite && op != Op::kBlkFlush && op != Op::kBlkGetId)
    return bad(RespStatus::kUnsupported, "unknown op");
  if (r.id >= slots) return bad(RespStatus::kIoErr, "id beyond the slot count");
  if (uint64_t(r.pool_off) != uint64_t(r.id) * slot_size)
    return bad(RespStatus::kIoErr, "pool_off is not the request's slot");
  if (r.len > slot_size) return bad(RespStatus::kIoErr, "len larger than a slot");
  if (ring_ && queued_[r.id]) return bad(RespStatus::kIoErr, "id already in flight");
  uint8_t* data = end_.slot(r.id);
  // The ring takes reads, writes and flushes of a raw image once they are
  // checked as the image itself would check them.
  // A lone request (nothing of this device's in flight, nothing queued
  // behind it) is served in place: the ring would only add a hand-off (to an
  // io-wq thread for a buffered write) and a second wake-up to its latency.
  auto queue = [&](uint64_t off) -> bool {
    if (!ring_ || (in_flight_ == 0 && !end_.more_queued())) return false;
    queued_[r.id] = r;
    ++in_flight_;
    ++stats_.queued;
    const uint64_t tag = tag_ | r.id;
    if (op == Op::kBlkRead)
      ring_->read(ring_file_, off, data, r.len, tag);
    else if (op == Op::kBlkWrite)
      ring_->write(ring_file_, off, data, r.len, tag);
    else
      ring_->fsync(ring_file_, tag);
    return true;
  };
  auto within = [&](off_t off) {
    return uint64_t(off) <= image_->size() && r.len <= image_->size() - uint64_t(off);
  };
  switch (op) {
    case Op::kBlkRead: {
      off_t off;
      if (!byte_offset(r.sector, r.len, &off)) return bad(RespStatus::kIoErr, "sector overflow");
      ++stats_.reads;
      if (within(off) && queue(uint64_t(off))) return std::nullopt;
      if (!image_->read(uint64_t(off), std::span<uint8_t>(data, r.len))) {
        ++stats_.io_errors;
        return done(r, RespStatus::kIoErr);
      }
      return done(r, RespStatus::kOk, r.len);
    }
    case Op::kBlkWrite: {
      // virtio 1.2 §5.2.6.2: a write to a read-only device fails with IOERR.
      if (cfg_.read_only) return bad(RespStatus::kIoErr, "write to a read-only device");
      off_t off;
      if (!byte_offset(r.sector, r.len, &off)) return bad(RespStatus::kIoErr, "sector overflow");
      ++stats_.writes;
      if (within(off) && queue(uint64_t(off))) return std::nullopt;
      if (!image_->write(uint64_t(off), std::span<const uint8_t>(data, r.len))) {
        ++stats_.io_errors;
        return done(r, RespStatus::kIoErr);
      }
      return done(r, RespStatus::kOk);
    }
    case Op::kBlkFlush: {
      // In place, requests run one at a time in ring order, so every write
      // completed before this flush is already in the page cache when
      // fdatasync runs; on the ring, the flush drains what was queued before it.
      ++stats_.flushes;
      if (queue(0)) return std::nullopt;
      if (!image_->flush()) {
        ++stats_.io_errors;
        return done(r, RespStatus::kIoErr);
      }
      return done(r, RespStatus::kOk);
    }
    case Op::kBlkGetId: {
      // Slots are at least 64 bytes (channel geometry), so 20 always fit.
      ++stats_.get_ids;
      memset(data, 0, kIdBytes);
      memcpy(data, cfg_.serial.data(), std::min<size_t>(cfg_.serial.size(), kIdBytes));
      return done(r, RespStatus::kOk, kIdBytes);
    }
    default:
      return bad(RespStatus::kUnsupported, "unknown op");
  }
}

}  // namespace axl::driverdom::blk
