// A fault-injection campaign (`axl campaign CAMPAIGN.toml`, docs/campaigns.md):
// its file, and the injection sequence its seed draws from the weighted
// fault mix.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::campaign {

// What a fault is injected into, and so which part of the workload stalls
// until it is back.
enum class Target {
  kDisk,        // the workload's disk driver domain
  kNic,         // the workload's NIC driver domain
  kVtpm,        // the workload domain's vTPM
  kSupervisor,  // the host daemons themselves
  kHv,
};
const char* to_string(Target t);

struct Fault {
  Target target;
  std::string kind;  // a fault hook's name, or "kill" (SIGKILL from outside)
  double weight;
  // The name as the report shows it: "blk0:crash", "vtpm:hang", "hv:crash".
  std::string label;
};

struct Config {
  uint64_t seed = 1;
  uint32_t injections = 0;
  // Directory the report goes to (made if missing).
  std::string report_dir;
  // Per injection: how long the fault may take to be detected and the
  // workload to move again before it counts as a failure.
  uint32_t timeout_ms = 30000;
  // Pause after a recovery before the next injection.
  uint32_t settle_ms = 300;
  // How long a fault that is no failure by itself (slow, corrupt-read) runs
  // before the campaign ends it by restarting the driver.
  uint32_t quiet_ms = 2000;

  // The workload domain the campaign creates, runs and destroys.
  std::string name = "campaign";
  std::string disk_driver;
  std::string image;  // raw, at least 64 MiB; its first 32 MiB are overwritten
  std::string nic_driver;
  std::string mac = "52:54:00:ca:00:01";
  std::string host_addr;   // the host's address on the NIC driver's TAP
  std::string guest_addr;  // the guest's, in the same /24
  uint16_t port = 5007;    // the stream's, on host_addr (and port + 2 on the guest)
  bool vtpm = false;
  uint32_t memory_mib = 512;

  std::vector<Fault> mix;
};

// Parses and checks a campaign file; relative paths are against base_dir.
Result<Config> parse(const std::string& text, const std::string& origin,
                     const std::string& base_dir);

// The sequence of injections (indices into cfg.mix): every fault of the mix
// once when there are at least as many injections as faults, the rest drawn
// by weight, all in an order shuffled; from a splitmix64 generator seeded
// with cfg.seed, so one seed gives one sequence on every host and build.
std::vector<size_t> plan(const Config& cfg);

// The campaign's fault names for a driver, a vTPM and a daemon target.
bool driver_fault(const std::string& kind);
bool vtpm_fault(const std::string& kind);

// Whether the supervisor is expected to restart the target: every fault but
// slow (documented to be no failure by itself) and corrupt-read (silent, a
// loss only the workload's checks can see).
bool expects_restart(const Fault& f);

}  // namespace axl::campaign
