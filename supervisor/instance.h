// What the supervisor does the same way for every process it supervises, a
// driver domain or a vTPM domain (docs/architecture.md, "Supervision"): one
// Instance type for each running process (its pidfd, health channel and
// heartbeats, cgroup and the breach watch, the signal that ends it), the
// restart budget and back-off, the cause of a death that the kernel's limits
// name, and the removal of what a dead instance leaves behind (its cgroup,
// its pid-namespace holder) from the loop, without waiting, after the
// restart.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/process.h"
#include "common/unique_fd.h"
#include "supervisor/cgroup/cgroup.h"
#include "supervisor/health_monitor.h"
#include "supervisor/journal.h"

namespace axl::supervisor {

// At most `max` restarts within any `window`.
class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;
  RestartBudget(uint32_t max, std::chrono::seconds window) : max_(max), window_(window) {}
  // Whether one more restart at `now` fits (restarts older than the window
  // are forgotten first).
  bool allows(Clock::time_point now);
  void record(Clock::time_point now) { recent_.push_back(now); }
  // An operator's restart of a failed domain starts a fresh budget.
  void clear() { recent_.clear(); }
  // Restarts within the window (for a back-off that grows with them).
  size_t recent() const { return recent_.size(); }
  // The wait before the next restart: `base_ms`, doubled for every restart
  // in the window after the first, up to a minute; 0 stays 0.
  uint32_t backoff_ms(uint32_t base_ms) const;
  uint32_t max() const { return max_; }
  std::chrono::seconds window() const { return window_; }

 private:
  uint32_t max_;
  std::chrono::seconds window_;
  std::deque<Clock::time_point> recent_;
};

// The cause a breached limit of `g` names for its instance's death
// ("resource limit: memory (OOM kill)", "resource limit: pids"); "" for none.
std::string breach_cause(const cgroup::Group* g);

class Reaper;

// One process the supervisor started and watches. Made by a spawn with its
// end of the health channel and its cgroup (either may be absent); then
// watched for its exit (pidfd), and once it serves, by heartbeats and its
// cgroup's pids limit. Held by unique_ptr, so the watches' handlers may keep
// a pointer to it while it changes roles (a standby made active).
class Instance {
 public:
  // A failure that the supervisor itself must act on: missed heartbeats or
  // a pids-limit breach, and when it began (CLOCK_MONOTONIC ns).
  using FailFn = std::function<void(const std::string& cause, uint64_t fail_ns)>;

  Instance(boost::asio::io_context& io, proc::Child child, UniqueFd health,
           std::unique_ptr<cgroup::Group> group);
  ~Instance();  // stops watching; the process is left to its owner (see stop())
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  int pid() const { return child_.pid; }
  bool running() const { return child_.pid > 0; }
  proc::Child& child() { return child_; }
  cgroup::Group* group() const { return group_.get(); }
  // Its end of the health channel before monitoring starts (a parked spare
  // is started through it); then the monitor's.
  int health_fd() const { return monitor_ ? monitor_->fd() : health_.get(); }
  const HealthMonitor* monitor() const { return monitor_.get(); }

  // `on_exit` runs once, on the loop, when the process has exited.
  void watch_exit(std::function<void()> on_exit);
  // Heartbeats on the health channel (a hang), and the cgroup's pids limit
  // (an event, and a look on every beat where cgroup v1 sends none): each
  // calls `on_fail` once and stops monitoring.
  void monitor(std::chrono::milliseconds interval, uint32_t misses, FailFn on_fail);
  // Stops every watch; the health channel stays open (a parked spare or a
  // standby would take its closing as the end).
  void unwatch();

  // pidfd_send_signal; an Error names the signal and the pid.
  Status signal(int sig);
  // After its exit: its wait status; its pid-namespace holder and cgroup go
  // to `reaper`, and `cause` gets what the cgroup's limits name, if any.
  int reap(Reaper& reaper, std::string* cause);
  // Stops it now, waiting (SIGTERM, SIGKILL past `grace`): for shutdown and
  // for an instance discarded before it served. Returns the wait status.
  int stop(std::chrono::milliseconds grace);

  // Persists it in `j` (supervisor/journal.h): `r` (its pid, holder and
  // cgroup are filled in here) and its health channel; `write` false for an
  // instance adopted from its existing record.  The record follows its role
  // (set_role) and goes when it is reaped or stopped.
  Status journal(Journal* j, InstanceRecord r, bool write = true);
  void set_role(const std::string& role);
  const InstanceRecord& record() const { return record_; }
  bool journaled() const { return journal_ != nullptr; }

 private:
  void watch_group();
  void fail(const std::string& cause, uint64_t fail_ns);

  boost::asio::io_context& io_;
  proc::Child child_;
  UniqueFd health_;
  std::unique_ptr<cgroup::Group> group_;
  std::unique_ptr<HealthMonitor> monitor_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch_, group_watch_;
  FailFn on_fail_;
  Journal* journal_ = nullptr;
  InstanceRecord record_;
  // Bumped by unwatch(): handlers of earlier watches do nothing.
  std::shared_ptr<uint64_t> gen_ = std::make_shared<uint64_t>(0);
};

// The instance `r` records (supervisor/journal.h), if it is still the
// process recorded (pidfd, start time, a member of its cgroup) and its
// health channel came back from the journal's fd store.  One that is gone,
// or that cannot be watched without its channel, is killed, and its remains
// (holder, cgroup, record) removed: an Error says why.
Result<std::unique_ptr<Instance>> adopt_instance(boost::asio::io_context& io, Journal& journal,
                                                 cgroup::Manager* cgroups, Reaper& reaper,
                                                 const InstanceRecord& r);

// What a supervised domain (a driver or a vTPM) keeps across its
// instances; DriverDomain and VtpmDomain are one each.
struct Supervised {
  std::unique_ptr<Instance> active;  // null while restarting, failed or stopped
  RestartBudget budget{10, std::chrono::seconds(60)};
  uint32_t restarts = 0;
  std::string last_failure;
  uint64_t started_ns = 0;  // when the active instance became the active one
  // A kill the supervisor made (a hang, a limit, a request): its cause, and
  // when the failure began if known better than its detection.
  std::string pending_cause;
  uint64_t pending_fail_ns = 0;
  uint32_t instance_seq = 0;  // names each instance's cgroup

  // The active instance exited: reaps it (see Instance::reap) and returns
  // the cause of its death: the one the supervisor named, else what its
  // cgroup's limits name, else "" (the caller names the wait status).
  std::string end_active(Reaper& reaper, int* status);
};

// Takes what dead instances leave behind and removes it from the loop:
// pid-namespace holders are killed and reaped when their pidfd says so;
// cgroups are emptied and removed step by step (cgroup::Group::remove_step,
// every 5 ms, about a second at most, then the Group's destructor has the
// last word).  Nothing here waits, so a restart never waits for it.
class Reaper {
 public:
  explicit Reaper(boost::asio::io_context& io) : io_(io), timer_(io) {}
  ~Reaper();  // what is left is removed now, waiting
  void retire(std::unique_ptr<cgroup::Group> g);
  void reap(proc::NsHolder h);
  // Removes every retired cgroup now, waiting (on shutdown).
  void finish();

 private:
  void step();
  struct Retiring {
    std::unique_ptr<cgroup::Group> group;
    int steps = 0;
  };
  boost::asio::io_context& io_;
  boost::asio::steady_timer timer_;
  std::vector<Retiring> retiring_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace axl::supervisor
