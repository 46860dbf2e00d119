#include "supervisor/control_api.h"

#include <set>

#include "common/config.h"
#include "common/control_server.h"
#include "supervisor/snapshot.h"

namespace axl::supervisor {

ControlServer::AsyncHandler control_api(boost::asio::io_context& io, DriverManager& drivers,
                                        VtpmManager& vtpms,
                                        const std::unique_ptr<dbus::ManagerApi>& dbus_api) {
  return [&io, &drivers, &vtpms, &dbus_api](schema::ControlRequest::Reader req,
                                            schema::ControlReply::Builder rep,
                                            ControlServer::Context& ctx) {
    using R = axl::schema::ControlRequest;
    rep.setOk(true);
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
        axl::set_status(rep, drivers.kill(k.getName(), k.getSignal()));
        break;
      }
      case R::INJECT_FAULT: {
        auto k = req.getInjectFault();
        axl::set_status(rep, drivers.inject(k.getName(), k.getSignal()));
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
        axl::set_status(rep, drivers.restart_now(req.getRestartDriver()));
        break;
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
