// Resource limits for driver domains (docs/architecture.md, "Confinement"
// and "Data path": resource abuse is seen through
// cgroup limits and events).  Each driver instance gets its own cgroup; the
// kernel enforces the limits, OOM-kills a driver that exceeds its memory, and
// the supervisor learns of it through Group::event_fd() and Group::breach().
//
// Two layouts are supported, chosen once by Manager::detect():
//  - cgroup2: <mount>/<parent>/<prefix>/<name>, with memory, pids (and cpu
//    when available) enabled in the subtree_control of <prefix>.
//  - cgroup v1: one <mount>/<parent>/<prefix>/<name> per controller mount
//    (memory, pids, cpu).
// <parent> is the supervisor's own cgroup when that works, else the root.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::cgroup {

// 0 means unlimited.
struct Limits {
  uint64_t memory_max_bytes = 0;
  uint32_t pids_max = 0;
  uint32_t cpu_percent = 0;  // of one CPU; 200 = two CPUs' worth
};

enum class Breach { kNone, kMemory, kPids };
const char* breach_name(Breach b);

enum class Version { kV1, kV2 };

class Group {
 public:
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;
  // Kills whatever is still inside (only processes in this group) and removes
  // the group's directories.
  ~Group();

  // Moves a process (all its threads) in.  Call it before the process runs
  // driver code, e.g. from the parent while the child waits on a pipe.
  Status add(pid_t pid);

  // cgroup.procs of every directory of the group, opened for writing, for a
  // freshly forked child to join by itself before exec: write(fd, "0", 1) on
  // each (async-signal-safe; "0" means the writer).  The kernel checks
  // permission against the opener, so the parent opens, the child writes.
  Result<std::vector<UniqueFd>> open_procs_files() const;

  // Whether the kernel enforced a limit: an OOM kill inside the group, or a
  // fork refused by pids.max.  Memory wins when both happened.
  Breach breach() const;

  // Pollable (POLLIN) when the group's memory or pids events change; -1 when
  // the kernel offers no notification.  Call ack_events() after it fires so
  // it stops polling readable, then check breach().
  int event_fd() const { return events_.get(); }
  void ack_events();

  // Pids currently inside the group.
  std::vector<pid_t> pids() const;
  // Kills everything inside and waits (bounded) until the group is empty.
  // Returns true when it emptied.
  bool kill_all();
  // One step of removal that never waits: kills what is still inside and
  // removes the directories that are free.  True once nothing is left to do;
  // else call again a moment later (a task that just exited keeps a group
  // busy briefly).  The destructor finishes whatever is left, waiting.
  bool remove_step();

  const std::string& name() const { return name_; }
  // The group's directories (one for cgroup2, one per controller for v1).
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  friend class Manager;
  Group(Version version, std::string name) : version_(version), name_(std::move(name)) {}
  Status apply(const Limits& limits);
  Status watch();

  Version version_;
  std::string name_;
  std::vector<std::string> dirs_;  // every directory this group made
  std::string memory_dir_;         // the directory holding memory.* files
  std::string pids_dir_;
  std::string cpu_dir_;   // empty when no cpu controller
  UniqueFd events_;       // epoll over the sources below
  UniqueFd inotify_;      // memory.events / pids.events modifications
  UniqueFd oom_eventfd_;  // v1: cgroup.event_control on memory.oom_control
  UniqueFd oom_control_;  // v1: must stay open while registered
};

class Manager {
 public:
  // Finds where cgroups can be made and creates <prefix> there.  Returns an
  // Error with a one-line reason when neither cgroup2 nor v1 works; the
  // supervisor then warns and runs drivers without limits.
  static Result<std::unique_ptr<Manager>> detect(const std::string& prefix);

  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  // Removes the <prefix> directories (groups must be gone first), also ones
  // a predecessor made.
  ~Manager();

  std::string describe() const;
  Version version() const { return version_; }

  // `name` is one path component (no '/', not "." or "..").
  Result<std::unique_ptr<Group>> create(const std::string& name, const Limits& limits);
  // The existing group `name` that a predecessor with the same prefix made
  // (a supervisor adopting its predecessor's domains): its limits stand, its
  // events are watched again, and it is removed like one made here.
  Result<std::unique_ptr<Group>> adopt(const std::string& name);

 private:
  Manager(Version version) : version_(version) {}

  Version version_;
  std::string description_;
  // cgroup2: memory_base_ == pids_base_ == cpu_base_.  cpu_base_ is empty when
  // no cpu controller can be had; cpu limits then fail at create().
  std::string memory_base_;
  std::string pids_base_;
  std::string cpu_base_;
  std::vector<std::string> made_;  // prefix directories this manager created
};

}  // namespace axl::cgroup
