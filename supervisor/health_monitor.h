// The supervisor's end of a domain's health channel (a socketpair,
// common/schema/supervisor.capnp): pings every `interval`, reads the pongs,
// and calls `on_hang` once `misses` pings in a row went unanswered.  The
// domain answers from its event loop (common/heartbeat.h), so a hung loop, a
// stopped process or work the domain declares stuck all read as a hang.
//
// Missed answers alone do not tell a hung loop from one that is runnable but
// was not given a CPU (a loaded host, heartbeats of a few ms).  With a probe
// (the kernel's view of the loop's thread), the monitor looks before it calls
// a hang (docs/architecture.md, "Hang detection"):
// - stopped (SIGSTOP, ptrace) or sleeping with a ping unanswered: hung;
// - runnable or in a disk wait that used little CPU since the oldest
//   unanswered ping (under max(2 ms, a quarter of the time since)): starved,
//   not hung; the verdict waits, at most `window + max(1 s, window)` of
//   silence in all (window = interval x misses);
// - runnable or in a disk wait, and its loop went to sleep by itself at least
//   twice since the oldest unanswered ping: its loop turns (it is completing
//   requests), so not hung; the verdict waits as for a starved one;
// - anything else (it ran and still did not answer: a spinning loop): hung;
// - but a domain that never answered yet and is runnable is still starting:
//   the verdict waits as long as for a starved one.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/asio.h"
#include "common/unique_fd.h"

namespace axl::supervisor {

uint64_t monotonic_ns();  // CLOCK_MONOTONIC, the clock of every *_ns here

// The kernel's view of one thread (/proc/PID/task/TID/stat and schedstat).
struct SchedSample {
  char state = '?';        // R running or runnable, S sleeping, D disk wait, T/t stopped, Z, X
  uint64_t cpu_ns = 0;     // time spent on a CPU
  uint64_t wait_ns = 0;    // time spent runnable, waiting for a CPU
  uint64_t voluntary = 0;  // times it went to sleep by itself (an event loop: once a turn)
};
// The main thread of `pid` (an event loop runs there); nullopt once it is gone.
std::optional<SchedSample> read_sched(int pid);
// Parses the files' contents (stat, schedstat, status); nullopt if stat or
// schedstat is malformed.  `status` may be empty (voluntary stays 0).
std::optional<SchedSample> parse_sched(const std::string& stat, const std::string& schedstat,
                                       const std::string& status = "");

class HealthMonitor {
 public:
  // on_hang(cause, last_pong_ns): "hang: N heartbeats missed" and when the
  // last answer came (CLOCK_MONOTONIC).  Called once; the monitor then stops.
  using OnHang = std::function<void(const std::string& cause, uint64_t last_pong_ns)>;
  // on_beat, if given, runs before every ping: checks that have no event of
  // their own (cgroup v1 does not notify a refused fork) ride on the beat.
  // probe, if given, samples the domain's loop thread (read_sched) when a
  // ping goes out and before a hang is called.
  using Probe = std::function<std::optional<SchedSample>()>;
  HealthMonitor(boost::asio::io_context& io, UniqueFd fd, std::chrono::milliseconds interval,
                uint32_t misses, OnHang on_hang, std::function<void()> on_beat = {},
                Probe probe = {});
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  void stop();
  int fd() const { return fd_.get(); }
  uint64_t last_pong_ns() const { return last_pong_ns_; }
  uint64_t answered() const { return pong_seq_; }
  // Times a hang verdict was held back because the domain was starved, not hung.
  uint64_t starved() const { return starved_; }

 private:
  void watch();
  void beat();
  bool read_pongs();  // false once the domain closed its end
  // Whether the silence so far is a hang; false while the domain is starved.
  bool hung(std::string* why);

  UniqueFd fd_;
  boost::asio::posix::stream_descriptor watch_;
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds interval_;
  uint32_t misses_;
  OnHang on_hang_;
  std::function<void()> on_beat_;
  Probe probe_;
  struct Sent {
    uint64_t seq, at_ns;
    std::optional<SchedSample> sched;
  };
  std::deque<Sent> unanswered_;  // pings sent and not yet answered, oldest first
  uint64_t ping_seq_ = 0, pong_seq_ = 0, last_pong_ns_ = 0;
  uint64_t starved_ = 0;
  uint64_t started_ns_ = 0;  // when this monitor began
  bool starving_ = false;    // the current silence was already called starvation
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace axl::supervisor
