#include "driverdom/runtime/runtime.h"

#include <unistd.h>

#include <csignal>

#include "common/log.h"

namespace axl::driverdom {

namespace asio = boost::asio;

namespace {
// The three fds every attach starts with (driver.capnp, Attach).
constexpr size_t kChannelFds = 3;
}  // namespace

Runtime::Runtime(asio::io_context& io, Options opts, UniqueFd control, Driver& driver)
    : io_(io),
      opts_(std::move(opts)),
      control_(std::move(control)),
      driver_(driver),
      signals_(io, SIGTERM, SIGINT) {}

int Runtime::run() {
  if (auto s = send_hello(control_.get(), opts_.name, opts_.kind,
                          int32_t(opts_.host_pid.value_or(::getpid())), opts_.standby);
      !s) {
    AXL_ERROR("hello to hypervisor failed: %s", s.error().message.c_str());
    return 1;
  }
  control_watch_ = std::make_unique<FdWatch>(
      io_, control_.get(), "control socket", [this] { return on_control_readable(); },
      [this](const std::string&) { stop(1); });
  if (auto s = control_watch_->start(); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    AXL_INFO("signal %d, stopping", sig);
    stop(0);
  });
  state_ = State::kServing;
  AXL_INFO("driver %s (%s) serving, pid %d", opts_.name.c_str(), kind_name(opts_.kind),
           int(::getpid()));
  io_.run();
  return exit_code_;
}

void Runtime::stop(int exit_code) {
  if (state_ == State::kStopped) return;
  state_ = State::kStopped;
  exit_code_ = exit_code;
  boost::system::error_code ec;
  signals_.cancel(ec);
  io_.stop();
}

bool Runtime::on_control_readable() {
  auto msg = wire::recv(control_.get());
  if (!msg) {
    const std::string& why = msg.error().message;
    if (msg.error().code == Errc::kClosed) {
      AXL_INFO("hypervisor closed the control socket, exiting");
      stop(0);
      return false;
    }
    // A failed recvmsg ends the connection; anything else was a bad packet
    // that has already been consumed, so the socket is still usable.
    if (msg.error().code == Errc::kIo) {
      AXL_ERROR("control socket: %s", why.c_str());
      stop(1);
      return false;
    }
    reject(Rejection{0, false, why});
    return false;
  }
  auto parsed = parse_control(*msg);
  if (auto* r = std::get_if<Rejection>(&parsed)) {
    reject(*r);
    return false;
  }
  if (auto* a = std::get_if<AttachSpec>(&parsed))
    handle(*a, std::move(msg->fds()));
  else
    handle(std::get<DetachCmd>(parsed));
  return false;
}

void Runtime::reject(const Rejection& r) {
  AXL_WARN("rejected control message (device %u): %s", r.device_id, r.reason.c_str());
  // The hypervisor waits for an answer to every attach; for anything else the
  // answer is only a diagnostic, sent so a confused peer sees why.
  if (auto s = send_attached(control_.get(), r.device_id, false, r.reason); !s)
    AXL_WARN("cannot answer the hypervisor: %s", s.error().message.c_str());
}

void Runtime::handle(AttachSpec spec, std::vector<UniqueFd> fds) {
  auto fail = [&](std::string why) { reject(Rejection{spec.device_id, true, std::move(why)}); };
  if (spec.kind != opts_.kind)
    return fail(std::string("attach of a ") + kind_name(spec.kind) + " device to a " +
                kind_name(opts_.kind) + " driver");
  size_t want = kChannelFds + driver_.extra_fds(spec);
  if (fds.size() != want)
    return fail("attach carries " + std::to_string(fds.size()) + " fds, expected " +
                std::to_string(want));
  if (devices_.count(spec.device_id))
    return fail("device " + std::to_string(spec.device_id) + " is already attached");
  for (size_t i = 1; i < kChannelFds; ++i)
    if (auto s = check_pollable(fds[i].get()); !s)
      return fail("channel doorbell: " + s.error().message);
  auto mapping = channel::Mapping::map(fds[0].get(), spec.slots, spec.slot_size);
  if (!mapping) return fail(mapping.error().message);
  fds[0].reset();  // the mapping keeps the memory; the memfd itself is not needed
  channel::DriverEnd end(std::move(mapping).value(), std::move(fds[1]), std::move(fds[2]));
  // Held until the device is detached, or released by the kernel when this
  // process dies: that is how the hypervisor learns of a crash first.
  if (auto s = end.claim_liveness(); !s) return fail(s.error().message);
  std::vector<UniqueFd> extra;
  for (size_t i = kChannelFds; i < fds.size(); ++i) extra.push_back(std::move(fds[i]));
  if (auto s = driver_.attach(spec, std::move(end), std::move(extra)); !s)
    return fail(s.error().message);
  devices_.insert(spec.device_id);
  AXL_INFO("attached device %u (slots=%u slot_size=%u)", spec.device_id, spec.slots,
           spec.slot_size);
  if (attach_fault_ && attach_fault_->mode == AttachFault::Mode::kMute) {
    AXL_WARN("fault mute-attach: device %u attached, no answer sent", spec.device_id);
    return;
  }
  if (attach_fault_ && attach_fault_->mode == AttachFault::Mode::kSlow) {
    // Late, but from the loop: heartbeats and other devices are served meanwhile.
    AXL_WARN("fault slow-attach: device %u answered in %d ms", spec.device_id,
             AttachFault::kSlowMs);
    auto t = std::make_unique<boost::asio::steady_timer>(
        io_, std::chrono::milliseconds(AttachFault::kSlowMs));
    const uint32_t id = spec.device_id;
    t->async_wait([this, id](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto s = send_attached(control_.get(), id, true, ""); !s)
        AXL_WARN("cannot answer the hypervisor: %s", s.error().message.c_str());
    });
    late_answers_.push_back(std::move(t));
    return;
  }
  if (auto s = send_attached(control_.get(), spec.device_id, true, ""); !s)
    AXL_WARN("cannot answer the hypervisor: %s", s.error().message.c_str());
}

void Runtime::handle(DetachCmd cmd) {
  if (!devices_.erase(cmd.device_id)) {
    AXL_WARN("detach of unknown device %u ignored", cmd.device_id);
    return;
  }
  driver_.detach(cmd.device_id);
  AXL_INFO("detached device %u", cmd.device_id);
}

}  // namespace axl::driverdom
