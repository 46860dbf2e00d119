// Spawns, watches and restarts the driver domains a host config names.
//
// Health: a crash is seen at once through the child's pidfd; a hang through
// heartbeats on a socketpair (common/schema/supervisor.capnp) that the
// driver answers from its event loop.  A failed driver is restarted within
// its restart budget; the hypervisor moves its devices to the new instance.
// Each failure leaves an Outage record: cause, detection latency, and the
// time until the new instance served its first request (read from the
// hypervisor, which sees the completions).
#pragma once
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/config.h"
#include "common/fault_trigger.h"
#include "common/process.h"
#include "supervisor/cgroup/cgroup.h"
#include "supervisor/health_monitor.h"
#include "supervisor/instance.h"

namespace axl::supervisor {

// Lifecycle; transitions live in DriverManager only.
enum class DriverState { kStarting, kRunning, kRestarting, kFailed, kStopped };
const char* to_string(DriverState s);

// Root inside a confined domain's user namespace (driver or vTPM) is nobody
// outside it.
inline constexpr uid_t kSandboxUid = 65534;
inline constexpr gid_t kSandboxGid = 65534;

struct Outage {
  std::string cause;
  uint64_t fail_ns = 0, detect_ns = 0, restart_ns = 0, served_ns = 0;  // CLOCK_MONOTONIC
  uint64_t at_unix_s = 0;
  // A warm standby is promoted by the hypervisor when it sees the active's
  // connection drop, which may come before the supervisor's pidfd wakes up.
  bool promoted = false;
  // When the hypervisor learned of the death from the channel lock (0:
  // unknown, or the supervisor killed it first).
  uint64_t hv_detect_ns = 0;
};

// A driver domain: its active instance and, by its config, a warm standby
// or a parked spare, all of one Instance type (supervisor/instance.h).
struct DriverDomain : Supervised {
  config::DriverConfig cfg;
  DriverState state = DriverState::kStarting;
  int exit_status = 0;  // the last instance's
  UniqueFd tap;         // net: held here for the driver's whole life and its successors
  std::unique_ptr<boost::asio::steady_timer> restart_timer;
  std::vector<Outage> outages;
  // The hypervisor's rebind time that closed the last outage record.
  uint64_t last_rebound_ns = 0;
  // The hypervisor's latest report.
  uint64_t reported_rebound_ns = 0, reported_served_ns = 0, reported_died_ns = 0;
  // Warm standby (standby = true): spawned and connected, idle until the
  // hypervisor promotes it the moment the active instance's connection drops.
  std::unique_ptr<Instance> standby;
  // Without a standby: a spare instance, spawned and confined ahead of need
  // and parked (driverdom --parked) until a restart makes it the active one,
  // so a cold restart pays no process start on the guest's outage.
  std::unique_ptr<Instance> spare;
  std::unique_ptr<boost::asio::steady_timer> spare_timer;
  uint32_t spare_failures = 0;  // spares in a row that died parked

  int pid() const { return active ? active->pid() : -1; }
};

struct Events {
  std::function<void(const DriverDomain&)> failed;     // restart budget exhausted
  std::function<void(const DriverDomain&)> restarted;  // a new instance was spawned
};

// The hypervisor's view of a driver: when its devices were last rebound and
// first served after that (0: unknown / not yet).
// Asks the hypervisor, without waiting, for a driver's latest rebind and the
// first completion after it (CLOCK_MONOTONIC ns; 0 when none or unknown).
using ServiceTimesFn = std::function<void(const std::string& driver,
                                          std::function<void(uint64_t rebound, uint64_t served)>)>;
// Asks the hypervisor, without waiting, to fence a driver's active instance
// and promote its warm standby now (control.capnp promoteStandby).
using PromoteFn = std::function<void(const std::string& driver, std::function<void(Status)> done)>;

class DriverManager {
 public:
  // `cgroups` may be null: drivers then run without resource limits.
  DriverManager(boost::asio::io_context& io, std::string driverdom_bin, std::string hv_socket,
                std::string log_dir, ServiceTimesFn service_times, Events events,
                cgroup::Manager* cgroups);
  ~DriverManager();
  // Kills the supervisor decides itself then fence first (see kill_for).
  void set_promote(PromoteFn f) { promote_ = std::move(f); }
  // Persists every instance there (supervisor/journal.h); start_all then
  // adopts the instances a predecessor recorded first.
  void set_journal(Journal* j) { journal_ = j; }
  // Starts every driver of `host`: with a journal, adopts the instances of
  // it that a predecessor left running (same pid, start time and cgroup, its
  // health channel from the fd store), restarts the ones that died meanwhile
  // (cause "exited while no supervisor ran") and stops the ones it cannot
  // adopt or that `host` no longer names.
  Status start_all(const config::HostConfig& host);
  // Whether start_all adopted any running instance.
  bool adopted_any() const { return adopted_any_; }
  void stop_all();
  const std::vector<std::unique_ptr<DriverDomain>>& drivers() const { return drivers_; }
  DriverDomain* find(const std::string& name);

