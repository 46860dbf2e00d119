#include "supervisor/driver_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"
#include "supervisor/tap.h"

namespace axl::supervisor {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr int kHealthFd = 4;  // where the driver finds its end of the health channel
constexpr int kHvFd = 5;      // sandboxed: its connection to the hypervisor

const char* to_string(DriverState s) {
  switch (s) {
    case DriverState::kStarting:
      return "starting";
    case DriverState::kRunning:
      return "running";
    case DriverState::kRestarting:
      return "restarting";
    case DriverState::kFailed:
      return "failed";
    case DriverState::kStopped:
      return "stopped";
  }
  return "?";
}

DriverManager::DriverManager(asio::io_context& io, std::string bin, std::string hv_socket,
                             std::string log_dir, ServiceTimesFn service_times, Events events,
                             cgroup::Manager* cgroups)
    : io_(io),
      bin_(std::move(bin)),
      hv_socket_(std::move(hv_socket)),
      log_dir_(std::move(log_dir)),
      service_times_(std::move(service_times)),
      cgroups_(cgroups),
      events_(std::move(events)),
      reaper_(io) {}

DriverManager::~DriverManager() { stop_all(); }

DriverDomain* DriverManager::find(const std::string& name) {
  for (auto& d : drivers_)
    if (d->cfg.name == name) return d.get();
  return nullptr;
}

namespace {
const char* role_name(bool standby, bool spare) {
  return standby ? "standby" : spare ? "spare" : "active";
}
}  // namespace

Status DriverManager::start_all(const config::HostConfig& host) {
  std::vector<InstanceRecord> records;
  if (journal_) records = journal_->load();
  for (const auto& dc : host.drivers) {
    auto d = std::make_unique<DriverDomain>();
    d->cfg = dc;
    d->budget = RestartBudget(dc.restart_max, std::chrono::seconds(dc.restart_window_s));
    if (dc.kind == config::DriverKind::kNet) {
      // A predecessor's TAP, if it kept one: its drivers still hold it, and
      // a single-queue TAP cannot be attached twice.
      if (journal_) d->tap = journal_->store().take("tap." + dc.name);
      if (!d->tap) {
        auto tap = open_tap(dc.tap);
        if (!tap) return make_error("driver '" + dc.name + "': " + tap.error().message);
        d->tap = std::move(tap).value();
      }
      if (journal_)
        if (auto s = journal_->store().put("tap." + dc.name, d->tap.get()); !s)
          AXL_WARN("driver %s: %s", dc.name.c_str(), s.error().message.c_str());
    }
    std::vector<InstanceRecord> mine;
    for (auto it = records.begin(); it != records.end();) {
      if (it->kind == "driver" && it->name == dc.name) {
        mine.push_back(*it);
        it = records.erase(it);
      } else {
        ++it;
      }
    }
    DriverDomain* raw = d.get();
    drivers_.push_back(std::move(d));
    const bool died = adopt(*raw, mine);
    if (raw->active) {
      watch_active(*raw);
      if (raw->cfg.standby && !raw->standby) {
        if (auto s = spawn_standby(*raw); !s) return s;
      }
      if (!raw->cfg.standby) schedule_spare(*raw, 50ms);
    } else if (died) {
      failed(raw, "exited while no supervisor ran", monotonic_ns());
    } else if (auto s = spawn(*raw); !s) {
      return s;
    }
  }
  // Records of drivers the config no longer names: nothing to adopt them into.
  for (const auto& r : records) {
    if (r.kind != "driver") continue;
    AXL_WARN("driver %s (pid %d) is not in the host config: stopping it", r.name.c_str(), r.pid);
    if (auto i = adopt_instance(r); i) (*i)->stop(500ms);
  }
  return {};
}

Result<std::unique_ptr<Instance>> DriverManager::adopt_instance(const InstanceRecord& r) {
  return supervisor::adopt_instance(io_, *journal_, cgroups_, reaper_, r);
}

bool DriverManager::adopt(DriverDomain& d, const std::vector<InstanceRecord>& records) {
  bool died = false;
  for (const auto& r : records) {
    d.instance_seq = std::max(d.instance_seq, r.seq);
    auto inst = adopt_instance(r);
    if (!inst) {
      AXL_WARN("driver %s: %s instance pid %d not adopted: %s", d.cfg.name.c_str(), r.role.c_str(),
               r.pid, inst.error().message.c_str());
      died |= r.role == "active";
      continue;
    }
    std::unique_ptr<Instance>* slot = r.role == "active"                     ? &d.active
                                      : r.role == "standby" && d.cfg.standby ? &d.standby
                                      : r.role == "spare" && !d.cfg.standby  ? &d.spare
                                                                             : nullptr;
    if (!slot || *slot) {
      AXL_WARN("driver %s: %s instance pid %d has no place now: stopping it", d.cfg.name.c_str(),
               r.role.c_str(), r.pid);
      (*inst)->stop(500ms);
      continue;
    }
    *slot = std::move(inst).value();
    adopted_any_ = true;
    AXL_INFO("driver %s: adopted its %s instance, pid %d", d.cfg.name.c_str(), r.role.c_str(),
             r.pid);
  }
  DriverDomain* raw = &d;
  if (d.standby) d.standby->watch_exit([this, raw] { standby_exited(raw); });
  if (d.spare) d.spare->watch_exit([this, raw] { spare_exited(raw); });
  return died;
}

Result<std::unique_ptr<Instance>> DriverManager::launch(DriverDomain& d, Role role) {
  std::vector<UniqueFd> join;
  std::unique_ptr<cgroup::Group> group;
  if (cgroups_) {
    cgroup::Limits lim{uint64_t(d.cfg.memory_max_mib) << 20, d.cfg.pids_max, d.cfg.cpu_percent};
    auto g = cgroups_->create(d.cfg.name + "-" + std::to_string(++d.instance_seq), lim);
    if (!g) return make_error("driver '" + d.cfg.name + "': " + g.error().message);
    auto fds = (*g)->open_procs_files();
    if (!fds) return make_error("driver '" + d.cfg.name + "': " + fds.error().message);
    join = std::move(fds).value();
    group = std::move(g).value();
  }
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0)
    return make_error(std::string("socketpair: ") + strerror(errno));
  UniqueFd ours(sp[0]), theirs(sp[1]);
  proc::SpawnOptions so;
  so.argv = {bin_,
             "--name",
             d.cfg.name,
             "--kind",
             config::to_string(d.cfg.kind),
             "--hv-socket",
             hv_socket_,
             "--supervisor-fd",
             std::to_string(kHealthFd)};
  so.fds.emplace_back(theirs.get(), kHealthFd);
  if (role == Role::kStandby) so.argv.push_back("--standby");
  if (role == Role::kSpare) so.argv.push_back("--parked");
  if (d.cfg.fault_injection) so.argv.push_back("--fault-injection");
  if (d.cfg.poll_us) {
    so.argv.push_back("--poll-us");
    so.argv.push_back(std::to_string(d.cfg.poll_us));
  }
  if (!d.cfg.fault_at_start.empty())
    so.argv.insert(so.argv.end(), {"--fault-at-start", d.cfg.fault_at_start});
  if (d.tap) {
    so.argv.insert(so.argv.end(), {"--tap-fd", "3"});
    so.fds.emplace_back(d.tap.get(), 3);
  }
  so.log_path = log_dir_ + "/driver-" + d.cfg.name + ".log";
  if (d.cfg.kind == config::DriverKind::kNet) so.file_size_limit = proc::kConfinedLogLimit;
  for (auto& f : join) so.join_cgroup_fds.push_back(f.get());
  UniqueFd hv_conn;
  if (d.cfg.sandbox) {
    // A confined driver reaches no path: it gets its hypervisor connection
    // from us, already made (a spare once it is started), and confines
    // itself once it runs.
    if (role != Role::kSpare) {
      auto conn = wire::connect(hv_socket_);
      if (!conn) return make_error("driver '" + d.cfg.name + "': " + conn.error().message);
      hv_conn = std::move(conn).value();
      so.fds.emplace_back(hv_conn.get(), kHvFd);
      so.argv.insert(so.argv.end(), {"--hv-fd", std::to_string(kHvFd)});
      ucred peer{};
      socklen_t len = sizeof peer;
      if (::getsockopt(hv_conn.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0)
        hv_pid_ = peer.pid;
    }
    so.argv.push_back("--sandbox");
    // Only the escape-attempt hooks need to know whom to attack.
    if (d.cfg.fault_injection && hv_pid_ > 0)
      so.argv.insert(so.argv.end(), {"--hv-pid", std::to_string(hv_pid_)});
    proc::SandboxSpec sandbox;
    sandbox.host_uid = kSandboxUid;
    sandbox.host_gid = kSandboxGid;
    sandbox.host_pid_flag = "--host-pid";
    so.sandbox = std::move(sandbox);
  }
  auto c = proc::spawn(so);
  if (!c) return make_error("driver '" + d.cfg.name + "': " + c.error().message);
  auto inst =
      std::make_unique<Instance>(io_, std::move(c).value(), std::move(ours), std::move(group));
  if (journal_) {
    InstanceRecord r;
    r.kind = "driver";
    r.name = d.cfg.name;
    r.role = role_name(role == Role::kStandby, role == Role::kSpare);
    r.seq = d.instance_seq;
    if (auto s = inst->journal(journal_, std::move(r)); !s)
      AXL_WARN("driver %s: pid %d will not outlive this supervisor: %s", d.cfg.name.c_str(),
               inst->pid(), s.error().message.c_str());
  }
  return inst;
}

Status DriverManager::spawn(DriverDomain& d) {
  uint64_t started_ns = 0;
  const bool from_spare = d.spare && start_spare(d, &started_ns);
  if (!from_spare) {
    auto c = launch(d, Role::kActive);
    if (!c) return c.error();
    d.active = std::move(c).value();
  }
  watch_active(d, started_ns);
  AXL_INFO("driver %s (%s) started, pid %d%s", d.cfg.name.c_str(), config::to_string(d.cfg.kind),
           d.pid(), from_spare ? " (its parked spare)" : "");
  if (d.cfg.standby && !d.standby) return spawn_standby(d);
  if (!d.cfg.standby) schedule_spare(d, 50ms);
  return {};
}

void DriverManager::schedule_spare(DriverDomain& d, std::chrono::milliseconds delay) {
  if (d.spare || stopping_) return;
  DriverDomain* raw = &d;
  d.spare_timer = std::make_unique<asio::steady_timer>(io_, delay);
  d.spare_timer->async_wait([this, raw](const boost::system::error_code& ec) {
    if (!ec && !stopping_ && !raw->spare) spawn_spare(*raw);
  });
}

void DriverManager::spawn_spare(DriverDomain& d) {
  auto c = launch(d, Role::kSpare);
  if (!c) {
    AXL_WARN("driver %s: no spare: %s", d.cfg.name.c_str(), c.error().message.c_str());
    return;
  }
  d.spare = std::move(c).value();
  DriverDomain* raw = &d;
  d.spare->watch_exit([this, raw] { spare_exited(raw); });
  AXL_INFO("driver %s spare started, pid %d (parked)", d.cfg.name.c_str(), d.spare->pid());
}

void DriverManager::spare_exited(DriverDomain* d) {
  if (stopping_) return;
  const int pid = d->spare->pid();
  const int st = d->spare->reap(reaper_, nullptr);
  d->spare.reset();
  AXL_WARN("driver %s: parked spare pid %d exited (%s)", d->cfg.name.c_str(), pid,
           proc::describe_status(st).c_str());
  // A spare that cannot even park (a broken binary, say) is not made
  // forever: restarts then simply start a fresh process.
  if (++d->spare_failures < 5) schedule_spare(*d, 100ms);
}

// Makes the parked spare the active instance: it gets `start` (with its
// hypervisor connection when confined) and says hello; no process start.
bool DriverManager::start_spare(DriverDomain& d, uint64_t* started_ns) {
  UniqueFd hv;
  std::vector<int> fds;
  if (d.cfg.sandbox) {
    auto c = wire::connect(hv_socket_);
    if (!c) {
      AXL_WARN("driver %s: spare not started: %s", d.cfg.name.c_str(), c.error().message.c_str());
      discard_spare(d);
      return false;
    }
    hv = std::move(c).value();
    fds.push_back(hv.get());
  }
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setStart();
  // Taken before the message goes: the hypervisor may rebind the devices to
  // the started spare before send() even returns here, and an outage record
  // closes only on a rebind no older than its restart.
  *started_ns = monotonic_ns();
  if (auto s = wire::send(d.spare->health_fd(), mb, fds); !s) {
    AXL_WARN("driver %s: spare not started: %s", d.cfg.name.c_str(), s.error().message.c_str());
    discard_spare(d);
    return false;
  }
  d.spare->unwatch();
  d.spare_failures = 0;
  d.active = std::move(d.spare);
  d.active->set_role("active");
  return true;
}

void DriverManager::discard_spare(DriverDomain& d) {
  if (d.spare) d.spare->stop(500ms);
  d.spare.reset();
}

// Starts health and exit watching of the active instance (fresh or promoted).
void DriverManager::watch_active(DriverDomain& d, uint64_t started_ns) {
  d.state = DriverState::kRunning;
  d.started_ns = started_ns ? started_ns : monotonic_ns();
  d.pending_cause.clear();
  d.pending_fail_ns = 0;
  DriverDomain* raw = &d;
  d.active->unwatch();
  d.active->watch_exit([this, raw] { on_exit(raw); });
  d.active->monitor(std::chrono::milliseconds(d.cfg.heartbeat_ms), d.cfg.heartbeat_misses,
                    [this, raw](const std::string& cause, uint64_t fail_ns) {
                      // A fault injected on request began when it was asked for.
                      kill_for(raw, cause, raw->pending_fail_ns ? raw->pending_fail_ns : fail_ns);
                    });
}

Status DriverManager::spawn_standby(DriverDomain& d) {
  auto c = launch(d, Role::kStandby);
  if (!c) return c.error();
  d.standby = std::move(c).value();
  DriverDomain* raw = &d;
  d.standby->watch_exit([this, raw] { standby_exited(raw); });
  AXL_INFO("driver %s standby started, pid %d", d.cfg.name.c_str(), d.standby->pid());
  return {};
}

// A standby that dies before it is needed is simply replaced.
void DriverManager::standby_exited(DriverDomain* d) {
  if (stopping_) return;
  (void)d->standby->reap(reaper_, nullptr);
  d->standby.reset();
  AXL_WARN("driver %s: standby exited; starting another", d->cfg.name.c_str());
  auto t = std::make_shared<asio::steady_timer>(io_, 100ms);
  t->async_wait([this, d, t](const boost::system::error_code& e) {
    if (!e && !stopping_ && !d->standby) (void)spawn_standby(*d);
  });
}

// A kill the supervisor decides itself (a hang, a quarantine, a cgroup
// breach, an operator restart).  With a warm standby the hypervisor is asked
// to fence the old instance's channels and promote the standby first, so the
// guest's outage is that round trip, not the process's death; the old one is
// stopped before (SIGSTOP, confirmed by the kernel), so no write of its can
// land after the standby replays what was in flight, and killed after.
void DriverManager::kill_for(DriverDomain* d, const std::string& cause, uint64_t fail_ns) {
  if (!d->active) return;
  d->pending_cause = cause;
  d->pending_fail_ns = fail_ns;
  if (d->standby && promote_ && stop_and_confirm(d)) {
    AXL_WARN("driver %s: %s; fencing it and promoting its standby", d->cfg.name.c_str(),
             cause.c_str());
    Instance* stopped = d->active.get();
    const int pid = stopped->pid();
    promote_(d->cfg.name, [d, stopped, pid](const Status& s) {
      if (!s)
        AXL_WARN("driver %s: standby not promoted first: %s", d->cfg.name.c_str(),
                 s.error().message.c_str());
      // Still the instance we stopped (its pidfd keeps the pid from being reused).
      if (d->active.get() == stopped && d->pid() == pid) (void)stopped->signal(SIGKILL);
    });
    return;
  }
  AXL_WARN("driver %s: %s; killing it", d->cfg.name.c_str(), cause.c_str());
  (void)d->active->signal(SIGKILL);
}

bool DriverManager::stop_and_confirm(DriverDomain* d) {
  if (!d->active->signal(SIGSTOP)) return false;
  // Group stop reaches each thread when it next leaves the kernel: a
  // write in progress finishes first.  The kernel reports the whole group
  // stopped to us, its parent (waitid WSTOPPED on the pidfd); microseconds
  // as a rule.  Give up (and kill without fencing) past 20 ms.
  const auto deadline = std::chrono::steady_clock::now() + 20ms;
  const int pidfd = d->active->child().pidfd.get();
  for (;;) {
    siginfo_t si{};
    if (::waitid(P_PIDFD, id_t(pidfd), &si, WSTOPPED | WNOHANG | WNOWAIT) != 0) {
      AXL_WARN("driver %s: cannot learn whether pid %d stopped: %s", d->cfg.name.c_str(), d->pid(),
               strerror(errno));
      return false;
    }
    if (si.si_pid != 0 && si.si_code == CLD_STOPPED) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20us);
  }
}

