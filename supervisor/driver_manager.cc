#include "supervisor/driver_manager.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>
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

Status DriverManager::start_all(const config::HostConfig& host) {
  for (const auto& dc : host.drivers) {
    auto d = std::make_unique<DriverDomain>();
    d->cfg = dc;
    d->budget = RestartBudget(dc.restart_max, std::chrono::seconds(dc.restart_window_s));
    if (dc.kind == config::DriverKind::kNet) {
      auto tap = open_tap(dc.tap);
      if (!tap) return make_error("driver '" + dc.name + "': " + tap.error().message);
      d->tap = std::move(tap).value();
    }
    if (auto s = spawn(*d); !s) return s;
    drivers_.push_back(std::move(d));
  }
  return {};
}

Result<proc::Child> DriverManager::launch(DriverDomain& d, Role role, UniqueFd* health,
                                          std::unique_ptr<cgroup::Group>* group) {
  std::vector<UniqueFd> join;
  if (cgroups_) {
    cgroup::Limits lim{uint64_t(d.cfg.memory_max_mib) << 20, d.cfg.pids_max, d.cfg.cpu_percent};
    auto g = cgroups_->create(d.cfg.name + "-" + std::to_string(++d.instance_seq), lim);
    if (!g) return make_error("driver '" + d.cfg.name + "': " + g.error().message);
    auto fds = (*g)->open_procs_files();
    if (!fds) return make_error("driver '" + d.cfg.name + "': " + fds.error().message);
    join = std::move(fds).value();
    *group = std::move(g).value();
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
  if (!d.cfg.fault_at_start.empty())
    so.argv.insert(so.argv.end(), {"--fault-at-start", d.cfg.fault_at_start});
  if (d.tap) {
    so.argv.insert(so.argv.end(), {"--tap-fd", "3"});
    so.fds.emplace_back(d.tap.get(), 3);
  }
  so.log_path = log_dir_ + "/driver-" + d.cfg.name + ".log";
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
  *health = std::move(ours);
  return c;
}

Status DriverManager::spawn(DriverDomain& d) {
  uint64_t started_ns = 0;
  const bool from_spare = d.spare.pid > 0 && start_spare(d, &started_ns);
  if (!from_spare) {
    auto c = launch(d, Role::kActive, &d.health, &d.group);
    if (!c) return c.error();
    d.child = std::move(c).value();
  }
  watch_active(d, started_ns);
  AXL_INFO("driver %s (%s) started, pid %d%s", d.cfg.name.c_str(), config::to_string(d.cfg.kind),
           d.child.pid, from_spare ? " (its parked spare)" : "");
  if (d.cfg.standby && d.standby.pid <= 0) return spawn_standby(d);
  if (!d.cfg.standby) schedule_spare(d, 50ms);
  return {};
}

void DriverManager::schedule_spare(DriverDomain& d, std::chrono::milliseconds delay) {
  if (d.spare.pid > 0 || stopping_) return;
  DriverDomain* raw = &d;
  d.spare_timer = std::make_unique<asio::steady_timer>(io_, delay);
  d.spare_timer->async_wait([this, raw](const boost::system::error_code& ec) {
    if (!ec && !stopping_ && raw->spare.pid <= 0) spawn_spare(*raw);
  });
}

void DriverManager::spawn_spare(DriverDomain& d) {
  auto c = launch(d, Role::kSpare, &d.spare_health, &d.spare_group);
  if (!c) {
    AXL_WARN("driver %s: no spare: %s", d.cfg.name.c_str(), c.error().message.c_str());
    return;
  }
  d.spare = std::move(c).value();
  DriverDomain* raw = &d;
  d.spare_exit_watch =
      std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d.spare.pidfd.get()));
  d.spare_exit_watch->async_wait(
      asio::posix::stream_descriptor::wait_read, [this, raw](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        auto st = proc::wait_for(raw->spare, 0ms);
        AXL_WARN("driver %s: parked spare pid %d exited (%s)", raw->cfg.name.c_str(),
                 raw->spare.pid, st ? proc::describe_status(*st).c_str() : "?");
        raw->spare.pid = -1;
        raw->spare_health.reset();
        reaper_.reap(std::move(raw->spare.ns_holder));
        reaper_.retire(std::move(raw->spare_group));
        // A spare that cannot even park (a broken binary, say) is not made
        // forever: restarts then simply start a fresh process.
        if (++raw->spare_failures < 5) schedule_spare(*raw, 100ms);
      });
  AXL_INFO("driver %s spare started, pid %d (parked)", d.cfg.name.c_str(), d.spare.pid);
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
  if (auto s = wire::send(d.spare_health.get(), mb, fds); !s) {
    AXL_WARN("driver %s: spare not started: %s", d.cfg.name.c_str(), s.error().message.c_str());
    discard_spare(d);
    return false;
  }
  if (d.spare_exit_watch) d.spare_exit_watch->cancel();
  d.spare_exit_watch.reset();
  d.spare_failures = 0;
  d.child = std::move(d.spare);
  d.spare = proc::Child{};
  d.health = std::move(d.spare_health);
  d.group = std::move(d.spare_group);
  return true;
}

