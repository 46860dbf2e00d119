// Child processes: spawned with an explicit fd map, watched through a pidfd,
// stopped by PID.  Nothing here ever signals a process it did not start.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::proc {

struct SpawnOptions {
  std::vector<std::string> argv;
  // (parent fd, child fd) pairs; every other fd is closed in the child.
  std::vector<std::pair<int, int>> fds;
  std::string log_path;  // stdout+stderr appended here; empty: inherit
  bool new_session = false;
  // cgroup.procs files (opened by the parent) the child joins by writing "0"
  // right after fork, before it runs anything of its own.
  std::vector<int> join_cgroup_fds;
};

struct Child {
  pid_t pid = -1;
  UniqueFd pidfd;  // readable when the child exits
};

Result<Child> spawn(const SpawnOptions& opts);

// Waits up to `timeout` for the child; returns its wait status if it exited.
Result<int> wait_for(const Child& c, std::chrono::milliseconds timeout);
// SIGTERM, then SIGKILL after `grace`; reaps; returns the wait status.
int stop(const Child& c, std::chrono::milliseconds grace);

// Directory of the running executable (its siblings are the other binaries).
std::string exe_dir();
// Finds `name` on PATH; empty when absent.
std::string find_on_path(const std::string& name);
std::string describe_status(int wait_status);

}  // namespace axl::proc
