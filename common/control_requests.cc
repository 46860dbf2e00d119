#include "common/control_requests.h"

namespace axl::control {

using Q = schema::ControlRequest::Builder;

namespace hv {
Request create(const std::string& config_toml, const std::string& base_dir,
               const std::string& vtpm_state) {
  return [=](Q q) {
    auto c = q.initCreate();
    c.setConfigToml(config_toml);
    c.setBaseDir(base_dir);
    c.setVtpmState(vtpm_state);
  };
}
Request list() {
  return [](Q q) { q.setList(); };
}
Request destroy(const std::string& domain) {
  return [=](Q q) { q.setDestroy(domain); };
}
Request domain_info(const std::string& domain) {
  return [=](Q q) { q.setDomainInfo(domain); };
}
Request guest_exec(const std::string& domain, const std::string& path,
                   const std::vector<std::string>& args, uint32_t timeout_ms) {
  return [=](Q q) {
    auto e = q.initGuestExec();
    e.setDomain(domain);
    e.setPath(path);
    auto l = e.initArgs(unsigned(args.size()));
    for (unsigned i = 0; i < args.size(); ++i) l.set(i, args[i]);
    e.setTimeoutMs(timeout_ms);
  };
}
Request guest_shutdown(const std::string& domain, uint32_t timeout_ms, bool force) {
  return [=](Q q) {
    auto e = q.initGuestShutdown();
    e.setDomain(domain);
    e.setTimeoutMs(timeout_ms);
    e.setForce(force);
  };
}
Request promote_standby(const std::string& driver) {
  return [=](Q q) { q.setPromoteStandby(driver); };
}
Request open_console(const std::string& domain, bool log) {
  return [=](Q q) {
    auto o = q.initOpenConsole();
    o.setDomain(domain);
    o.setLog(log);
  };
}
Request fail_over(const std::string& from, const std::string& to) {
  return [=](Q q) {
    auto f = q.initFailOver();
    f.setFrom(from);
    f.setTo(to);
  };
}
}  // namespace hv

namespace supervisor {
Request list_vtpms() {
  return [](Q q) { q.setListVtpms(); };
}
Request kill_driver(const std::string& driver, const std::string& signal) {
  return [=](Q q) {
    auto k = q.initKillDriver();
    k.setName(driver);
    k.setSignal(signal);
  };
}
Request restart_driver(const std::string& driver) {
  return [=](Q q) { q.setRestartDriver(driver); };
}
Request inject_daemon_fault(const std::string& fault) {
  return [=](Q q) {
    auto k = q.initInjectFault();
    k.setFault(fault);
    k.setDaemon(true);
  };
}
Request inject_vtpm_fault(const std::string& domain, const std::string& fault) {
  return [=](Q q) {
    auto k = q.initInjectFault();
    k.setName(domain);
    k.setFault(fault);
    k.setVtpm(true);
  };
}
Request inject_fault(const std::string& driver, const std::string& fault,
                     const FaultTrigger& trigger) {
  return [=](Q q) {
    auto k = q.initInjectFault();
    k.setName(driver);
    k.setFault(fault);
    k.setAfter(trigger.after);
    k.setProbability(trigger.probability);
    k.setSeed(trigger.seed);
  };
}
Request start_vtpm(const std::string& domain, bool measure_log, uint32_t command_port) {
  return [=](Q q) {
    auto v = q.initStartVtpm();
    v.setDomain(domain);
    v.setMeasureLog(measure_log);
    v.setCommandPort(command_port);
  };
}
Request stop_vtpm(const std::string& domain) {
  return [=](Q q) { q.setStopVtpm(domain); };
}
Request driver_quarantined(const std::string& driver, int pid, const std::string& cause) {
  return [=](Q q) {
    auto m = q.initDriverQuarantined();
    m.setName(driver);
    m.setPid(pid);
    m.setCause(cause);
  };
}
Request domain_state_changed(const std::string& domain, const std::string& state) {
  return [=](Q q) {
    auto m = q.initDomainStateChanged();
    m.setName(domain);
    m.setState(state);
  };
}
Request driver_served(const std::string& driver, int pid, uint64_t rebound_ns, uint64_t served_ns,
                      uint64_t died_ns) {
  return [=](Q q) {
    auto m = q.initDriverServed();
    m.setName(driver);
    m.setPid(pid);
    m.setReboundNs(rebound_ns);
    m.setServedNs(served_ns);
    m.setDiedNs(died_ns);
  };
}
Request policy_counted(uint64_t allowed, uint64_t denied) {
  return [=](Q q) {
    auto p = q.initPolicyCounted();
    p.setAllowed(allowed);
    p.setDenied(denied);
  };
}
Request delete_vtpm(const std::string& domain) {
  return [=](Q q) { q.setDeleteVtpm(domain); };
}
Request open_vtpm(const std::string& domain, const std::string& purpose) {
  return [=](Q q) {
    auto o = q.initOpenVtpm();
    o.setDomain(domain);
    o.setPurpose(purpose);
  };
}
}  // namespace supervisor

Request list_drivers() {
  return [](Q q) { q.setListDrivers(); };
}
Request shutdown() {
  return [](Q q) { q.setShutdown(); };
}
Request ping() {
  return [](Q q) { q.setPing(); };
}
Request reload_policy(const std::string& text, const std::string& origin, bool dry_run) {
  return [=](Q q) {
    auto r = q.initReloadPolicy();
    r.setText(text);
    r.setOrigin(origin);
    r.setDryRun(dry_run);
  };
}

}  // namespace axl::control
