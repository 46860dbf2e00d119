// Fault hooks for fault-injection campaigns.  Compiled into every driver
// domain but unreachable unless the supervisor started it with
// --fault-injection (host config `fault_injection = true`).
#pragma once
#include <string>

#include "common/asio.h"
#include "common/result.h"

namespace axl::driverdom {

class FaultHooks {
 public:
  FaultHooks(boost::asio::io_context& io, bool enabled) : io_(io), enabled_(enabled) {}
  // Runs a named fault: crash (abort), hang (the event loop stops turning),
  // hog-memory (allocates and touches memory without bound), hog-pids
  // (forks without bound).  Error when disabled or unknown.
  Status run(const std::string& fault);

  // ---- escape-attempt hooks (the sandbox must refuse every one) ----
  // open-host-file, open-socket, ptrace-hv, signal-hv, map-hv-mem: each
  // tries to reach the host or the hypervisor and logs the errno it got, or
  // the process dies by SIGSYS on the way.  They aim at these:
  struct EscapeTargets {
    int hv_pid = 0;         // the hypervisor's PID as the host sees it
    std::string state_dir;  // the host's state dir (hv.sock, host.toml, ...)
  };
  void set_escape_targets(EscapeTargets t) { escape_ = std::move(t); }

 private:
  // True when `fault` names an escape-attempt hook (it then ran).
  bool run_escape(const std::string& fault);
  void escape_open_host_file();
  void escape_open_socket();
  void escape_ptrace_hv();
  void escape_signal_hv();
  void escape_map_hv_mem();
  EscapeTargets escape_;
  // ---- end of escape-attempt hooks ----

  void hog_memory_step();
  void hog_pids_step();
  boost::asio::io_context& io_;
  bool enabled_;
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

}  // namespace axl::driverdom
