#include "hypervisor/daemon/supervisor_events.h"

#include <algorithm>
#include <chrono>

#include "common/log.h"

namespace axl::hv {

namespace {
constexpr int kAttempts = 5;
constexpr auto kRetryGap = std::chrono::milliseconds(200);
constexpr auto kMaxRetryGap = std::chrono::milliseconds(1000);
constexpr int kCallTimeoutMs = 2000;
}  // namespace

SupervisorEvents::SupervisorEvents(boost::asio::io_context& io,
                                   const std::string& supervisor_socket)
    : client_(io, supervisor_socket), retry_(io) {}

SupervisorEvents::~SupervisorEvents() {
  if (call_) call_->cancel();
  retry_.cancel();
}

void SupervisorEvents::quarantined(const std::string& driver, int pid, const std::string& cause) {
  // The head may be on its way already; a later duplicate is still merged.
  for (const Event& e : queue_)
    if (e.kind == Event::Kind::kQuarantined && e.name == driver && e.pid == pid) return;
  push(Event{Event::Kind::kQuarantined, driver, pid, cause});
}

void SupervisorEvents::domain_state(const std::string& domain, const std::string& state) {
  push(Event{Event::Kind::kDomainState, domain, 0, state});
}

void SupervisorEvents::served(const std::string& driver, int pid, uint64_t rebound_ns,
                              uint64_t served_ns, uint64_t died_ns) {
  push(Event{Event::Kind::kServed, driver, pid, "", rebound_ns, served_ns, died_ns});
}

void SupervisorEvents::policy_counted(uint64_t allowed, uint64_t denied) {
  // Counts only grow: one queued behind the head is brought up to date.
  if (queue_.size() > 1 && queue_.back().kind == Event::Kind::kPolicyCounted) {
    queue_.back().rebound_ns = allowed;
    queue_.back().served_ns = denied;
    return;
  }
  push(Event{Event::Kind::kPolicyCounted, "", 0, "", allowed, denied});
}

void SupervisorEvents::push(Event e) {
  queue_.push_back(std::move(e));
  if (!in_flight_) send_head();
}

void SupervisorEvents::send_head() {
  if (queue_.empty()) return;
  const Event& e = queue_.front();
  control::Request req;
  switch (e.kind) {
    case Event::Kind::kQuarantined:
      req = control::supervisor::driver_quarantined(e.name, e.pid, e.what);
      break;
    case Event::Kind::kServed:
      req = control::supervisor::driver_served(e.name, e.pid, e.rebound_ns, e.served_ns, e.died_ns);
      break;
    case Event::Kind::kDomainState:
      req = control::supervisor::domain_state_changed(e.name, e.what);
      break;
    case Event::Kind::kPolicyCounted:
      req = control::supervisor::policy_counted(e.rebound_ns, e.served_ns);
      break;
  }
  in_flight_ = true;
  call_ =
      client_.send(req, kCallTimeoutMs, [this](Result<control::ControlReply> r) { head_done(r); });
}

void SupervisorEvents::head_done(const Result<control::ControlReply>& r) {
  call_.reset();
  const Event& e = queue_.front();
  // The supervisor's own refusal (an instance no longer active) is an
  // answer too: only a missing answer is worth another try.
  const bool answered = r.ok() || r.error().code == Errc::kOther;
  // A quarantined channel stays so until someone replaces its driver: that
  // report waits for the supervisor to come back (its monitor restarts it),
  // however long; the others are tried a few times.
  const bool keep = e.kind == Event::Kind::kQuarantined;
  if (!answered && (keep || ++attempt_ < kAttempts)) {
    if (keep && attempt_++ == 0)
      AXL_WARN("supervisor unreachable (%s): the report on driver %s (pid %d) waits for it",
               r.error().message.c_str(), e.name.c_str(), e.pid);
    retry_.expires_after(keep ? std::min(kRetryGap * (1 << std::min(attempt_, 4)), kMaxRetryGap)
                              : kRetryGap);
    retry_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) send_head();
    });
    return;
  }
  const std::string why = r.ok() ? "" : r.error().message;
  if (e.kind == Event::Kind::kQuarantined && r.ok()) {
    AXL_INFO("asked the supervisor to replace driver %s (pid %d): %s", e.name.c_str(), e.pid,
             e.what.c_str());
  } else if (e.kind == Event::Kind::kQuarantined) {
    AXL_ERROR(
        "%s driver %s (pid %d): %s; its channel stays quarantined",
        answered ? "the supervisor would not replace" : "could not ask the supervisor to replace",
        e.name.c_str(), e.pid, why.c_str());
  } else if (!r.ok() && e.kind == Event::Kind::kDomainState) {
    AXL_WARN("could not tell the supervisor that domain %s is %s: %s", e.name.c_str(),
             e.what.c_str(), why.c_str());
  } else if (!r.ok() && e.kind == Event::Kind::kPolicyCounted) {
    AXL_WARN("could not tell the supervisor the policy's counts: %s", why.c_str());
  } else if (!r.ok()) {
    AXL_WARN("could not tell the supervisor when driver %s (pid %d) first served: %s",
             e.name.c_str(), e.pid, why.c_str());
  }
  attempt_ = 0;
  in_flight_ = false;
  queue_.pop_front();
  send_head();
}

}  // namespace axl::hv