void DriverManager::discard_spare(DriverDomain& d) {
  if (d.spare_exit_watch) d.spare_exit_watch->cancel();
  d.spare_exit_watch.reset();
  d.spare_health.reset();  // a parked spare exits when its channel closes
  if (d.spare.pid > 0) proc::stop(d.spare, 500ms);
  d.spare.pid = -1;
  d.spare_group.reset();
}

// Starts health and exit watching of the active instance (fresh or promoted).
void DriverManager::watch_active(DriverDomain& d, uint64_t started_ns) {
  d.state = DriverState::kRunning;
  d.started_ns = started_ns ? started_ns : monotonic_ns();
  d.pending_cause.clear();
  d.pending_fail_ns = 0;
  DriverDomain* raw = &d;
  d.exit_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d.child.pidfd.get()));
  d.exit_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, raw](const boost::system::error_code& ec) {
                             if (!ec) on_exit(raw);
                           });
  d.monitor = std::make_unique<HealthMonitor>(
      io_, std::move(d.health), std::chrono::milliseconds(d.cfg.heartbeat_ms),
      d.cfg.heartbeat_misses,
      [this, raw](const std::string& cause, uint64_t last_pong_ns) {
        kill_for(raw, cause, raw->pending_fail_ns ? raw->pending_fail_ns : last_pong_ns);
      },
      [this, raw] {
        // cgroup v1 does not notify a refused fork; look on every beat.
        if (raw->group && raw->group->breach() == cgroup::Breach::kPids) {
          kill_for(raw, "resource limit: pids", monotonic_ns());
          raw->monitor->stop();
        }
      },
      [pid = d.child.pid] { return read_sched(pid); });
  watch_group(d);
}

// The kernel OOM-kills a driver over its memory limit by itself (the pidfd
// then reports it); a pids limit only refuses forks, so that breach kills.
void DriverManager::watch_group(DriverDomain& d) {
  d.group_watch.reset();
  if (!d.group || d.group->event_fd() < 0) return;
  DriverDomain* raw = &d;
  d.group_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d.group->event_fd()));
  d.group_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                            [this, raw](const boost::system::error_code& ec) {
                              if (ec || !raw->group) return;
                              raw->group->ack_events();
                              if (raw->group->breach() == cgroup::Breach::kPids)
                                kill_for(raw, "resource limit: pids", monotonic_ns());
                              else
                                watch_group(*raw);
                            });
}

Status DriverManager::spawn_standby(DriverDomain& d) {
  auto c = launch(d, Role::kStandby, &d.standby_health, &d.standby_group);
  if (!c) return c.error();
  d.standby = std::move(c).value();
  DriverDomain* raw = &d;
  d.standby_exit_watch =
      std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(d.standby.pidfd.get()));
  d.standby_exit_watch->async_wait(
      asio::posix::stream_descriptor::wait_read, [this, raw](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        // A standby that dies before it is needed is simply replaced.
        (void)proc::wait_for(raw->standby, 0ms);
        raw->standby.pid = -1;
        reaper_.reap(std::move(raw->standby.ns_holder));
        reaper_.retire(std::move(raw->standby_group));
        AXL_WARN("driver %s: standby exited; starting another", raw->cfg.name.c_str());
        auto t = std::make_shared<asio::steady_timer>(io_, 100ms);
        t->async_wait([this, raw, t](const boost::system::error_code& e) {
          if (!e && !stopping_ && raw->standby.pid <= 0) (void)spawn_standby(*raw);
        });
      });
  AXL_INFO("driver %s standby started, pid %d", d.cfg.name.c_str(), d.standby.pid);
  return {};
}