Status DriverManager::kill_with_cause(const std::string& name, int pid, const std::string& cause) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (d->state != DriverState::kRunning || d->pid() <= 0 || d->pid() != pid) {
    AXL_INFO("driver %s: report about pid %d ignored (active instance: %d): %s", name.c_str(), pid,
             d->pid(), cause.c_str());
    return {};
  }
  if (!d->pending_cause.empty()) return {};  // already being killed
  kill_for(d, cause, monotonic_ns());
  return {};
}

Status DriverManager::kill(const std::string& name, const std::string& signal) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (d->state != DriverState::kRunning || !d->active)
    return make_error("driver '" + name + "' is " + to_string(d->state) + ", not running");
  int sig = signal == "KILL"   ? SIGKILL
            : signal == "STOP" ? SIGSTOP
            : signal == "SEGV" ? SIGSEGV
            : signal == "ABRT" ? SIGABRT
                               : 0;
  if (!sig) return make_error("unknown signal '" + signal + "' (want KILL, STOP, SEGV or ABRT)");
  // The outage is measured from now, whoever notices it.
  d->pending_fail_ns = monotonic_ns();
  if (auto s = d->active->signal(sig); !s)
    return make_error("cannot signal driver '" + name + "': " + s.error().message);
  AXL_INFO("driver %s: sent SIG%s on request", name.c_str(), signal.c_str());
  return {};
}