  // Sends `signal` (KILL, STOP, SEGV, ABRT) to a driver, recording when, so
  // the outage it causes is measured from that moment.
  Status kill(const std::string& name, const std::string& signal);
  // Runs a fault hook in a driver started with fault_injection = true.
  // `trigger` says when it fires (at once, or at a request the driver answers).
  Status inject(const std::string& name, const std::string& fault,
                const FaultTrigger& trigger = {});
  // Kills and restarts a driver now (cause "restart requested").
  Status restart_now(const std::string& name);
  // Kills instance `pid` of driver `name` with `cause` (the outage record
  // and last failure carry it); the normal restart path replaces it.  The
  // hypervisor asks this when it quarantines a channel.  A report about an
  // instance that is no longer the active one, or one already being killed,
  // changes nothing and is not an error.
  Status kill_with_cause(const std::string& name, int pid, const std::string& cause);
  // The hypervisor reports the first request an instance served after its
  // devices moved to it (control.capnp driverServed): closes the outage.
  // `died_ns`: when the hypervisor learned that the instance before died
  // (its channel lock; 0: not that way), the outage's hypervisor detection.
  Status served(const std::string& name, int pid, uint64_t rebound_ns, uint64_t served_ns,
                uint64_t died_ns = 0);

 private:
  enum class Role { kActive, kStandby, kSpare };
  Status spawn(DriverDomain& d);
  Status spawn_standby(DriverDomain& d);
  Result<std::unique_ptr<Instance>> launch(DriverDomain& d, Role role);
  // The spare: made a moment after the active instance started; started
  // (true) or, if that fails, discarded (false).
  void schedule_spare(DriverDomain& d, std::chrono::milliseconds delay);
  void spawn_spare(DriverDomain& d);
  void spare_exited(DriverDomain* d);
  void standby_exited(DriverDomain* d);
  bool start_spare(DriverDomain& d, uint64_t* started_ns);
  void discard_spare(DriverDomain& d);
  // started_ns: when the instance became the active one (0: now).
  void watch_active(DriverDomain& d, uint64_t started_ns = 0);
  void on_exit(DriverDomain* d);
  // After the active instance ended (null now): a promotion or a restart.
  void failed(DriverDomain* d, const std::string& cause, uint64_t detect);
  Result<std::unique_ptr<Instance>> adopt_instance(const InstanceRecord& r);
  // Adopts d's recorded instances; true if its active one died meanwhile.
  bool adopt(DriverDomain& d, const std::vector<InstanceRecord>& records);
  void restart(DriverDomain* d);
  void kill_for(DriverDomain* d, const std::string& cause, uint64_t fail_ns);
  void poll_served(DriverDomain* d, int tries_left);
  void await_served(DriverDomain* d);
  bool close_outage(DriverDomain* d, uint64_t rebound, uint64_t served, uint64_t died,
                    const char* how);
  // SIGSTOP, and true once every thread of `pid` is stopped (bounded wait).
  bool stop_and_confirm(DriverDomain* d);

  boost::asio::io_context& io_;
  std::string bin_, hv_socket_, log_dir_;
  ServiceTimesFn service_times_;
  PromoteFn promote_;
  cgroup::Manager* cgroups_;
  Journal* journal_ = nullptr;
  Events events_;
  std::vector<std::unique_ptr<DriverDomain>> drivers_;
  bool stopping_ = false;
  bool adopted_any_ = false;
  int hv_pid_ = 0;  // the hypervisor, as its socket's peer (escape-attempt hooks only)
  Reaper reaper_;   // dead instances' cgroups and pid-namespace holders
};

}  // namespace axl::supervisor