// A kill the supervisor decides itself (a hang, a quarantine, a cgroup
// breach, an operator restart).  With a warm standby the hypervisor is asked
// to fence the old instance's channels and promote the standby first, so the
// guest's outage is that round trip, not the process's death; the old one is
// stopped before (SIGSTOP, confirmed by the kernel), so no write of its can
// land after the standby replays what was in flight, and killed after.
void DriverManager::kill_for(DriverDomain* d, const std::string& cause, uint64_t fail_ns) {
  if (d->child.pid <= 0) return;
  d->pending_cause = cause;
  d->pending_fail_ns = fail_ns;
  const int pidfd = d->child.pidfd.get();
  auto kill_now = [pidfd] { ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0); };
  if (d->standby.pid > 0 && promote_ && stop_and_confirm(d)) {
    AXL_WARN("driver %s: %s; fencing it and promoting its standby", d->cfg.name.c_str(),
             cause.c_str());
    const int pid = d->child.pid;
    promote_(d->cfg.name, [d, pid](const Status& s) {
      if (!s)
        AXL_WARN("driver %s: standby not promoted first: %s", d->cfg.name.c_str(),
                 s.error().message.c_str());
      // Still the instance we stopped (the pidfd keeps it from being reused).
      if (d->child.pid == pid)
        ::syscall(SYS_pidfd_send_signal, d->child.pidfd.get(), SIGKILL, nullptr, 0);
    });
    return;
  }
  AXL_WARN("driver %s: %s; killing it", d->cfg.name.c_str(), cause.c_str());
  kill_now();
}

bool DriverManager::stop_and_confirm(DriverDomain* d) {
  if (::syscall(SYS_pidfd_send_signal, d->child.pidfd.get(), SIGSTOP, nullptr, 0) != 0)
    return false;
  // Group stop reaches each thread when it next leaves the kernel: a
  // write in progress finishes first.  Microseconds as a rule; give up
  // (and kill without fencing) past 20 ms.
  const std::string task_dir = "/proc/" + std::to_string(d->child.pid) + "/task";
  const auto deadline = std::chrono::steady_clock::now() + 20ms;
  for (;;) {
    bool all = true;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(task_dir, ec)) {
      auto s = read_sched(std::stoi(t.path().filename().string()));
      if (s && s->state != 'T' && s->state != 't') {
        all = false;
        break;
      }
    }
    if (ec) return false;
    if (all) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(50us);
  }
}

Status DriverManager::kill_with_cause(const std::string& name, int pid, const std::string& cause) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (d->state != DriverState::kRunning || d->child.pid <= 0 || d->child.pid != pid) {
    AXL_INFO("driver %s: report about pid %d ignored (active instance: %d): %s", name.c_str(), pid,
             d->child.pid, cause.c_str());
    return {};
  }
  if (!d->pending_cause.empty()) return {};  // already being killed
  kill_for(d, cause, monotonic_ns());
  return {};
}

Status DriverManager::kill(const std::string& name, const std::string& signal) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (d->state != DriverState::kRunning || d->child.pid <= 0)
    return make_error("driver '" + name + "' is " + to_string(d->state) + ", not running");
  int sig = signal == "KILL"   ? SIGKILL
            : signal == "STOP" ? SIGSTOP
            : signal == "SEGV" ? SIGSEGV
            : signal == "ABRT" ? SIGABRT
                               : 0;
  if (!sig) return make_error("unknown signal '" + signal + "' (want KILL, STOP, SEGV or ABRT)");
  // The outage is measured from now, whoever notices it.
  d->pending_fail_ns = monotonic_ns();
  if (::syscall(SYS_pidfd_send_signal, d->child.pidfd.get(), sig, nullptr, 0) < 0)
    return make_error("cannot signal driver '" + name + "': " + strerror(errno));
  AXL_INFO("driver %s: sent SIG%s on request", name.c_str(), signal.c_str());
  return {};
}

