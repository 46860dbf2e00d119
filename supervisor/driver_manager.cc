#include "supervisor/driver_manager.h"

#include "common/log.h"
#include "supervisor/tap.h"

namespace axl::supervisor {

namespace asio = boost::asio;

const char* to_string(DriverState s) {
  switch (s) {
    case DriverState::kStarting: return "starting";
    case DriverState::kRunning: return "running";
    case DriverState::kRestarting: return "restarting";
    case DriverState::kFailed: return "failed";
    case DriverState::kStopped: return "stopped";
  }
  return "?";
}

DriverManager::DriverManager(asio::io_context& io, std::string bin, std::string hv_socket,
                             std::string log_dir)
    : io_(io), bin_(std::move(bin)), hv_socket_(std::move(hv_socket)), log_dir_(std::move(log_dir)) {}

DriverManager::~DriverManager() { stop_all(); }

Status DriverManager::start_all(const config::HostConfig& host) {
  for (const auto& dc : host.drivers) {
    auto d = std::make_unique<DriverDomain>();
    d->cfg = dc;
    if (dc.kind == config::DriverKind::kNet) {
      auto tap = open_tap(dc.tap);
      if (!tap) return make_error("driver '" + dc.name + "': " + tap.error().message);
      d->tap = std::move(tap).value();
    }
    if (auto s = spawn(*d); !s) return s;
    drivers_.push_back(std::move(d));
  }
  return {};
}

Status DriverManager::spawn(DriverDomain& d) {
  proc::SpawnOptions so;
  so.argv = {bin_, "--name", d.cfg.name, "--kind", config::to_string(d.cfg.kind), "--hv-socket",
             hv_socket_};
  if (d.tap) {
    so.argv.insert(so.argv.end(), {"--tap-fd", "3"});
    so.fds.emplace_back(d.tap.get(), 3);
  }
  so.log_path = log_dir_ + "/driver-" + d.cfg.name + ".log";
  auto c = proc::spawn(so);
  if (!c) return make_error("driver '" + d.cfg.name + "': " + c.error().message);
  d.child = std::move(c).value();
  d.state = DriverState::kRunning;
  DriverDomain* raw = &d;
  d.exit_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d.child.pidfd.get()));
  d.exit_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, raw](const boost::system::error_code& ec) {
                             if (!ec) on_exit(raw);
                           });
  AXL_INFO("driver %s (%s) started, pid %d", d.cfg.name.c_str(), config::to_string(d.cfg.kind),
           d.child.pid);
  return {};
}

void DriverManager::on_exit(DriverDomain* d) {
  auto st = proc::wait_for(d->child, std::chrono::milliseconds(0));
  d->exit_status = st ? *st : -1;
  d->child.pid = -1;
  d->failed_at = std::chrono::steady_clock::now();
  d->last_failure = proc::describe_status(d->exit_status);
  AXL_WARN("driver %s %s", d->cfg.name.c_str(), d->last_failure.c_str());
  if (stopping_) {
    d->state = DriverState::kStopped;
    return;
  }
  // Restart budget: restart_max within restart_window_s.
  auto now = d->failed_at;
  auto window = std::chrono::seconds(d->cfg.restart_window_s);
  while (!d->recent_restarts.empty() && now - d->recent_restarts.front() > window)
    d->recent_restarts.pop_front();
  if (d->recent_restarts.size() >= d->cfg.restart_max) {
    d->state = DriverState::kFailed;
    AXL_ERROR("driver %s failed: %u restarts within %u s", d->cfg.name.c_str(),
              d->cfg.restart_max, d->cfg.restart_window_s);
    return;
  }
  d->state = DriverState::kRestarting;
  // Back-to-back failures back off exponentially from backoff_ms.
  uint32_t delay = d->cfg.backoff_ms;
  for (size_t i = 1; i < d->recent_restarts.size() && delay && delay < 60000; ++i) delay *= 2;
  d->restart_timer = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(delay));
  d->restart_timer->async_wait([this, d](const boost::system::error_code& ec) {
    if (!ec) restart(d);
  });
}

void DriverManager::restart(DriverDomain* d) {
  d->recent_restarts.push_back(std::chrono::steady_clock::now());
  ++d->restarts;
  if (auto s = spawn(*d); !s) {
    AXL_ERROR("driver %s: restart failed: %s", d->cfg.name.c_str(), s.error().message.c_str());
    d->state = DriverState::kFailed;
  }
}

void DriverManager::stop_all() {
  stopping_ = true;
  for (auto& d : drivers_) {
    if (d->restart_timer) d->restart_timer->cancel();
    if (d->exit_watch) d->exit_watch->cancel();
    if (d->state != DriverState::kStopped && d->child.pid > 0) {
      d->exit_status = proc::stop(d->child, std::chrono::milliseconds(2000));
      d->child.pid = -1;
      d->state = DriverState::kStopped;
    }
  }
  drivers_.clear();
}

}  // namespace axl::supervisor
