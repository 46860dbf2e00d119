// Spawns, watches and restarts the vTPM domains (axolotl-vtpm), one per
// guest that asks for one.  The hypervisor asks for a domain's vTPM at
// `axl create` (control.capnp StartVtpm); the answer comes once the vTPM's
// control socket listens, so QEMU can be started right after.  Nothing here
// waits on the loop: provisioning, an instance's start and a restart are
// waited for by watching the child's pidfd and its ready pipe, with a
// deadline, while every other request is served.
//
// Transparent restart: QEMU connects its tpm-emulator control channel once
// and hands over its command channel once (CMD_SET_DATAFD); neither is ever
// re-established.  So each vTPM instance sends both sockets here (SCM_RIGHTS
// over a socketpair given at spawn) the moment it has them, and a crashed
// instance's successor is spawned with them (--ctrl-fd, --data-fd).  It
// resumes its checkpointed volatile state (PCRs, sessions, loaded objects)
// and serves on; QEMU never sees a closed socket.
//
// Confinement (vtpm/sandbox.h): each serving instance runs in namespaces
// of its own as uid 65534, in an empty root holding only its state dir.  So
// everything it uses is made here and handed over as fds: its listening
// sockets (bound once per vTPM and kept across restarts), the host key, the
// boot's event log, and its state dir (opened inside its mount namespace by
// the spawn, common/process.h).  A vTPM whose state dir holds no TPM yet is
// first made by a short unconfined `--provision` instance, the only one that
// reads the host CA's key (vtpm/README.md says why that one runs as root).
//
// Health, as for driver domains: heartbeats on a socketpair (HealthMonitor;
// the vTPM answers from its event loop and withholds answers while one TPM
// command has held its engine for 30 s), so a hung instance is killed
// ("hang: 3 heartbeats missed") and restarted like a crashed one; and a
// cgroup per instance (memory 256 MiB, pids 64) whose OOM kill or refused
// thread is named as the cause.  The restart budget is a driver's default.
//
// Paths (all under the supervisor's state dir STATE):
//   STATE/vtpm/NAME/            the vTPM's sealed state; kept across destroy;
//                               owned by the sandbox uid, 0700
//   STATE/vtpm-host/key         the host key sealing it (0600, made on first need)
//   STATE/vtpm-host/ca/         the per-host vTPM CA (made by the first vTPM)
//   STATE/dom/NAME/vtpm.ctrl    QEMU's control socket
//   STATE/dom/NAME/vtpm.cmd     raw TPM commands for host tools (axl attest)
//   STATE/dom/NAME/eventlog.bin the hypervisor's boot measurements, if any
//   STATE/vtpm-NAME.log         the vTPM's stderr
#pragma once
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/child_wait.h"
#include "common/process.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "supervisor/cgroup/cgroup.h"
#include "supervisor/health_monitor.h"
#include "supervisor/instance.h"

namespace axl::supervisor {

// Lifecycle; transitions live in VtpmManager only.
// kStarting: being provisioned or started (also a restart in progress).
enum class VtpmState { kStarting, kRunning, kFailed, kStopped };
const char* to_string(VtpmState s);

// A vTPM domain: supervised like a driver domain (supervisor/instance.h):
// heartbeats (a hang), a cgroup with memory and pids limits (a hog), the
// cause of a kill the supervisor made, a restart budget as a driver's
// default.  Its instance while provisioning is the short `--provision` one.
struct VtpmDomain : Supervised {
  ~VtpmDomain() {
    if (waiting) waiting->cancel();
  }
  std::string domain;
  VtpmState state = VtpmState::kStarting;
  // While starting: the wait in flight, and whom to tell how the first start ended.
  std::shared_ptr<proc::ChildWait> waiting;
  std::function<void(Status)> on_started;
  bool measure_log = false;
  uint32_t command_port = 0;
  // QEMU's channels, as the current instance handed them over.
  UniqueFd ctrl_conn, data_conn;
  // Listening, made here and handed to every instance: vtpm.ctrl,
  // vtpm.cmd and, with a command port, 127.0.0.1:port and port + 1.
  UniqueFd ctrl_listen, cmd_listen, port_cmd_listen, port_ctrl_listen;
  // Where its instances report each new generation of its permanent state
  // (rollback protection: VtpmManager::rollback_floor).
  UniqueFd generations;
  std::unique_ptr<boost::asio::posix::stream_descriptor> handover;  // our end

  int pid() const { return active ? active->pid() : -1; }
};

class VtpmManager {
 public:
  // How long a vTPM may take to listen, and provisioning to make an EK, its
  // certificate and an AK (measured well under a second each here).
  static constexpr std::chrono::seconds kReadyTimeout{20};

  // Health and limits of each instance (fixed; a vTPM needs little).
  static constexpr std::chrono::milliseconds kHeartbeat{1000};
  static constexpr uint32_t kHeartbeatMisses = 3;
  static constexpr uint64_t kMemoryMax = 256ull << 20;
  static constexpr uint32_t kPidsMax = 64;  // the process and its command threads