Status DriverManager::inject(const std::string& name, const std::string& fault,
                             const FaultTrigger& trigger) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (!d->cfg.fault_injection)
    return make_error("fault injection is disabled for driver '" + name +
                      "' (set fault_injection = true in the host config)");
  if (!config::is_fault_name(fault)) return make_error("unknown fault '" + fault + "'");
  if (auto s = trigger.check(); !s) return s;
  if (d->state != DriverState::kRunning || !d->active || !d->active->monitor())
    return make_error("driver '" + name + "' is not running");
  capnp::MallocMessageBuilder mb;
  auto hb = mb.initRoot<schema::Heartbeat>();
  hb.setFault(fault);
  auto t = hb.initTrigger();
  t.setAfter(trigger.after);
  t.setProbability(trigger.probability);
  t.setSeed(trigger.seed);
  // The outage is measured from now for a fault that fires at once; a
  // triggered one is dated when the supervisor notices it.
  if (trigger.immediate()) d->pending_fail_ns = monotonic_ns();
  return wire::send(d->active->health_fd(), mb);
}

Status DriverManager::restart_now(const std::string& name) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (d->state == DriverState::kFailed) {
    // An operator restart gives a failed driver a fresh budget.
    d->budget.clear();
    d->pending_cause = "restart requested";
    d->pending_fail_ns = monotonic_ns();
    restart(d);
    return {};
  }
  if (d->state != DriverState::kRunning) return make_error("driver '" + name + "' is restarting");
  kill_for(d, "restart requested", monotonic_ns());
  return {};
}

