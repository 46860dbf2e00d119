#include "supervisor/dbus/supervisor_backend.h"

namespace axl::dbus {

namespace {
Error no_domain_ops() {
  return make_error("domain management is not available through the supervisor");
}
}  // namespace

uint64_t last_outage_us(const supervisor::DriverDomain& d) {
  if (d.outages.empty()) return 0;
  const auto& o = d.outages.back();
  return o.served_ns > o.fail_ns ? (o.served_ns - o.fail_ns) / 1000 : 0;
}

Result<std::vector<DomainRow>> SupervisorBackend::list_domains() {
  if (!domains_.list) return no_domain_ops();
  return domains_.list();
}

Result<std::string> SupervisorBackend::create_domain(const std::string& config_path) {
  if (!domains_.create) return no_domain_ops();
  return domains_.create(config_path);
}

Status SupervisorBackend::destroy_domain(const std::string& name) {
  if (!domains_.destroy) return no_domain_ops();
  return domains_.destroy(name);
}

std::vector<DriverRow> SupervisorBackend::list_drivers() {
  std::vector<DriverRow> rows;
  const uint64_t now = supervisor::monotonic_ns();
  for (const auto& d : drivers_.drivers()) {
    const bool running = d->state == supervisor::DriverState::kRunning;
    DriverRow r;
    r.name = d->cfg.name;
    r.kind = config::to_string(d->cfg.kind);
    r.state = supervisor::to_string(d->state);
    r.last_failure = d->last_failure;
    r.pid = d->child.pid;
    r.restarts = d->restarts;
    r.uptime_s = running && now > d->started_ns ? (now - d->started_ns) / 1000000000 : 0;
    const uint64_t pong = d->monitor ? d->monitor->last_pong_ns() : 0;
    r.heartbeat_lag_ms = running && pong && now > pong ? double(now - pong) / 1e6 : 0;
    rows.push_back(std::move(r));
  }
  return rows;
}

Status SupervisorBackend::kill_driver(const std::string& name, const std::string& signal) {
  return drivers_.kill(name, signal);
}

Status SupervisorBackend::restart_driver(const std::string& name) {
  return drivers_.restart_now(name);
}

std::vector<OutageRow> SupervisorBackend::outages(const std::string& driver) {
  std::vector<OutageRow> rows;
  for (const auto& d : drivers_.drivers()) {
    if (!driver.empty() && d->cfg.name != driver) continue;
    for (const auto& o : d->outages) {
      OutageRow r;
      r.driver = d->cfg.name;
      r.cause = o.cause;
      r.detect_us = o.detect_ns > o.fail_ns ? (o.detect_ns - o.fail_ns) / 1000 : 0;
      r.outage_us = o.served_ns > o.fail_ns ? (o.served_ns - o.fail_ns) / 1000 : 0;
      r.at_unix_s = o.at_unix_s;
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

}  // namespace axl::dbus
