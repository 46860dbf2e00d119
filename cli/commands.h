// The axl verbs.  Each returns the process exit status and prints at most one
// line on error, naming the problem.
#pragma once
#include <string>
#include <vector>

#include "common/fault_trigger.h"
#include "common/result.h"

namespace axl::cli {

struct HostPaths {
  std::string state_dir;
  std::string hv_socket() const { return state_dir + "/hv.sock"; }
  std::string supervisor_socket() const { return state_dir + "/supervisor.sock"; }
};

// bus: "" (the system bus when there is one), "system", "none", or a D-Bus address.
int host_up(const HostPaths& p, const std::string& config_path, const std::string& bus = "");
int host_down(const HostPaths& p);
// vtpm_state: "" or, for a name that had a vTPM before, "keep" or "new".
int create(const HostPaths& p, const std::string& config_path, const std::string& vtpm_state = "");
int vtpm_delete(const HostPaths& p, const std::string& name);
int list(const HostPaths& p);
int destroy(const HostPaths& p, const std::string& name);
int console(const HostPaths& p, const std::string& name, bool log_only);
int drivers(const HostPaths& p, bool stats = false);
int vtpms(const HostPaths& p);
// Pipes stdin to domain NAME's vTPM command socket (STATE/dom/NAME/vtpm.cmd,
// root's only) and its answers to stdout: tpm2-tools' `cmd:` TCTI
// (TPM2TOOLS_TCTI="cmd:axl vtpm-pipe NAME") reaches the vTPM with TPM
// commands only, no control channel and no TCP port.
int vtpm_pipe(const HostPaths& p, const std::string& name);
int driver_kill(const HostPaths& p, const std::string& name, const std::string& signal);
int inject(const HostPaths& p, const std::string& name, const std::string& fault,
           const FaultTrigger& trigger);
int inject_vtpm(const HostPaths& p, const std::string& domain, const std::string& fault);
int inject_daemon(const HostPaths& p, const std::string& daemon, const std::string& fault);
int driver_restart(const HostPaths& p, const std::string& name);
// `axl campaign FILE [--plan]` (docs/campaigns.md): exit 0 when every
// injection was detected and recovered with nothing lost, 1 when not, 130
// when interrupted (the partial report is written).
int campaign(const HostPaths& p, const std::string& file, bool plan_only);
int wait(const HostPaths& p, const std::string& name, double timeout_s);
// Runs argv in the guest through its agent: prints its output and exits with
// its status (128 + N for signal N); 255 when the command could not be run.
int exec(const HostPaths& p, const std::string& name, const std::vector<std::string>& argv,
         double timeout_s);
int shutdown(const HostPaths& p, const std::string& name, double timeout_s, bool force);

struct MeasureOptions {
  std::string kernel, initrd, cmdline, config, name = "my-image";
  // A firmware-booted image instead: its PCR 4, 8 and 9 events.
  std::string image, format = "raw", write_golden;
  std::string write_log,
      write_record;  // also write the event log / boot record as the hypervisor does
  bool iommu = false;
};
int measure(const MeasureOptions& o);

struct AttestOptions {
  std::string name, policy, nonce_hex, tpm, event_log, boot_record, ca;
  // A firmware-booted domain: PCRs 4, 8 and 9 against these events
  // (`axl measure --image ... --write-golden`), the rest against the reference.
  std::string golden;
  bool json = false;
  // A firmware-booted domain: keep this boot's event log as the reference
  // that later boots are checked against (STATE/attest/NAME.reference).
  bool record = false;
};
int attest(const HostPaths& p, const AttestOptions& o);

// Shared by verbs: prints "axl: MSG" to stderr and returns 1.
int fail(const std::string& msg);

// The access policy (cli/policy.cc, docs/policy.md).
int policy_check(const std::string& file);
// FILE empty: the one the host config named.
int policy_reload(const HostPaths& p, std::string file);
// Puts FILE (empty: none, the built-in policy) in STATE/policy.toml for the
// daemons `axl host up` starts.
Status install_policy(const HostPaths& p, const std::string& file);

}  // namespace axl::cli