void DriverManager::on_exit(DriverDomain* d) {
  const uint64_t detect = monotonic_ns();
  // Its pid namespace and cgroup go too, without a wait on the way to the
  // restart.
  const std::string cause = d->end_active(reaper_, &d->exit_status);
  if (stopping_) {
    d->state = DriverState::kStopped;
    return;
  }
  failed(d, cause.empty() ? "crash: " + proc::describe_status(d->exit_status) : cause, detect);
}

void DriverManager::failed(DriverDomain* d, const std::string& cause, uint64_t detect) {
  Outage o;
  o.cause = cause;
  o.fail_ns = d->pending_fail_ns ? d->pending_fail_ns : detect;
  o.detect_ns = detect;
  o.at_unix_s = uint64_t(::time(nullptr));
  d->last_failure = o.cause;
  d->outages.push_back(o);
  AXL_WARN("driver %s failed: %s (detected after %.3f ms)", d->cfg.name.c_str(), o.cause.c_str(),
           double(o.detect_ns - o.fail_ns) / 1e6);
  if (!d->budget.allows(std::chrono::steady_clock::now())) {
    d->state = DriverState::kFailed;
    AXL_ERROR("driver %s failed for good: %u restarts within %u s", d->cfg.name.c_str(),
              d->cfg.restart_max, d->cfg.restart_window_s);
    if (events_.failed) events_.failed(*d);
    return;
  }
  if (d->standby) {
    // The hypervisor has already switched the devices to the standby (it saw
    // the connection drop); adopt it as the active and start a new standby.
    d->budget.record(std::chrono::steady_clock::now());
    ++d->restarts;
    d->active = std::move(d->standby);
    d->active->set_role("active");
    watch_active(*d);
    d->outages.back().restart_ns = detect;
    d->outages.back().promoted = true;
    AXL_INFO("driver %s: standby pid %d is now active", d->cfg.name.c_str(), d->pid());
    if (events_.restarted) events_.restarted(*d);
    await_served(d);
    if (auto s = spawn_standby(*d); !s)
      AXL_WARN("driver %s: no new standby: %s", d->cfg.name.c_str(), s.error().message.c_str());
    return;
  }
  d->state = DriverState::kRestarting;
  // Back-to-back failures back off exponentially from backoff_ms.
  const uint32_t delay = d->budget.backoff_ms(d->cfg.backoff_ms);
  if (delay == 0) return restart(d);
  d->restart_timer = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(delay));
  d->restart_timer->async_wait([this, d](const boost::system::error_code& ec) {
    if (!ec) restart(d);
  });
}

