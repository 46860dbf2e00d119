// The domain table and the QEMU engine: creates a domain (channels, driver
// attachments, vhost-user devices, QEMU), watches QEMU through a pidfd and
// tears everything down again.  A failed create leaves nothing behind.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "common/asio.h"

#include "common/child_wait.h"
#include "common/config.h"
#include "common/control_client.h"
#include "common/fd_store.h"
#include "common/process.h"
#include "hypervisor/daemon/device_binding.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/daemon/guest_agent.h"
#include "hypervisor/daemon/qemu_cmdline.h"
#include "hypervisor/guest_device.h"

namespace axl::hv {

// A domain's life (docs/architecture.md, "Domain lifecycle").  create() walks
// preparing -> [vtpm-starting] -> attaching -> starting -> running without ever
// waiting on the loop; each step can fail, and a failed create leaves nothing
// behind.  shutoff: QEMU exited by itself with status 0 (the guest powered
// off).  crashed: QEMU was killed or exited with an error; the domain's
// on_crash decides what follows (destroy, restart, preserve).
// stopping: a destroy waits for QEMU to exit (SIGTERM, SIGKILL past 2 s).
enum class DomainState {
  kPreparing,
  kVtpmStarting,
  kAttaching,
  kStarting,
  kRunning,
  kShutoff,
  kCrashed,
  kStopping
};
const char* to_string(DomainState s);

struct DeviceBinding {
  std::string driver;
  DeviceRequest request;  // kept to attach a restarted driver (image fd included)
  BoundDevice bound;
  std::optional<ChannelGrant> standby;  // pre-attached to the driver's warm standby
};

struct Domain {
  ~Domain() {
    *alive = false;
    if (stop_wait) stop_wait->cancel();
    for (auto& t : shutdown_timers) t->cancel();
    for (auto& f : std::exchange(on_shutoff, {}))
      f(make_error("domain " + cfg.name + " was destroyed"));
  }
  config::GuestConfig cfg;
  // Read by completions that arrive later (a driver's attach answer): false
  // once the domain is gone.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  uint32_t id = 0;
  DomainState state = DomainState::kPreparing;
  std::string dir;  // state-dir/dom/NAME
  std::string accel;
  proc::Child qemu;
  // An adopted QEMU's start time (with its pid, how its monitor names it
  // once it reaped it), and how often that was looked for.
  uint64_t qemu_start = 0;
  int reap_tries = 0;
  int exit_status = 0;
  std::vector<DeviceBinding> devices;
  bool vtpm = false;  // the supervisor runs a vTPM for it ([vtpm] enabled)
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch;
  // While create() runs: the step in flight (a call to the supervisor, the
  // QEMU start check), cancelled if the domain is destroyed meanwhile, and
  // whom to tell how it ended.
  std::shared_ptr<control::PendingCall> pending_call;
  std::unique_ptr<boost::asio::steady_timer> start_check;
  std::function<void(Result<const Domain*>)> on_created;
  // While a destroy waits for QEMU to go.
  std::shared_ptr<proc::ChildWait> stop_wait;
  std::vector<std::function<void(Status)>> on_destroyed;
  std::string crash_cause;  // how its QEMU crashed (state crashed)
  // What it was created from: on_crash = "restart" creates it again.
  std::string config_toml, base_dir;
  // Devices (by index: disks, then NICs) now served by another driver than
  // their config names, after a failover (DomainEngine::fail_over).
  std::map<size_t, std::string> failed_over;
  std::string initrd;             // what QEMU boots (the base, or base + the script overlay)
  std::vector<QemuDevice> qdevs;  // collected while attaching
  std::string qemu_binary;
  std::string nvram;  // firmware = "uefi": its variable store (state-dir/nvram/NAME.fd)
  // The guest agent, from the first `axl exec` on (docs/architecture.md,
  // "Guest agent").
  std::unique_ptr<GuestAgent> agent;
  // `axl shutdown` callers waiting for the guest to power off, and their
  // deadlines.
  std::vector<std::function<void(Status)>> on_shutoff;
  std::vector<std::shared_ptr<boost::asio::steady_timer>> shutdown_timers;

