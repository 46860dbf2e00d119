#include "hypervisor/daemon/quarantine_reporter.h"

#include <chrono>

#include "common/control_client.h"
#include "common/log.h"

namespace axl::hv {

namespace {
constexpr int kAttempts = 5;
constexpr auto kRetryGap = std::chrono::milliseconds(200);
constexpr int kCallTimeoutMs = 2000;
}  // namespace

QuarantineReporter::QuarantineReporter(std::string supervisor_socket)
    : socket_(std::move(supervisor_socket)), worker_([this] { run(); }) {}

QuarantineReporter::~QuarantineReporter() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void QuarantineReporter::report(const std::string& driver, int pid, const std::string& cause) {
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const Report& r : queue_)
      if (r.driver == driver && r.pid == pid) return;
    queue_.push_back({driver, pid, cause});
  }
  cv_.notify_one();
}

void QuarantineReporter::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Report r = queue_.front();
    lk.unlock();
    std::string last_error;
    bool delivered = false;
    for (int attempt = 0; attempt < kAttempts && !delivered; ++attempt) {
      if (attempt) std::this_thread::sleep_for(kRetryGap);
      auto rep = control::call(
          socket_,
          [&](schema::ControlRequest::Builder q) {
            auto m = q.initDriverQuarantined();
            m.setName(r.driver);
            m.setPid(r.pid);
            m.setCause(r.cause);
          },
          kCallTimeoutMs);
      if (rep) delivered = true;
      else last_error = rep.error().message;
    }
    if (delivered)
      AXL_INFO("asked the supervisor to replace driver %s (pid %d): %s", r.driver.c_str(), r.pid,
               r.cause.c_str());
    else
      AXL_ERROR("could not ask the supervisor to replace driver %s (pid %d): %s; its channel "
                "stays quarantined",
                r.driver.c_str(), r.pid, last_error.c_str());
    lk.lock();
    queue_.pop_front();
  }
}

}  // namespace axl::hv