void DriverManager::restart(DriverDomain* d) {
  d->budget.record(std::chrono::steady_clock::now());
  ++d->restarts;
  if (auto s = spawn(*d); !s) {
    AXL_ERROR("driver %s: restart failed: %s", d->cfg.name.c_str(), s.error().message.c_str());
    d->state = DriverState::kFailed;
    if (events_.failed) events_.failed(*d);
    return;
  }
  if (!d->outages.empty()) d->outages.back().restart_ns = d->started_ns;
  if (events_.restarted) events_.restarted(*d);
  await_served(d);
}

// The hypervisor timestamps the first completion after it rebinds the
// driver's devices and reports it (driverServed); that closes the outage
// record.  A report can come before the record exists (a standby the
// hypervisor promoted before the pidfd woke us), so the latest one is kept.
// Polling the hypervisor's service times remains only as a slow fallback
// for a report that never came.
void DriverManager::await_served(DriverDomain* d) {
  if (close_outage(d, d->reported_rebound_ns, d->reported_served_ns, d->reported_died_ns,
                   "reported"))
    return;
  poll_served(d, 20);
}

Status DriverManager::served(const std::string& name, int pid, uint64_t rebound, uint64_t served,
                             uint64_t died) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (rebound <= d->reported_rebound_ns) return {};  // an older rebind's, or a later device's
  d->reported_rebound_ns = rebound;
  d->reported_served_ns = served;
  d->reported_died_ns = died;
  close_outage(d, rebound, served, died, "reported");
  return {};
}

