#include "supervisor/snapshot.h"

namespace axl::supervisor {

namespace {
uint64_t us_between(uint64_t from_ns, uint64_t to_ns) {
  return to_ns > from_ns ? (to_ns - from_ns) / 1000 : 0;
}
}  // namespace

std::vector<DriverView> driver_views(const DriverManager& drivers, uint64_t now) {
  std::vector<DriverView> out;
  for (const auto& dp : drivers.drivers()) {
    const DriverDomain& d = *dp;
    const bool running = d.state == DriverState::kRunning;
    DriverView v;
    v.name = d.cfg.name;
    v.kind = config::to_string(d.cfg.kind);
    v.state = to_string(d.state);
    v.last_failure = d.last_failure;
    v.pid = d.pid();
    v.standby_pid = d.standby ? d.standby->pid() : 0;
    v.spare_pid = d.spare ? d.spare->pid() : 0;
    v.restarts = d.restarts;
    v.uptime_ms = running && now > d.started_ns ? (now - d.started_ns) / 1000000 : 0;
    const uint64_t pong = d.active && d.active->monitor() ? d.active->monitor()->last_pong_ns() : 0;
    v.heartbeat_lag_ms = running && pong && now > pong ? double(now - pong) / 1e6 : 0;
    for (const Outage& o : d.outages)
      v.outages.push_back(
          OutageView{o.cause, us_between(o.fail_ns, o.detect_ns),
                     o.restart_ns ? us_between(o.fail_ns, o.restart_ns) : 0,
                     us_between(o.fail_ns, o.served_ns), o.at_unix_s,
                     o.hv_detect_ns ? int64_t(us_between(o.fail_ns, o.hv_detect_ns)) : -1});
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<VtpmView> vtpm_views(const VtpmManager& vtpms, uint64_t now) {
  std::vector<VtpmView> out;
  for (const auto& vp : vtpms.all()) {
    const VtpmDomain& t = *vp;
    const bool running = t.state == VtpmState::kRunning;
    VtpmView v;
    v.domain = t.domain;
    v.state = to_string(t.state);
    v.last_failure = t.last_failure;
    v.pid = running ? t.pid() : -1;
    v.restarts = t.restarts;
    v.command_port = t.command_port;
    v.uptime_ms = running && now > t.started_ns ? (now - t.started_ns) / 1000000 : 0;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace axl::supervisor
