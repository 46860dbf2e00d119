#include "driverdom/blk/blk_device.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <limits>

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
  if (faults_) faults_->remove_channel(&end_);
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
    Response resp = execute(**r);
    if (faults_)
      faults_->answer(end_, (*r)->len, resp);
    else
      end_.push(resp);
  }
  end_.kick();
  return more;
}

Response BlkDevice::execute(const Request& r) {
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
  uint8_t* data = end_.slot(r.id);
  switch (op) {
    case Op::kBlkRead: {
      off_t off;
      if (!byte_offset(r.sector, r.len, &off)) return bad(RespStatus::kIoErr, "sector overflow");
      ++stats_.reads;
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
      if (!image_->write(uint64_t(off), std::span<const uint8_t>(data, r.len))) {
        ++stats_.io_errors;
        return done(r, RespStatus::kIoErr);
      }
      return done(r, RespStatus::kOk);
    }
    case Op::kBlkFlush: {
      // Requests run one at a time in ring order, so every write completed
      // before this flush is already in the page cache when fdatasync runs.
      ++stats_.flushes;
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
