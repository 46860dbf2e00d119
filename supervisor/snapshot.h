// One view of the supervisor's state, rendered by both the control socket
// (`axl drivers`, `axl vtpms`) and the D-Bus API, so that the two never
// disagree about a driver or a vTPM.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "supervisor/driver_manager.h"
#include "supervisor/vtpm_manager.h"

namespace axl::supervisor {

struct OutageView {
  std::string cause;
  uint64_t detect_us = 0;   // failure -> detection
  uint64_t restart_us = 0;  // failure -> new active instance (0: none yet)
  uint64_t outage_us = 0;   // failure -> first request served (0: not yet)
  uint64_t at_unix_s = 0;
  int64_t hv_detect_us = -1;  // failure -> the hypervisor's channel lock said so (-1: unknown)
};

struct DriverView {
  std::string name, kind, state, last_failure;
  int32_t pid = -1;
  int32_t standby_pid = 0;  // 0: none
  int32_t spare_pid = 0;    // the parked spare's; 0: none
  uint32_t restarts = 0;
  uint64_t uptime_ms = 0;  // 0 unless running
  double heartbeat_lag_ms = 0;
  std::vector<OutageView> outages;
};

struct VtpmView {
  std::string domain, state, last_failure;
  int32_t pid = -1;  // -1 unless running
  uint32_t restarts = 0;
  uint32_t command_port = 0;
  uint64_t uptime_ms = 0;
};

// `now_ns`: CLOCK_MONOTONIC, for uptimes and heartbeat lags.
std::vector<DriverView> driver_views(const DriverManager& drivers, uint64_t now_ns);
std::vector<VtpmView> vtpm_views(const VtpmManager& vtpms, uint64_t now_ns);

}  // namespace axl::supervisor
