#include "hypervisor/daemon/supervisor_events.h"

#include <chrono>

#include "common/control_client.h"
#include "common/log.h"

namespace axl::hv {

namespace {
constexpr int kAttempts = 5;
constexpr auto kRetryGap = std::chrono::milliseconds(200);
constexpr int kCallTimeoutMs = 2000;
}  // namespace

SupervisorEvents::SupervisorEvents(std::string supervisor_socket)
    : socket_(std::move(supervisor_socket)), worker_([this] { run(); }) {}

SupervisorEvents::~SupervisorEvents() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void SupervisorEvents::quarantined(const std::string& driver, int pid, const std::string& cause) {
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const Event& e : queue_)
      if (e.kind == Event::Kind::kQuarantined && e.name == driver && e.pid == pid) return;
  }
  push(Event{Event::Kind::kQuarantined, driver, pid, cause});
}

void SupervisorEvents::domain_state(const std::string& domain, const std::string& state) {
  push(Event{Event::Kind::kDomainState, domain, 0, state});
}

void SupervisorEvents::served(const std::string& driver, int pid, uint64_t rebound_ns,
                              uint64_t served_ns) {
  push(Event{Event::Kind::kServed, driver, pid, "", rebound_ns, served_ns});
}

void SupervisorEvents::push(Event e) {
  {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
}

bool SupervisorEvents::deliver(const Event& e, std::string* error) {
  auto rep = control::call(
      socket_,
      [&](schema::ControlRequest::Builder q) {
        if (e.kind == Event::Kind::kQuarantined) {
          auto m = q.initDriverQuarantined();
          m.setName(e.name);
          m.setPid(e.pid);
          m.setCause(e.what);
        } else if (e.kind == Event::Kind::kServed) {
          auto m = q.initDriverServed();
          m.setName(e.name);
          m.setPid(e.pid);
          m.setReboundNs(e.rebound_ns);
          m.setServedNs(e.served_ns);
        } else {
          auto m = q.initDomainStateChanged();
          m.setName(e.name);
          m.setState(e.what);
        }
      },
      kCallTimeoutMs);
  if (rep) return true;
  *error = rep.error().message;
  return false;
}

void SupervisorEvents::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Event e = queue_.front();
    lk.unlock();
    std::string last_error;
    bool delivered = false;
    for (int attempt = 0; attempt < kAttempts && !delivered; ++attempt) {
      if (attempt) std::this_thread::sleep_for(kRetryGap);
      delivered = deliver(e, &last_error);
    }
    if (e.kind == Event::Kind::kQuarantined) {
      if (delivered)
        AXL_INFO("asked the supervisor to replace driver %s (pid %d): %s", e.name.c_str(), e.pid,
                 e.what.c_str());
      else
        AXL_ERROR(
            "could not ask the supervisor to replace driver %s (pid %d): %s; its channel "
            "stays quarantined",
            e.name.c_str(), e.pid, last_error.c_str());
    } else if (!delivered && e.kind == Event::Kind::kDomainState) {
      AXL_WARN("could not tell the supervisor that domain %s is %s: %s", e.name.c_str(),
               e.what.c_str(), last_error.c_str());
    } else if (!delivered) {
      AXL_WARN("could not tell the supervisor when driver %s (pid %d) first served: %s",
               e.name.c_str(), e.pid, last_error.c_str());
    }
    lk.lock();
    queue_.pop_front();
  }
}

}  // namespace axl::hv
