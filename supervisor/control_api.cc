#include "supervisor/control_api.h"

#include <unistd.h>

#include <cstring>
#include <set>

#include "common/config.h"
#include "common/control_server.h"
#include "common/daemon_fault.h"
#include "common/wire.h"
#include "policy/control.h"
#include "supervisor/snapshot.h"

namespace axl::supervisor {

void apply_policy(config::DriverConfig& cfg, const config::DriverConfig& host_cfg,
                  const policy::Policy& p) {
  const policy::DriverSettings s = p.driver(cfg.name);
  cfg.restart_max = s.restart_max.value_or(host_cfg.restart_max);
  cfg.restart_window_s = s.restart_window_s.value_or(host_cfg.restart_window_s);
  cfg.backoff_ms = s.backoff_ms.value_or(host_cfg.backoff_ms);
  cfg.memory_max_mib = s.memory_max_mib.value_or(host_cfg.memory_max_mib);
  cfg.pids_max = s.pids_max.value_or(host_cfg.pids_max);
  cfg.cpu_percent = s.cpu_percent.value_or(host_cfg.cpu_percent);
}

Status failovers_fit(const policy::Policy& p, const config::HostConfig& host) {
  for (const auto& d : host.drivers) {
    const std::string to = p.driver(d.name).failover;
    if (to.empty()) continue;
    const config::DriverConfig* t = host.find_driver(to);
    if (!t || t->kind != d.kind)
      return make_error(p.origin() + ": driver " + d.name + " fails over to " + to +
                        ", which is not a " + config::to_string(d.kind) + " driver of this host");
  }
  return {};
}

namespace {

// A connection to a domain's vTPM command socket (STATE/dom/NAME/vtpm.cmd).
Result<UniqueFd> connect_vtpm(const std::string& state_dir, const std::string& domain) {
  if (!config::valid_name(domain)) return make_error("bad domain name '" + domain + "'");
  if (::access((state_dir + "/dom/" + domain).c_str(), F_OK) != 0)
    return make_error("no domain '" + domain + "'");
  const std::string path = state_dir + "/dom/" + domain + "/vtpm.cmd";
  if (::access(path.c_str(), F_OK) != 0) return make_error("domain '" + domain + "' has no vTPM");
  return wire::stream_connect(path);
}

}  // namespace

ControlServer::AsyncHandler control_api(boost::asio::io_context& io, DriverManager& drivers,
                                        VtpmManager& vtpms, policy::DecisionPoint& access,
                                        const config::HostConfig& host,
                                        const std::string& state_dir,
                                        const std::unique_ptr<dbus::ManagerApi>& dbus_api,
                                        std::function<void(uint64_t, uint64_t)> hv_counted) {
  return [&io, &drivers, &vtpms, &access, &host, state_dir, &dbus_api, hv_counted](
             schema::ControlRequest::Reader req, schema::ControlReply::Builder rep,
             ControlServer::Context& ctx) {
    using R = axl::schema::ControlRequest;
    using policy::Kind;
    using policy::Permission;
    rep.setOk(true);
    // Whether the request's subject holds `p` on `o`; if not, the reply
    // names the rule that refused it.
    auto allowed = [&](Permission p, Kind k, const std::string& name) {
      return policy::authorize(access, ctx, req, p, policy::Object{k, name}, rep);
    };
    switch (req.which()) {
      case R::LIST_DRIVERS: {
        const auto views = driver_views(drivers, monotonic_ns());
        auto l = rep.initDrivers(unsigned(views.size()));
        for (unsigned i = 0; i < views.size(); ++i) {
          const auto& v = views[i];
          l[i].setName(v.name);
          l[i].setKind(v.kind);
          l[i].setPid(v.pid);
          l[i].setStandbyPid(v.standby_pid);
          l[i].setSparePid(v.spare_pid);
          l[i].setState(v.state);
          l[i].setRestarts(v.restarts);
          l[i].setLastFailure(v.last_failure);
          l[i].setUptimeMs(v.uptime_ms);
          l[i].setHeartbeatLagMs(v.heartbeat_lag_ms);
          auto os = l[i].initOutages(unsigned(v.outages.size()));
          for (unsigned j = 0; j < v.outages.size(); ++j) {
            const auto& o = v.outages[j];
            os[j].setCause(o.cause);
            os[j].setDetectUs(o.detect_us);
            os[j].setRestartUs(o.restart_us);
            os[j].setOutageUs(o.outage_us);
            os[j].setAtUnixS(o.at_unix_s);
            os[j].setHvDetectUs(o.hv_detect_us);
          }
        }
        break;
      }
      case R::KILL_DRIVER: {
        auto k = req.getKillDriver();
        if (!allowed(Permission::kKill, Kind::kDriver, k.getName())) break;
        axl::set_status(rep, drivers.kill(k.getName(), k.getSignal()));
        break;
      }
      case R::INJECT_FAULT: {
        auto k = req.getInjectFault();
        if (k.getDaemon()) {
          axl::set_status(rep, crash_on_request(io, "supervisor", k.getFault(),
                                                host.daemon_fault_injection, ctx.peer()));
          break;
        }
        if (k.getVtpm()) {
          if (!allowed(Permission::kInjectFault, Kind::kVtpm, k.getName())) break;
          axl::set_status(rep, vtpms.inject(k.getName(), k.getFault()));
          break;
        }
        if (!allowed(Permission::kInjectFault, Kind::kDriver, k.getName())) break;
        axl::set_status(rep, drivers.inject(k.getName(), k.getFault(),
                                            {k.getAfter(), k.getProbability(), k.getSeed()}));
        break;
      }
      case R::DRIVER_SERVED: {
        auto e = req.getDriverServed();
        axl::set_status(rep, drivers.served(e.getName(), e.getPid(), e.getReboundNs(),
                                            e.getServedNs(), e.getDiedNs()));
        break;
      }
      case R::DOMAIN_STATE_CHANGED: {
        // From the hypervisor, for every state change of a domain whoever
        // caused it; the name and state still go onto the bus, so check them.
        auto e = req.getDomainStateChanged();
        std::string name = e.getName(), state = e.getState();
        static const std::set<std::string> kStates = {
            "preparing", "vtpm-starting", "attaching", "starting",  "running",
            "shutoff",   "stopping",      "failed",    "destroyed", "crashed"};
        if (!axl::config::valid_name(name) || !kStates.count(state)) {
          rep.setOk(false);
          rep.setError("domainStateChanged: a domain name and a known state expected");
          break;
        }
        if (dbus_api) dbus_api->emit_domain_state_changed(name, state);
        break;
      }
      case R::DRIVER_QUARANTINED: {
        // Only the hypervisor reports these (the control socket is the
        // host's own); the cause still goes into records, so bound it.
        auto q = req.getDriverQuarantined();
        std::string cause = q.getCause();
        if (cause.empty() || cause.size() > 256 ||
            cause.find_first_of("\n\r") != std::string::npos) {
          rep.setOk(false);
          rep.setError("driverQuarantined: cause must be one line of 1 to 256 characters");
          break;
        }
        axl::set_status(rep, drivers.kill_with_cause(q.getName(), q.getPid(), cause));
        break;
      }
      case R::START_VTPM: {
        // Answered once the vTPM listens (provisioning one takes seconds); the
        // loop serves on meanwhile.
        auto v = req.getStartVtpm();
        auto reply = ctx.defer();
        vtpms.start(v.getDomain(), v.getMeasureLog(), v.getCommandPort(),
                    [reply](const axl::Status& st) {
                      axl::set_status(reply->reply(), st);
                      reply->send();
                    });
        break;
      }
      case R::STOP_VTPM:
        axl::set_status(rep, vtpms.stop(req.getStopVtpm()));
        break;
      case R::LIST_VTPMS: {
        const auto views = vtpm_views(vtpms, monotonic_ns());
        auto l = rep.initVtpms(unsigned(views.size()));
        for (unsigned i = 0; i < views.size(); ++i) {
          const auto& v = views[i];
          l[i].setDomain(v.domain);
          l[i].setPid(v.pid);
          l[i].setState(v.state);
          l[i].setRestarts(v.restarts);
          l[i].setLastFailure(v.last_failure);
          l[i].setCommandPort(v.command_port);
          l[i].setUptimeMs(v.uptime_ms);
        }
        break;
      }
      case R::RESTART_DRIVER:
        if (!allowed(Permission::kRestart, Kind::kDriver, req.getRestartDriver())) break;
        axl::set_status(rep, drivers.restart_now(req.getRestartDriver()));
        break;
      case R::DELETE_VTPM:
        // Retiring a vTPM ends the guest's identity as destroying it ends
        // the guest: the same permission.
        if (!allowed(Permission::kDestroy, Kind::kGuest, req.getDeleteVtpm())) break;
        axl::set_status(rep, vtpms.retire(req.getDeleteVtpm()));
        break;
      case R::OPEN_VTPM: {
        auto o = req.getOpenVtpm();
        const std::string domain = o.getDomain(), purpose = o.getPurpose();
        if (purpose == "attest") {
          if (!allowed(Permission::kAttest, Kind::kGuest, domain)) break;
        } else if (purpose == "access") {
          if (!allowed(Permission::kVtpmAccess, Kind::kVtpm, domain)) break;
        } else {
          rep.setOk(false);
          rep.setError("openVtpm: purpose must be access or attest");
          break;
        }
        auto fd = connect_vtpm(state_dir, domain);
        if (!fd) {
          axl::set_status(rep, fd.error());
          break;
        }
        auto reply = ctx.defer();
        reply->reply().setGolden(access.policy().guest(domain).golden);
        reply->send({fd->get()});
        break;
      }
      case R::POLICY_COUNTED:
        if (hv_counted)
          hv_counted(req.getPolicyCounted().getAllowed(), req.getPolicyCounted().getDenied());
        break;
      case R::RELOAD_POLICY: {
        policy::answer_reload(access, ctx, req.getReloadPolicy(), rep,
                              [&](const policy::Policy& p) { return failovers_fit(p, host); });
        if (rep.getOk() && !req.getReloadPolicy().getDryRun())
          for (const auto& d : drivers.drivers())
            if (const auto* h = host.find_driver(d->cfg.name))
              apply_policy(d->cfg, *h, access.policy());
        break;
      }
      case R::SHUTDOWN:
        io.post([&] { io.stop(); });
        break;
      case R::PING:
        break;
      default:
        rep.setOk(false);
        rep.setError("request not supported by the supervisor");
    }
  };
}

}  // namespace axl::supervisor
