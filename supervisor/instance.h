// What the supervisor does the same way for every process it supervises, a
// driver domain or a vTPM domain (docs/architecture.md, "Supervision"):
// the restart budget, the cause of a death that the kernel's limits name, and
// the removal of what a dead instance leaves behind (its cgroup, its
// pid-namespace holder) from the loop, without waiting, after the restart.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/process.h"
#include "supervisor/cgroup/cgroup.h"

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