bool DriverManager::close_outage(DriverDomain* d, uint64_t rebound, uint64_t served, uint64_t died,
                                 const char* how) {
  if (d->outages.empty() || d->outages.back().served_ns) return false;
  Outage& o = d->outages.back();
  // A rebind newer than the one that closed the previous record belongs to
  // this outage; a cold restart's rebind also comes after its respawn.
  const bool fresh = rebound > d->last_rebound_ns && (o.promoted || rebound >= o.restart_ns);
  if (!served || !fresh || served < rebound) return false;
  o.served_ns = served;
  const uint64_t previous = d->last_rebound_ns;
  d->last_rebound_ns = rebound;
  // The channel lock's report of this death comes after the rebind that
  // closed the previous record (the hypervisor repeats its latest one) and
  // no later than the rebind it caused. It, or else the rebind, may be the
  // earliest witness of a crash the supervisor only saw later (its pidfd):
  // the record then starts there, and its outage is a lower bound.
  if (died > previous && died <= rebound) {
    if (died < o.fail_ns) o.fail_ns = died;
    o.hv_detect_ns = died;
  } else if (rebound < o.fail_ns) {
    o.fail_ns = rebound;
  }
  // A standby the hypervisor promoted on its own (the channel lock or the
  // socket told it first) took over at the rebind, not when we adopted it.
  if (o.promoted && rebound < o.restart_ns) o.restart_ns = rebound;
  AXL_INFO("driver %s: outage %.3f ms (%s; %s by the hypervisor)", d->cfg.name.c_str(),
           double(o.served_ns - o.fail_ns) / 1e6, o.cause.c_str(), how);
  return true;
}