  // cgroups: null where the host has none usable (the limits are then the
  // vTPM's own rlimits only).
  VtpmManager(boost::asio::io_context& io, std::string vtpm_bin, std::string state_dir,
              cgroup::Manager* cgroups = nullptr);
  ~VtpmManager();

  // Starts the vTPM of `domain` (provisioning it first if its state dir
  // holds no TPM); `done` runs on the loop once it serves, or with the
  // error (possibly before start returns).  A vTPM that cannot start is
  // stopped and leaves no socket behind.
  void start(const std::string& domain, bool measure_log, uint32_t command_port,
             std::function<void(Status)> done);
  // Stops it (SIGTERM by PID: an orderly power-off) and forgets it.
  Status stop(const std::string& domain);
  // Fault hooks in the vTPMs started from now on (host config
  // vtpm_fault_injection); inject() runs one (config::kVtpmFaultNames) in
  // a running vTPM.
  void set_fault_injection(bool on) { fault_injection_ = on; }
  Status inject(const std::string& domain, const std::string& fault);
  void stop_all();
  const std::vector<std::unique_ptr<VtpmDomain>>& all() const { return vtpms_; }

  // Persists every serving instance there (supervisor/journal.h), and keeps
  // what a successor needs in its fd store: the instance's health channel and
  // its end of the handover socket, the domain's listening sockets and QEMU's
  // channels as last handed over.
  void set_journal(Journal* j) { journal_ = j; }

  // Adopts the vTPMs a predecessor recorded (as DriverManager::start_all its
  // drivers): one still running serves on, watched again; one that died
  // meanwhile is restarted with QEMU's channels; one whose sockets were not
  // kept is stopped.
  void adopt_all();

  // Removes a domain's vTPM state (EK, seeds, sealed files) for good, so
  // that the next domain of that name gets a new vTPM; refused while its
  // vTPM runs.  (`axl vtpm-delete`, `axl create --vtpm-state new`.)
  Status retire(const std::string& domain);

 private:
  // Spawns an instance; `done` once it listens, exited or timed out.
  void launch(VtpmDomain& v, std::function<void(Status)> done);
  void start_instance(VtpmDomain* v);  // after provisioning, if any
  void start_failed(VtpmDomain* v, Error e);
  Status ensure_host_key();
  Result<UniqueFd> instance_key_fd(const std::string& domain);
  // Rollback protection: the newest permanent state generation this vTPM's
  // instances reported (read from `v.generations`), kept outside its state
  // dir in STATE/vtpm-host/counters/NAME; an instance is started with it as
  // the floor its state must reach.
  uint32_t rollback_floor(VtpmDomain& v);
  std::string counter_path(const std::string& domain) const;
  // A fresh report pipe for the next instance: the write end, for it.
  Result<UniqueFd> new_generation_pipe(VtpmDomain& v);

  // Empties the state dir of a vTPM that has no TPM yet: true if it needs provisioning.
  Result<bool> clear_unprovisioned(const std::string& domain);
  Status own_state_dir(const std::string& domain);
  void provision(VtpmDomain& v, std::function<void(Status)> done);
  Status listen(VtpmDomain& v);
  void close_listeners(VtpmDomain& v);
  void on_exit(VtpmDomain* v);
  void relaunch(VtpmDomain* v);  // a new instance on QEMU's channels
  void kill_for(VtpmDomain* v, const std::string& cause);
  void read_handover(VtpmDomain* v);
  // Watches a serving instance: heartbeats, handover, exit.
  void serve(VtpmDomain& v, UniqueFd handover);
  // The domain's fds in the journal's store (no-ops without a journal).
  void keep(const VtpmDomain& v, const char* what, int fd);
  void drop(const VtpmDomain& v, const char* what);
  UniqueFd take(const std::string& domain, const char* what);
  bool drain_handover(VtpmDomain* v);  // false: the instance closed its end
  std::string dom_dir(const std::string& domain) const { return state_dir_ + "/dom/" + domain; }
  std::string vtpm_dir(const std::string& domain) const { return state_dir_ + "/vtpm/" + domain; }
  std::string host_key() const { return state_dir_ + "/vtpm-host/key"; }
  std::string log_path(const std::string& domain) const {
    return state_dir_ + "/vtpm-" + domain + ".log";
  }

  boost::asio::io_context& io_;
  std::string bin_, state_dir_;
  std::vector<std::unique_ptr<VtpmDomain>> vtpms_;
  cgroup::Manager* cgroups_ = nullptr;
  bool stopping_ = false;
  Journal* journal_ = nullptr;
  Reaper reaper_;  // dead instances' cgroups and pid-namespace holders
  bool fault_injection_ = false;
};

}  // namespace axl::supervisor
