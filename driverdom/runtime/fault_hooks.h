// Fault hooks for fault-injection campaigns.  Compiled into every driver
// domain but unreachable unless the supervisor started it with
// --fault-injection (host config `fault_injection = true`).
#pragma once
#include <string>

#include "common/asio.h"
#include "common/result.h"

namespace axl::driverdom {

class FaultHooks {
 public:
  FaultHooks(boost::asio::io_context& io, bool enabled) : io_(io), enabled_(enabled) {}
  // Runs a named fault: crash (abort), hang (the event loop stops turning),
  // hog-memory (allocates and touches memory without bound), hog-pids
  // (forks without bound).  Error when disabled or unknown.
  Status run(const std::string& fault);

 private:
  void hog_memory_step();
  void hog_pids_step();
  boost::asio::io_context& io_;
  bool enabled_;
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

}  // namespace axl::driverdom