  // Set while a successor of a crashed hypervisor takes the domain over
  // (DomainEngine::adopt_all): each device's kept vhost-user session, and,
  // while a device waits for its driver to be back, where attaching goes on.
  struct Adoption {
    std::vector<std::optional<vhost_user::KeptSession>> sessions;
    std::function<void()> resume_attach;  // set while waiting for a driver
    std::string waiting_for;              // that driver's name
    std::unique_ptr<boost::asio::steady_timer> deadline;
  };
  std::unique_ptr<Adoption> adopting;

  // The uid (and gid) its QEMU runs as: one of its own per domain, used by
  // nothing else on the host (kQemuIdBase + id).
  static constexpr uid_t kQemuIdBase = 0x0a000000;
  uid_t qemu_uid() const { return kQemuIdBase + id; }

  std::string console_log() const { return dir + "/console.log"; }
  std::string console_socket() const { return dir + "/console.sock"; }
  std::string agent_socket() const { return dir + "/agent.sock"; }
  std::string qmp_socket() const { return dir + "/qmp.sock"; }
};

// The engine's view of the drivers' supervision: each driver's progress
// deadline (host config io_timeout_ms) and where a quarantine is reported.
// report() runs on the engine's io_context thread and must not block.
struct DriverSupervision {
  std::function<uint32_t(const std::string& driver)> io_timeout_ms;
  std::function<uint32_t(const std::string& driver)> poll_us;  // config::DriverConfig::poll_us
  std::function<void(const std::string& driver, int pid, const std::string& cause)> report;
  // The first request a driver instance served after a rebind (pushed to the
  // supervisor, which closes its outage record with it).  Loop thread.
  std::function<void(const std::string& driver, int pid, uint64_t rebind_ns, uint64_t served_ns)>
      served;
};

// The vTPM domains live under the supervisor; the engine asks it to start
// one (`done` runs on the loop once its control socket listens, or with the
// error) and to stop it again (fire and forget: nothing waits for it).
struct VtpmControl {
  std::function<std::shared_ptr<control::PendingCall>(const std::string& domain, bool measure_log,
                                                      uint32_t command_port,
                                                      std::function<void(Status)> done)>
      start;
  std::function<void(const std::string& domain)> stop;
};

class DomainEngine {
 public:
  DomainEngine(boost::asio::io_context& io, std::string state_dir, std::string guest_dir,
               DriverRegistry& drivers, DriverSupervision supervision = {}, VtpmControl vtpm = {});
  ~DomainEngine();

  // Starts creating a domain; `done` runs on the loop once it runs or
  // failed (possibly before create returns, for a config that is refused).
  // Meanwhile the domain is listed in its current state and every other
  // request is served.
  void create(const std::string& config_toml, const std::string& base_dir,
              std::function<void(Result<const Domain*>)> done);
  // Destroys a domain, whatever its state: a create in flight is cancelled
  // (and answered so), QEMU gets SIGTERM and, past 2 s, SIGKILL, then its
  // devices and vTPM are released.  `done` runs on the loop once it is gone
  // (at once for an unknown name); the loop serves on meanwhile.
  void destroy(const std::string& name, std::function<void(Status)> done);
  // The same without waiting on the loop (shutdown: the loop runs no more).
  void destroy_all();
  // Runs a command in a running domain through its guest agent.
  void guest_exec(const std::string& name, std::string path, std::vector<std::string> args,
                  std::chrono::milliseconds timeout, std::function<void(Result<ExecResult>)> done);
  // Presses the domain's ACPI power button and answers once QEMU exited
  // because the guest powered off (false), or past `timeout`: with an error,
  // or, with `force`, once it was destroyed (true).
  void shutdown(const std::string& name, std::chrono::milliseconds timeout, bool force,
                std::function<void(Result<bool>)> done);
  const Domain* find(const std::string& name) const;
  // A driver domain (re)connected: move every device it serves to it.
  void driver_connected(DriverConnection& drv);
  // A warm standby connected: pre-attach a channel for every device its
  // driver serves.  On promotion, switch the devices to those channels.
  void standby_connected(DriverConnection& standby);
  void standby_promoted(DriverConnection& drv);
  // Over the devices a driver serves: the latest rebind and the first
  // completion after it (CLOCK_MONOTONIC ns; 0 when none).
  std::pair<uint64_t, uint64_t> service_times(const std::string& driver) const;
  // Moves every device that driver `from` serves to driver `to`, of the same
  // kind: the policy's failover once `from` used up its restart budget
  // (docs/policy.md, "Failover").  As on a restart, only the channel behind
  // each vhost-user device changes: QEMU and the guest see no reset, and
  // requests in flight are handed to `to`.  The move is recorded with the
  // domain, so a restarted hypervisor attaches to `to` too.  Returns how
  // many devices moved.
  Result<size_t> fail_over(const std::string& from, const std::string& to);
  std::vector<const Domain*> list() const;
  // Keeps what a successor needs to adopt every running domain after a
  // crash of this process (docs/architecture.md, "The hypervisor's own
  // crash"): each device's vhost-user session in `store`, the domain's
  // record (domain.rec, config.toml) in its dir.
  void keep_in(FdStore& store) { store_ = &store; }
  // Takes over the domains a crashed predecessor left: each running one
  // whose QEMU still runs (pid and start time) gets fresh channels from its
  // drivers (waiting up to kAdoptWaitMs for a driver that is not back yet)
  // and its devices resume the kept sessions, so QEMU sees no disconnect;
  // one whose QEMU died meanwhile is crashed (its on_crash applies); what
  // has no record (it was being created or destroyed) is removed, its QEMU
  // and vTPM stopped.
  void adopt_all();
  static constexpr int kAdoptWaitMs = 30000;
  // Called on the loop for every state change, whoever caused it: "running"
  // once QEMU started, "shutoff" when it exited by itself, "crashed",
  // "destroyed".
  // Must not block.
  void on_state_change(std::function<void(const std::string& name, const std::string& state)> f) {
    on_state_ = std::move(f);
  }