void DriverManager::poll_served(DriverDomain* d, int tries_left) {
  if (d->outages.empty() || d->outages.back().served_ns || tries_left <= 0 || !service_times_)
    return;
  service_times_(d->cfg.name, [this, d, tries_left](uint64_t rebound, uint64_t served) {
    if (stopping_ || close_outage(d, rebound, served, 0, "polled")) return;
    if (tries_left == 1) d->last_rebound_ns = std::max(d->last_rebound_ns, rebound);  // giving up
    auto t = std::make_shared<asio::steady_timer>(io_, 500ms);
    t->async_wait([this, d, t, tries_left](const boost::system::error_code& ec) {
      if (!ec && !stopping_) poll_served(d, tries_left - 1);
    });
  });
}

void DriverManager::stop_all() {
  stopping_ = true;
  for (auto& d : drivers_) {
    if (d->restart_timer) d->restart_timer->cancel();
    if (d->standby) d->standby->stop(2000ms);
    d->standby.reset();
    if (d->spare_timer) d->spare_timer->cancel();
    discard_spare(*d);
    if (d->active) d->exit_status = d->active->stop(2000ms);
    d->active.reset();
    if (journal_ && d->tap) journal_->store().remove("tap." + d->cfg.name);
    d->state = DriverState::kStopped;
  }
  drivers_.clear();
  reaper_.finish();
}

}  // namespace axl::supervisor
