#include "supervisor/dbus/supervisor_backend.h"

#include "supervisor/snapshot.h"

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

void SupervisorBackend::list_domains(Done<std::vector<DomainRow>> done) {
  if (!domains_.list) return done(no_domain_ops());
  domains_.list(std::move(done));
}

void SupervisorBackend::create_domain(const policy::Subject& caller, const std::string& config_path,
                                      const std::string& vtpm_state, Done<std::string> done) {
  if (!domains_.create) return done(no_domain_ops());
  domains_.create(caller, config_path, vtpm_state, std::move(done));
}

void SupervisorBackend::destroy_domain(const policy::Subject& caller, const std::string& name,
                                       std::function<void(Status)> done) {
  if (!domains_.destroy) return done(no_domain_ops());
  domains_.destroy(caller, name, std::move(done));
}

std::vector<DriverRow> SupervisorBackend::list_drivers() {
  std::vector<DriverRow> rows;
  for (auto& v : supervisor::driver_views(drivers_, supervisor::monotonic_ns())) {
    DriverRow r;
    r.name = std::move(v.name);
    r.kind = std::move(v.kind);
    r.state = std::move(v.state);
    r.last_failure = std::move(v.last_failure);
    r.pid = v.pid;
    r.restarts = v.restarts;
    r.uptime_s = v.uptime_ms / 1000;
    r.heartbeat_lag_ms = v.heartbeat_lag_ms;
    rows.push_back(std::move(r));
  }
  return rows;
}

Status SupervisorBackend::decide(const policy::Subject& caller, policy::Permission p,
                                 const std::string& driver) {
  auto d = access_.check(caller, p, policy::Object{policy::Kind::kDriver, driver});
  if (!d.allowed) return make_error(policy::denied(d));
  return {};
}

Status SupervisorBackend::kill_driver(const policy::Subject& caller, const std::string& name,
                                      const std::string& signal) {
  if (auto s = decide(caller, policy::Permission::kKill, name); !s) return s;
  return drivers_.kill(name, signal);
}

Status SupervisorBackend::restart_driver(const policy::Subject& caller, const std::string& name) {
  if (auto s = decide(caller, policy::Permission::kRestart, name); !s) return s;
  return drivers_.restart_now(name);
}

std::vector<OutageRow> SupervisorBackend::outages(const std::string& driver) {
  std::vector<OutageRow> rows;
  for (const auto& v : supervisor::driver_views(drivers_, supervisor::monotonic_ns())) {
    if (!driver.empty() && v.name != driver) continue;
    for (const auto& o : v.outages)
      rows.push_back(OutageRow{v.name, o.cause, o.detect_us, o.outage_us, o.at_unix_s});
  }
  return rows;
}

}  // namespace axl::dbus
