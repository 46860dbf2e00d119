// The requests each daemon answers on its control socket, built from typed
// arguments (common/schema/control.capnp), and a typed client per daemon for
// the daemons' own loops. A caller never fills the schema's union itself.
//
// The driver domains' protocol has its own typed client in the hypervisor
// (hypervisor/daemon/driver_registry.h, DriverConnection); a vTPM is spoken
// to by QEMU over the swtpm protocols (vtpm/ctrl_protocol.h), and by the
// supervisor only through its process (supervisor/vtpm_manager.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/control_client.h"
#include "common/fault_trigger.h"

namespace axl::control {

// axolotl-hv, STATE/hv.sock.
namespace hv {
// vtpm_state: "" (none given), "keep" or "new" (docs/architecture.md, vTPM).
Request create(const std::string& config_toml, const std::string& base_dir,
               const std::string& vtpm_state = "");
Request list();
Request destroy(const std::string& domain);
Request domain_info(const std::string& domain);
Request guest_exec(const std::string& domain, const std::string& path,
                   const std::vector<std::string>& args, uint32_t timeout_ms);
Request guest_shutdown(const std::string& domain, uint32_t timeout_ms, bool force);
// Fence this driver's active instance and move its devices to its warm
// standby now.
Request promote_standby(const std::string& driver);
Request open_console(const std::string& domain, bool log);
// Move every device of driver `from` to driver `to` (docs/policy.md, "Failover").
Request fail_over(const std::string& from, const std::string& to);
}  // namespace hv

// axolotl-supervisor, STATE/supervisor.sock.
namespace supervisor {
Request list_vtpms();
Request kill_driver(const std::string& driver, const std::string& signal);
Request restart_driver(const std::string& driver);
Request inject_fault(const std::string& driver, const std::string& fault,
                     const FaultTrigger& trigger = {});
// A fault in the daemon the request is sent to (common/daemon_fault.h).
Request inject_daemon_fault(const std::string& fault);
// A fault hook in the vTPM domain of `domain` (at once).
Request inject_vtpm_fault(const std::string& domain, const std::string& fault);
Request start_vtpm(const std::string& domain, bool measure_log, uint32_t command_port);
Request stop_vtpm(const std::string& domain);
Request driver_quarantined(const std::string& driver, int pid, const std::string& cause);
Request domain_state_changed(const std::string& domain, const std::string& state);
Request driver_served(const std::string& driver, int pid, uint64_t rebound_ns, uint64_t served_ns,
                      uint64_t died_ns);
Request policy_counted(uint64_t allowed, uint64_t denied);
Request open_vtpm(const std::string& domain, const std::string& purpose);
Request delete_vtpm(const std::string& domain);
}  // namespace supervisor

// Both daemons answer these.
Request list_drivers();  // the hypervisor's view of them, or the supervisor's
Request shutdown();      // stop the daemon and everything it started
Request ping();
// Check (dry_run) or put in force a new access policy (policy/access.h).
Request reload_policy(const std::string& text, const std::string& origin, bool dry_run);

// What the supervisor's loop asks the hypervisor, on one kept connection.
class HypervisorClient {
 public:
  HypervisorClient(boost::asio::io_context& io, const std::string& socket)
      : ch_(Channel::open(io, socket)) {}
  std::shared_ptr<PendingCall> list(int timeout_ms, Done done) {
    return ch_->call(hv::list(), timeout_ms, std::move(done));
  }
  std::shared_ptr<PendingCall> create(const std::string& config_toml, const std::string& base_dir,
                                      int timeout_ms, Done done) {
    return ch_->call(hv::create(config_toml, base_dir), timeout_ms, std::move(done));
  }
  std::shared_ptr<PendingCall> destroy(const std::string& domain, int timeout_ms, Done done) {
    return ch_->call(hv::destroy(domain), timeout_ms, std::move(done));
  }
  std::shared_ptr<PendingCall> list_drivers(int timeout_ms, Done done) {
    return ch_->call(control::list_drivers(), timeout_ms, std::move(done));
  }
  std::shared_ptr<PendingCall> promote_standby(const std::string& driver, int timeout_ms,
                                               Done done) {
    return ch_->call(hv::promote_standby(driver), timeout_ms, std::move(done));
  }
  // Any other request (one that names a caller: policy/control.h).
  std::shared_ptr<PendingCall> call(const Request& req, int timeout_ms, Done done) {
    return ch_->call(req, timeout_ms, std::move(done));
  }

 private:
  std::shared_ptr<Channel> ch_;
};

// What the hypervisor's loop asks and tells the supervisor, on one kept
// connection.
class SupervisorClient {
 public:
  SupervisorClient(boost::asio::io_context& io, const std::string& socket)
      : ch_(Channel::open(io, socket)) {}
  std::shared_ptr<PendingCall> start_vtpm(const std::string& domain, bool measure_log,
                                          uint32_t command_port, int timeout_ms, Done done) {
    return ch_->call(supervisor::start_vtpm(domain, measure_log, command_port), timeout_ms,
                     std::move(done));
  }
  std::shared_ptr<PendingCall> stop_vtpm(const std::string& domain, int timeout_ms, Done done) {
    return ch_->call(supervisor::stop_vtpm(domain), timeout_ms, std::move(done));
  }
  // Any other request (one that names a caller: policy/control.h).
  std::shared_ptr<PendingCall> call(const Request& req, int timeout_ms, Done done) {
    return ch_->call(req, timeout_ms, std::move(done));
  }
  // Events (hypervisor/daemon/supervisor_events.h sends them in order).
  std::shared_ptr<PendingCall> send(const Request& event, int timeout_ms, Done done) {
    return ch_->call(event, timeout_ms, std::move(done));
  }

 private:
  std::shared_ptr<Channel> ch_;
};

}  // namespace axl::control