 private:
  void state_changed(const std::string& name, const char* state) {
    if (on_state_) on_state_(name, state);
  }
  // Where a binding is, for a completion that arrives later; resolve() is
  // null once the domain or the binding is gone.
  struct BindingRef {
    Domain* d;
    std::weak_ptr<bool> alive;
    size_t index;
    std::string driver;
  };
  BindingRef ref(Domain* d, size_t i) { return {d, d->alive, i, d->devices[i].driver}; }
  DeviceBinding* resolve(const BindingRef& r);
  // Attaches the domain's devices one after the other, then starts QEMU.
  using Requests = std::vector<std::pair<std::string, DeviceRequest>>;
  void attach_next(Domain* d, const std::shared_ptr<Requests>& reqs, size_t i);
  void create_spawn(Domain* d);
  // The end of an adoption (instead of create_spawn): QEMU is watched again.
  void adopt_finish(Domain* d);
  // A device of an adopted domain waits for its driver: attaching goes on
  // when it connects, or the adoption fails past kAdoptWaitMs.
  void adopt_wait(Domain* d, const std::string& driver, std::function<void()> resume);
  void write_domain_record(const Domain& d);
  std::unique_ptr<vhost_user::SessionKeeper> keeper_for(const Domain& d, size_t i);
  // A fresh channel from `drv` for binding `i`: the live device moves there.
  void rebind_async(Domain* d, size_t i, DriverConnection& drv);
  void preattach_standby(Domain* d, size_t i, DriverConnection& sb);
  // The steps of create(), each run from the loop.
  void create_attach(Domain* d);
  void create_check_started(Domain* d);
  void create_failed(Domain* d, Error e);
  void set_state(Domain& d, DomainState s);
  void release_devices(Domain& d);
  void on_qemu_exit(Domain* d);
  void cancel_create(Domain& d);
  void finish_destroy(const std::string& name);
  // Releases everything the domain holds and removes it from the table.
  void teardown(const std::string& name);
  void on_crash(Domain* d);
  // Answers the domain's `axl shutdown` callers.
  static void shutoff_waiters(Domain& d, const Status& s);
  // Crash restarts per domain name in the last minute (a QEMU that keeps
  // crashing is preserved after kMaxCrashRestarts).
  static constexpr size_t kMaxCrashRestarts = 5;
  std::map<std::string, std::vector<std::chrono::steady_clock::time_point>> crash_restarts_;
  void stop_vtpm(Domain& d);

  DeviceSupervision supervision_for(const std::string& driver);

  boost::asio::io_context& io_;
  std::string state_dir_, guest_dir_;
  DriverRegistry& drivers_;
  DriverSupervision supervision_;
  VtpmControl vtpm_;
  std::map<std::string, std::unique_ptr<Domain>> domains_;
  FdStore* store_ = nullptr;
  uint32_t next_id_ = 1;
  std::function<void(const std::string&, const std::string&)> on_state_;
};

}  // namespace axl::hv
