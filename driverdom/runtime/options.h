// Command line of axolotl-driverdom.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "driverdom/runtime/driver.h"

namespace axl::driverdom {

struct Options {
  std::string name;
  Kind kind = Kind::kNet;
  std::string hv_socket;
  std::optional<int> tap_fd;         // net only: inherited from the supervisor
  std::optional<int> supervisor_fd;  // health channel (heartbeats), inherited
  bool standby = false;              // start as a warm standby (hello says so)
  // A spare for a cold restart: set up and confined, then wait on the health
  // channel for `start` (with the hypervisor connection when sandboxed)
  // before connecting, reading a TAP or saying hello.
  bool parked = false;
  bool fault_injection = false;  // fault hooks reachable (host config opt-in)
  std::string fault_at_start;    // a fault hook to run right after start
  std::optional<int> hv_fd;      // an inherited, connected hypervisor socket
  bool sandbox = false;          // confine itself before serving (sandbox.h)
  std::optional<int> hv_pid;     // escape-attempt hooks only: the hypervisor's PID
  std::optional<int> host_pid;   // own PID outside its pid namespace (for hello)
  uint32_t poll_us = 0;          // channel polling window (config::DriverConfig::poll_us)
};

constexpr const char* kUsage =
    "usage: axolotl-driverdom --name NAME --kind net|blk --hv-socket PATH [--tap-fd N] "
    "[--supervisor-fd N] [--hv-fd N] [--sandbox] [--host-pid N] [--poll-us N] "
    "[--standby | --parked] "
    "[--fault-injection [--fault-at-start FAULT] [--hv-pid N]]";

Result<Options> parse_options(const std::vector<std::string>& args);

}  // namespace axl::driverdom
