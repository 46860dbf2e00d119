// The supervisor's end of a domain's health channel (a socketpair,
// common/schema/supervisor.capnp): pings every `interval`, reads the pongs,
// and calls `on_hang` once `misses` pings in a row went unanswered.  The
// domain answers from its event loop (common/heartbeat.h), so a hung loop, a
// stopped process or work the domain declares stuck all read as a hang.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/asio.h"
#include "common/unique_fd.h"

namespace axl::supervisor {

uint64_t monotonic_ns();  // CLOCK_MONOTONIC, the clock of every *_ns here

class HealthMonitor {
 public:
  // on_hang(cause, last_pong_ns): "hang: N heartbeats missed" and when the
  // last answer came (CLOCK_MONOTONIC).  Called once; the monitor then stops.
  using OnHang = std::function<void(const std::string& cause, uint64_t last_pong_ns)>;
  // on_beat, if given, runs before every ping: checks that have no event of
  // their own (cgroup v1 does not notify a refused fork) ride on the beat.
  HealthMonitor(boost::asio::io_context& io, UniqueFd fd, std::chrono::milliseconds interval,
                uint32_t misses, OnHang on_hang, std::function<void()> on_beat = {});
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  void stop();
  int fd() const { return fd_.get(); }
  uint64_t last_pong_ns() const { return last_pong_ns_; }
  uint64_t answered() const { return pong_seq_; }

 private:
  void watch();
  void beat();

  UniqueFd fd_;
  boost::asio::posix::stream_descriptor watch_;
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds interval_;
  uint32_t misses_;
  OnHang on_hang_;
  std::function<void()> on_beat_;
  uint64_t ping_seq_ = 0, pong_seq_ = 0, last_pong_ns_ = 0;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace axl::supervisor
