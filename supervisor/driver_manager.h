// Spawns and watches the driver domains a host config names.  Health checks
// and restarts build on this (restart issue); for now a driver that exits is
// recorded as stopped.
#pragma once
#include "common/asio.h"
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/process.h"

namespace axl::supervisor {

// Lifecycle (STYLE.md habit 6); transitions live in DriverManager only.
enum class DriverState { kStarting, kRunning, kRestarting, kFailed, kStopped };
const char* to_string(DriverState s);

struct DriverDomain {
  config::DriverConfig cfg;
  DriverState state = DriverState::kStarting;
  proc::Child child;
  int exit_status = 0;
  uint32_t restarts = 0;
  std::string last_failure;  // e.g. "killed by Killed"
  std::deque<std::chrono::steady_clock::time_point> recent_restarts;  // within the window
  std::chrono::steady_clock::time_point failed_at;
  std::unique_ptr<boost::asio::steady_timer> restart_timer;
  UniqueFd tap;  // net: held here for the driver's whole life and its successors
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch;
};

class DriverManager {
 public:
  DriverManager(boost::asio::io_context& io, std::string driverdom_bin, std::string hv_socket,
                std::string log_dir);
  ~DriverManager();
  Status start_all(const config::HostConfig& host);
  void stop_all();
  const std::vector<std::unique_ptr<DriverDomain>>& drivers() const { return drivers_; }

 private:
  Status spawn(DriverDomain& d);
  void on_exit(DriverDomain* d);
  void restart(DriverDomain* d);
  bool stopping_ = false;

  boost::asio::io_context& io_;
  std::string bin_, hv_socket_, log_dir_;
  std::vector<std::unique_ptr<DriverDomain>> drivers_;
};

}  // namespace axl::supervisor
