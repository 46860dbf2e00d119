#include "hypervisor/io/driver_port.h"

#include <poll.h>

#include <algorithm>

#include "common/log.h"

namespace axl::hv::io {

DriverPort::DriverPort(const char* what, channel::HvEnd chan, uint32_t io_timeout_ms, Hooks hooks)
    : what_(what),
      chan_(std::make_unique<channel::HvEnd>(std::move(chan))),
      table_(chan_->slots()),
      watchdog_(io_timeout_ms),
      hooks_(std::move(hooks)) {}

void DriverPort::issue(channel::Request r, Kind kind) {
  Entry& e = table_[r.id];
  r.pool_off = uint32_t(uint64_t(r.id) * chan_->slot_size());
  e.busy = true;
  e.answered = false;
  e.kind = kind;
  e.seq = next_seq_++;
  e.sent_ns = monotonic_ns();
  e.req = r;
  chan_->push(r);
}

std::vector<int> DriverPort::fds() const {
  if (quarantined()) return {};
  if (watchdog_.fd() >= 0) return {chan_->resp_kick_fd(), watchdog_.fd()};
  return {chan_->resp_kick_fd()};
}

bool DriverPort::fd_ready(int fd, const OnAnswer& on_answer) {
  if (quarantined()) return fd == watchdog_.fd() || fd == chan_->resp_kick_fd();
  if (fd == watchdog_.fd()) {
    watchdog_.ack();
    check_progress();
    return true;
  }
  if (fd != chan_->resp_kick_fd()) return false;
  chan_->ack_doorbell();
  read_answers(on_answer);
  return true;
}

// Everything in a response is the driver's word: check it against what was
// issued before the device acts on it.
bool DriverPort::check(const channel::Response& r) {
  const std::string id = std::to_string(r.id);
  if (r.id >= table_.size()) {
    violation("protocol violation: completion id " + id + " was never issued");
    return false;
  }
  const Entry& e = table_[r.id];
  if (!e.busy) {
    violation(e.answered ? "protocol violation: duplicate completion id " + id
                         : "protocol violation: completion id " + id + " was never issued");
    return false;
  }
  if (r.status < 0 || r.status > int32_t(channel::RespStatus::kUnsupported)) {
    violation("protocol violation: unknown status " + std::to_string(r.status) + " for id " + id);
    return false;
  }
  if (r.len > e.req.len) {
    violation("protocol violation: length " + std::to_string(r.len) + " beyond the " +
              std::to_string(e.req.len) + " posted for id " + id);
    return false;
  }
  return true;
}

void DriverPort::read_answers(const OnAnswer& on_answer) {
  while (!quarantined()) {
    auto r = chan_->pop();
    if (!r) {
      violation("protocol violation: " + r.error().message);
      return;
    }
    if (!r->has_value()) return;
    const channel::Response resp = **r;
    if (!check(resp)) return;
    if (clock_.served() && hooks_.first_served)
      hooks_.first_served(clock_.last_rebind_ns(), clock_.first_served_ns());
    Entry& e = table_[resp.id];
    e.busy = false;
    e.answered = true;
    on_answer(resp.id, e.req, resp);
  }
}

// Only owed requests count; the driver serves in order, so the oldest sent
// is the one it owes first.
void DriverPort::check_progress() {
  const Entry* oldest = nullptr;
  uint32_t oldest_id = 0;
  for (uint32_t id = 0; id < table_.size(); ++id) {
    const Entry& e = table_[id];
    if (e.busy && e.kind == Kind::kOwed && (!oldest || e.sent_ns < oldest->sent_ns)) {
      oldest = &e;
      oldest_id = id;
    }
  }
  if (!oldest) return;
  if (auto cause = stall_cause(watchdog_.deadline_ms(), monotonic_ns(), oldest_id, oldest->sent_ns))
    violation(*cause);
}

void DriverPort::drain(const std::function<size_t()>& pending, const OnAnswer& on_answer) {
  constexpr auto kDrainTimeout = std::chrono::seconds(2);
  const auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  if (state_ == State::kLive) state_ = State::kDraining;
  while (!quarantined() && pending() > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      AXL_WARN("%s: ring stopped with %zu requests still at the driver", what_, pending());
      break;
    }
    pollfd p{chan_->resp_kick_fd(), POLLIN, 0};
    ::poll(&p, 1, int(left.count()));
    chan_->ack_doorbell();
    read_answers(on_answer);
  }
  if (state_ == State::kDraining) state_ = State::kLive;
}

Result<size_t> DriverPort::rebind(
    channel::HvEnd fresh, const std::function<bool(uint32_t, const channel::Request&)>& replay) {
  if (fresh.slots() != chan_->slots() || fresh.slot_size() != chan_->slot_size())
    return make_error("rebind: channel shape differs from the device's");
  chan_ = std::make_unique<channel::HvEnd>(std::move(fresh));
  clock_.rebound();
  state_ = State::kLive;
  std::vector<uint32_t> owed;
  for (uint32_t id = 0; id < table_.size(); ++id) {
    Entry& e = table_[id];
    e.answered = false;  // answers count per channel
    if (!e.busy) continue;
    if (e.kind == Kind::kWaiting)
      e.busy = false;
    else
      owed.push_back(id);
  }
  // In first-sent order: the driver serves in order, so writes stay ordered
  // around flushes exactly as the guest issued them.
  std::sort(owed.begin(), owed.end(),
            [this](uint32_t a, uint32_t b) { return table_[a].seq < table_[b].seq; });
  size_t sent = 0;
  for (uint32_t id : owed) {
    Entry& e = table_[id];
    if (!replay(id, e.req)) {
      e.busy = false;
      continue;
    }
    e.sent_ns = monotonic_ns();
    chan_->push(e.req);
    ++sent;
  }
  chan_->kick();
  return sent;
}

void DriverPort::violation(const std::string& cause) {
  violations_.fetch_add(1, std::memory_order_relaxed);
  AXL_ERROR("%s: %s: channel quarantined", what_, cause.c_str());
  // Nothing fails to the guest: requests in flight stay in the table for a
  // replay on a fresh channel, once the driver is replaced.
  state_ = State::kQuarantined;
  if (hooks_.quarantined) hooks_.quarantined(cause);
}

void DriverPort::fill(DeviceStats& s) const {
  s.driver_violations = violations_.load(std::memory_order_relaxed);
  clock_.fill(s);
}

}  // namespace axl::hv::io
