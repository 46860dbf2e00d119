// What the supervisor persists about every process it runs, so that a
// successor adopts them after a crash of the supervisor instead of losing
// them (docs/architecture.md, "No single point of failure").  One record per
// instance in STATE/instances/KEY (0600, written to a temp file and renamed):
// what it is (a driver or a vTPM, its name, its role), who it is (pid and
// start time, its pid-namespace holder's, its cgroup), and its health
// channel kept under KEY in the fd store (common/fd_store.h).
// `axl host down` kills what the records name when no supervisor is left to.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/fd_store.h"
#include "common/result.h"

namespace axl::supervisor {

struct InstanceRecord {
  std::string kind;  // "driver" or "vtpm"
  std::string name;  // the driver's name, or the vTPM's domain
  std::string role;  // "active", "standby" or "spare"
  pid_t pid = -1;
  uint64_t start = 0;  // proc::start_time
  pid_t holder_pid = -1;
  uint64_t holder_start = 0;
  std::string cgroup;  // its group's name (cgroup::Manager), "" for none
  uint32_t seq = 0;    // the domain's instance counter when it was made
  // A vTPM's settings (VtpmManager::start), which its successor keeps.
  uint32_t port = 0;
  bool measure_log = false;

  // Unique per instance; also its health channel's name in the fd store.
  std::string key() const { return kind + "." + name + "." + std::to_string(pid); }
};

// The cgroup prefix of the host with this state dir: the same for every
// supervisor of it, so a successor finds its predecessor's groups
// ("axolotl-" and a hash of the state dir's real path).
std::string cgroup_prefix(const std::string& state_dir);

std::string format_record(const InstanceRecord& r);
// A record written by format_record; an Error names what is wrong.
Result<InstanceRecord> parse_record(const std::string& text);

class Journal {
 public:
  // `dir` is created (0700) if missing; `store` may be unavailable (then a
  // successor finds the records but no channels, and replaces the instances).
  Journal(std::string dir, FdStore& store);

  // Writes r's record and keeps `health_fd` (if >= 0) in the store.
  Status record(const InstanceRecord& r, int health_fd);
  // Rewrites r's record (a new role).
  void update(const InstanceRecord& r);
  // Removes the record and the stored channel of instance `key`.
  void forget(const std::string& key);
  // Every record found; a malformed one is warned about and removed.
  std::vector<InstanceRecord> load();
  FdStore& store() { return store_; }

 private:
  Status write(const InstanceRecord& r);
  std::string dir_;
  FdStore& store_;
};

}  // namespace axl::supervisor
