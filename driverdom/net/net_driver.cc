#include "driverdom/net/net_driver.h"

#include <string.h>

#include <boost/asio/post.hpp>

#include "common/log.h"

namespace axl::driverdom::net {

using channel::Op;
using channel::Request;
using channel::Response;
using channel::RespStatus;

namespace {
constexpr size_t kMinTxBytes = kVnetHdrBytes + kEthHeaderBytes;
// virtio_net_hdr_v1.num_buffers, little-endian 16 bits at the end of the header.
constexpr size_t kNumBuffersOffset = 10;
}  // namespace

NetDriver::NetDriver(boost::asio::io_context& io, UniqueFd tap, DataPathFaults* faults)
    : io_(io), faults_(faults) {
  if (tap) tap_.emplace(std::move(tap));
}

NetDriver::~NetDriver() {
  // Watches go before the fds they watch.
  tap_watch_.reset();
  for (auto& [id, port] : guests_) {
    port->watch.reset();
    if (faults_) faults_->remove_channel(&port->end);
  }
}

void NetDriver::respond(GuestPort& port, uint32_t posted_len, const Response& r, bool owed) {
  if (faults_)
    faults_->answer(port.end, posted_len, r, owed);
  else
    port.end.push(r);
}

Status NetDriver::start(Mode mode) {
  if (!tap_) {
    AXL_INFO("net: no TAP given, switching between guests only");
    return {};
  }
  if (auto s = tap_->prepare(); !s) return s;
  tap_buf_.resize(kTapBufBytes);
  if (mode == Mode::kStandby) {
    tap_state_ = TapState::kHeld;
    return {};
  }
  return watch_tap();
}

void NetDriver::promote() {
  if (tap_state_ != TapState::kHeld) return;
  AXL_INFO("net: first request as the active instance; reading the TAP");
  if (auto s = watch_tap(); !s) {
    AXL_ERROR("net: %s; TAP port disabled", s.error().message.c_str());
    tap_state_ = TapState::kFailed;
    tap_watch_.reset();
  }
}

Status NetDriver::watch_tap() {
  tap_watch_ = std::make_unique<FdWatch>(
      io_, tap_->fd(), "tap", [this] { return service_tap(); },
      [this](const std::string&) { tap_state_ = TapState::kFailed; });
  if (auto s = tap_watch_->start(); !s) return s;
  switch_.add_uplink(kTapPort);
  tap_state_ = TapState::kUp;
  return {};
}

Status NetDriver::attach(const AttachSpec& spec, channel::DriverEnd end,
                         std::vector<UniqueFd> extra) {
  if (!extra.empty()) return make_error("net attach takes no extra fds");
  if (guests_.count(spec.device_id)) return make_error("device id already in use");
  auto port = std::make_unique<GuestPort>(std::move(end));
  uint32_t id = spec.device_id;
  port->watch = std::make_unique<FdWatch>(io_, port->end.req_kick_fd(),
                                          "net device " + std::to_string(id) + " doorbell",
                                          [this, id] { return service_guest(id); });
  if (poll_us_) {
    channel::DriverEnd* end = &port->end;
    port->watch->set_poll(std::chrono::microseconds(poll_us_), [end] {
      return end->more_queued() ? FdWatch::Poll::kWork : FdWatch::Poll::kIdle;
    });
  }
  if (auto s = port->watch->start(); !s) return s;
  if (faults_) faults_->add_channel(&port->end);
  guests_.emplace(id, std::move(port));
  switch_.add_guest(id, spec.net.mac);
  return {};
}

bool NetDriver::detach(uint32_t device_id) {
  auto it = guests_.find(device_id);
  if (it == guests_.end()) return false;
  // Posted RX buffers are simply forgotten: the hypervisor owns them and
  // re-posts them on the next channel.
  it->second->watch.reset();
  if (faults_) faults_->remove_channel(&it->second->end);
  guests_.erase(it);
  switch_.remove_port(device_id);
  return true;
}

bool NetDriver::service_guest(uint32_t device_id) {
  auto it = guests_.find(device_id);
  if (it == guests_.end()) return false;
  GuestPort& port = *it->second;
  if (port.state != GuestPort::State::kServing) {
    port.end.ack_doorbell();  // keep the doorbell quiet so the loop does not spin
    return false;
  }
  // Drain the doorbell before the ring, so a request pushed after the last
  // pop always leaves the eventfd readable: no lost wakeup.
  port.end.ack_doorbell();
  bool more = false;
  for (uint32_t n = 0;; ++n) {
    if (n == kBudget) {
      more = true;
      break;
    }
    auto r = port.end.pop();
    if (!r) {
      AXL_ERROR("net device %u: %s; port stops serving", device_id, r.error().message.c_str());
      port.state = GuestPort::State::kBroken;
      switch_.remove_port(device_id);
      break;
    }
    if (!r->has_value()) break;
    if (tap_state_ == TapState::kHeld) promote();
    handle_request(device_id, port, **r);
  }
  kick_all();
  return more;
}

void NetDriver::handle_request(uint32_t device_id, GuestPort& port, const Request& r) {
  const uint32_t slots = port.end.slots(), slot_size = port.end.slot_size();
  auto answer = [&](RespStatus s, uint32_t len = 0) {
    respond(port, r.len, Response{r.id, int32_t(s), len, 0});
  };
  auto bad = [&](RespStatus s, const char* why) {
    ++stats_.bad_requests;
    AXL_WARN("net device %u: request id=%u op=%u rejected: %s", device_id, r.id, unsigned(r.op),
             why);
    answer(s);
  };
  Op op = Op(r.op);
  if (op != Op::kNetTx && op != Op::kNetRxPost) return bad(RespStatus::kUnsupported, "unknown op");
  if (r.id >= slots) return bad(RespStatus::kIoErr, "id beyond the slot count");
  if (uint64_t(r.pool_off) != uint64_t(r.id) * slot_size)
    return bad(RespStatus::kIoErr, "pool_off is not the request's slot");
  if (r.len > slot_size) return bad(RespStatus::kIoErr, "len larger than a slot");
  if (op == Op::kNetRxPost) {
    if (r.len < kMinTxBytes) return bad(RespStatus::kIoErr, "rx buffer too small for a frame");
    port.rx.push_back(RxPost{r.id, r.len});
    if (tap_watch_ && tap_watch_->paused()) tap_watch_->resume();
    return;
  }
  if (r.len < kMinTxBytes) return bad(RespStatus::kIoErr, "tx frame shorter than header+14");
  ++stats_.tx_frames;
  forward(device_id, std::span<const uint8_t>(port.end.slot(r.id), r.len));
  answer(RespStatus::kOk);
}

void NetDriver::forward(PortId ingress, std::span<const uint8_t> frame) {
  switch_.route(ingress, frame.subspan(kVnetHdrBytes), &dests_);
  for (PortId dest : dests_) {
    if (dest == kTapPort) {
      write_tap(frame);
      continue;
    }
    auto it = guests_.find(uint32_t(dest));
    if (it != guests_.end()) deliver_to_guest(*it->second, frame);
  }
}

void NetDriver::deliver_to_guest(GuestPort& port, std::span<const uint8_t> frame) {
  if (port.state != GuestPort::State::kServing) return;
  if (port.rx.empty()) {
    ++stats_.rx_no_buffer;
    return;
  }
  RxPost post = port.rx.front();
  if (frame.size() > post.len) {
    ++stats_.rx_too_big;
    return;
  }
  port.rx.pop_front();
  uint8_t* slot = port.end.slot(post.id);
  memcpy(slot, frame.data(), frame.size());
  // virtio 1.2 §5.1.6.4: the device sets num_buffers to the buffers the packet
  // used.  The rest of the header passes through unchanged, but this field
  // comes from a sender that leaves it 0 (a guest's TX) or from a TAP read
  // that does not write it, and a Linux guest with MRG_RXBUF would take 0 as
  // 65536 missing buffers.  Each frame fills exactly one posted buffer.
  slot[kNumBuffersOffset] = 1;
  slot[kNumBuffersOffset + 1] = 0;
  // A posted RX buffer is not owed a frame: a dropped one would go unnoticed.
  respond(port, post.len, Response{post.id, int32_t(RespStatus::kOk), uint32_t(frame.size()), 0},
          /*owed=*/false);
  ++stats_.rx_frames;
}

void NetDriver::write_tap(std::span<const uint8_t> frame) {
  if (tap_state_ != TapState::kUp) return;
  switch (tap_->write_frame(frame)) {
    case Tap::WriteResult::kSent:
      ++stats_.tap_tx_frames;
      break;
    case Tap::WriteResult::kBusy:
      ++stats_.tap_tx_drops;
      break;
    case Tap::WriteResult::kFailed:
      ++stats_.tap_errors;
      break;
  }
}

bool NetDriver::service_tap() {
  if (tap_state_ != TapState::kUp) return false;
  bool more = false;
  for (uint32_t n = 0;; ++n) {
    if (n == kBudget) {
      more = true;
      break;
    }
    // Like a NIC whose host ring is empty (and QEMU's tap backend): while no
    // guest has an RX buffer posted, leave the host's frames queued in the
    // TAP rather than read and drop them; the next RX post resumes reading.
    // This also covers a promoted standby whose first request is a TX: the
    // guest's RX buffers reach it just after.
    if (!any_rx_posted()) {
      ++stats_.tap_waits;
      if (tap_watch_) tap_watch_->pause();
      break;
    }
    auto got = tap_->read_frame(tap_buf_);
    if (!got) {
      // A TAP that errors stays readable; watching it further would spin.
      AXL_ERROR("net: %s; TAP port disabled", got.error().message.c_str());
      ++stats_.tap_errors;
      tap_state_ = TapState::kFailed;
      switch_.remove_port(kTapPort);
      // Not from inside the watch's own handler: drop it once this returns.
      boost::asio::post(io_, [this] { tap_watch_.reset(); });
      break;
    }
    if (!got->has_value()) break;
    size_t len = **got;
    if (len < kMinTxBytes) {
      ++stats_.tap_errors;
      continue;
    }
    ++stats_.tap_rx_frames;
    forward(kTapPort, std::span<const uint8_t>(tap_buf_.data(), len));
  }
  kick_all();
  return more;
}

bool NetDriver::any_rx_posted() const {
  for (const auto& [id, port] : guests_)
    if (port->state == GuestPort::State::kServing && !port->rx.empty()) return true;
  return false;
}

void NetDriver::kick_all() {
  for (auto& [id, port] : guests_) port->end.kick();
}

}  // namespace axl::driverdom::net