Status DriverManager::inject(const std::string& name, const std::string& fault) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (!d->cfg.fault_injection)
    return make_error("fault injection is disabled for driver '" + name +
                      "' (set fault_injection = true in the host config)");
  if (!config::is_fault_name(fault)) return make_error("unknown fault '" + fault + "'");
  if (d->state != DriverState::kRunning || !d->monitor)
    return make_error("driver '" + name + "' is not running");
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setFault(fault);
  d->pending_fail_ns = monotonic_ns();
  return wire::send(d->monitor->fd(), mb);
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
  auto st = proc::wait_for(d->child, 0ms);
  d->exit_status = st ? *st : -1;
  d->child.pid = -1;
  // Its pid namespace goes too, without a wait on the way to the restart.
  reaper_.reap(std::move(d->child.ns_holder));
  d->monitor.reset();
  d->health.reset();
  if (d->group_watch) d->group_watch->cancel();
  d->group_watch.reset();
  if (d->pending_cause.empty()) d->pending_cause = breach_cause(d->group.get());
  // Kills anything the driver left inside and removes the group, after the restart.
  reaper_.retire(std::move(d->group));
  if (stopping_) {
    d->state = DriverState::kStopped;
    return;
  }
  Outage o;
  o.cause = d->pending_cause.empty() ? "crash: " + proc::describe_status(d->exit_status)
                                     : d->pending_cause;
  o.fail_ns = d->pending_fail_ns ? d->pending_fail_ns : detect;
  o.detect_ns = detect;
  o.at_unix_s = uint64_t(::time(nullptr));
  d->last_failure = o.cause;
  d->outages.push_back(o);
  AXL_WARN("driver %s failed: %s (detected after %.3f ms)", d->cfg.name.c_str(), o.cause.c_str(),
           double(o.detect_ns - o.fail_ns) / 1e6);
  if (!d->budget.allows(std::chrono::steady_clock::now())) {
    d->state = DriverState::kFailed;
    d->child.ns_holder.reset();  // nothing left to hold its pid namespace for
    AXL_ERROR("driver %s failed for good: %u restarts within %u s", d->cfg.name.c_str(),
              d->cfg.restart_max, d->cfg.restart_window_s);
    if (events_.failed) events_.failed(*d);
    return;
  }
  if (d->standby.pid > 0) {
    // The hypervisor has already switched the devices to the standby (it saw
    // the connection drop); adopt it as the active and start a new standby.
    d->budget.record(std::chrono::steady_clock::now());
    ++d->restarts;
    d->standby_exit_watch->cancel();
    d->standby_exit_watch.reset();
    d->child = std::move(d->standby);
    d->standby = proc::Child{};
    d->health = std::move(d->standby_health);
    d->group = std::move(d->standby_group);
    watch_active(*d);
    d->outages.back().restart_ns = detect;
    d->outages.back().promoted = true;
    AXL_INFO("driver %s: standby pid %d is now active", d->cfg.name.c_str(), d->child.pid);
    if (events_.restarted) events_.restarted(*d);
    await_served(d);
    if (auto s = spawn_standby(*d); !s)
      AXL_WARN("driver %s: no new standby: %s", d->cfg.name.c_str(), s.error().message.c_str());
    return;
  }
  d->state = DriverState::kRestarting;
  // Back-to-back failures back off exponentially from backoff_ms.
  uint32_t delay = d->cfg.backoff_ms;
  for (size_t i = 1; i < d->budget.recent() && delay && delay < 60000; ++i) delay *= 2;
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
  if (close_outage(d, d->reported_rebound_ns, d->reported_served_ns, "reported")) return;
  poll_served(d, 20);
}

Status DriverManager::served(const std::string& name, int pid, uint64_t rebound, uint64_t served) {
  DriverDomain* d = find(name);
  if (!d) return make_error("no driver named '" + name + "'");
  if (rebound <= d->reported_rebound_ns) return {};  // an older rebind's, or a later device's
  d->reported_rebound_ns = rebound;
  d->reported_served_ns = served;
  close_outage(d, rebound, served, "reported");
  return {};
}

bool DriverManager::close_outage(DriverDomain* d, uint64_t rebound, uint64_t served,
                                 const char* how) {
  if (d->outages.empty() || d->outages.back().served_ns) return false;
  Outage& o = d->outages.back();
  // A rebind newer than the one that closed the previous record belongs to
  // this outage; a cold restart's rebind also comes after its respawn.
  const bool fresh = rebound > d->last_rebound_ns && (o.promoted || rebound >= o.restart_ns);
  if (!served || !fresh || served < rebound) return false;
  o.served_ns = served;
  d->last_rebound_ns = rebound;
  // A crash the hypervisor noticed (and promoted the standby for) before
  // the pidfd woke us: its rebind is the earliest witness of the failure,
  // so the record's outage is then a lower bound.
  if (rebound < o.fail_ns) o.fail_ns = rebound;
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
    if (stopping_ || close_outage(d, rebound, served, "polled")) return;
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
    d->monitor.reset();
    if (d->exit_watch) d->exit_watch->cancel();
    if (d->standby_exit_watch) d->standby_exit_watch->cancel();
    if (d->standby.pid > 0) {
      proc::stop(d->standby, 2000ms);
      d->standby.pid = -1;
    }
    if (d->spare_timer) d->spare_timer->cancel();
    discard_spare(*d);
    if (d->child.pid > 0) {
      d->exit_status = proc::stop(d->child, 2000ms);
      d->child.pid = -1;
    }
    d->state = DriverState::kStopped;
    if (d->group_watch) d->group_watch->cancel();
  }
  drivers_.clear();
  reaper_.finish();
}

}  // namespace axl::supervisor
