// Child processes: spawned with an explicit fd map, watched through a pidfd,
// stopped by PID.  Nothing here ever signals a process it did not start.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::proc {

// Confinement applied at spawn (docs/architecture.md, "Confinement").  The child is
// created in fresh user, mount, network, ipc, uts and cgroup namespaces and in
// a pid namespace of its own; root inside its user namespace is `host_uid` /
// `host_gid` outside.  The pid namespace is held by a tiny holder process as
// its init, so the child itself is an ordinary process there: signals from
// the parent (SEGV, ABRT, TERM) keep their default actions.  What can only
// be done once the program runs (an empty root, seccomp, rlimits) is the
// program's own job.
struct SandboxSpec {
  uid_t host_uid = 65534;
  gid_t host_gid = 65534;
  // If set, argv gets this flag and the child's PID as the parent sees it
  // (inside its namespace the child is not that number).
  std::string host_pid_flag;
  // (host directory, child fd): opened O_PATH (the last component not
  // through a symlink) by the child inside its new mount namespace, before
  // it becomes host_uid, for the program to bind-mount into its empty root
  // (common/sandbox.h).  A directory the parent opened cannot serve: the
  // kernel refuses to mount from another mount namespace; and host_uid may
  // have no search permission on the way to it.  One that cannot be opened
  // fails the child (status 126, the reason in its log).
  std::vector<std::pair<std::string, int>> mount_sources;
};

struct SpawnOptions {
  std::vector<std::string> argv;
  // (parent fd, child fd) pairs; every other fd is closed in the child.
  std::vector<std::pair<int, int>> fds;
  std::string log_path;  // stdout+stderr appended here; empty: inherit
  bool new_session = false;
  // cgroup.procs files (opened by the parent) the child joins by writing "0"
  // right after fork, before it runs anything of its own.
  std::vector<int> join_cgroup_fds;
  // Unconfined children only: before exec the child leaves the host's
  // network, IPC, UTS and mount namespaces (it keeps the filesystem: Unix
  // sockets and files by path), gives up every capability for good (the
  // bounding set is emptied and SECBIT_NOROOT locked, so root gets none back
  // at exec) and sets no_new_privs.  For a program that needs nothing
  // privileged, such as QEMU (docs/architecture.md, "Least privilege").
  bool drop_privileges = false;
  // With drop_privileges: the ids the child runs as (uid, gid, and at most
  // 8 supplementary groups); unset: it stays root, without capabilities.
  std::optional<std::pair<uid_t, gid_t>> run_as;
  std::vector<gid_t> groups;
  // With drop_privileges: the child also runs in a pid namespace of its own,
  // held by a holder process as its init (Child::ns_holder, as for a
  // sandboxed child), with a /proc of that namespace mounted over the
  // host's: it sees no other process of the host, and can signal none.
  bool new_pid_ns = false;
  // Set: spawn confined (see SandboxSpec); the cgroups are then joined by the
  // parent writing the child's PID before the child runs on.
  std::optional<SandboxSpec> sandbox;
  // Non-zero: RLIMIT_FSIZE for the child, so that no file it writes (its
  // log above all, which a guest or a driver can make it fill) grows past
  // this many bytes; SIGXFSZ is ignored, so a write past the limit fails
  // with EFBIG and the program runs on (docs/architecture.md, "Least
  // privilege").  Set before the program runs; it cannot raise it again.
  uint64_t file_size_limit = 0;
};

// The file_size_limit of the confined programs that write no file of their
// own beyond a log and small state: net drivers and vTPMs.  (A disk driver
// writes its images, so it has none; its guest-triggered log lines are rate
// limited.  QEMU's comes from the guest config, log_max_mib.)
inline constexpr uint64_t kConfinedLogLimit = uint64_t(64) << 20;

// Init of a sandboxed child's pid namespace: killed and reaped when this
// object goes (after the child it holds the namespace for has exited).
class NsHolder {
 public:
  NsHolder() = default;
  NsHolder(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  NsHolder(NsHolder&& o) noexcept : pid_(std::exchange(o.pid_, -1)), pidfd_(std::move(o.pidfd_)) {}
  NsHolder& operator=(NsHolder&& o) noexcept;
  NsHolder(const NsHolder&) = delete;
  NsHolder& operator=(const NsHolder&) = delete;
  ~NsHolder() { reset(); }
  pid_t pid() const { return pid_; }
  // Kills the holder and waits for it (a blocking wait of a few ms on a
  // loaded host: not on a restart's critical path).
  void reset();
  // Kills the holder and hands its pidfd over (readable once it died; the
  // caller then reaps `*pid`), so no one waits now.  Empty if none.
  UniqueFd kill_and_release(pid_t* pid);

 private:
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

struct Child {
  pid_t pid = -1;
  UniqueFd pidfd;      // readable when the child exits
  NsHolder ns_holder;  // sandboxed children only
};

Result<Child> spawn(const SpawnOptions& opts);

// Waits up to `timeout` for the child; returns its wait status if it exited.
// A child adopted from a predecessor (adopt()) is not ours to wait for: once
// it exited its status is kStatusUnknown.
inline constexpr int kStatusUnknown = -1;
Result<int> wait_for(const Child& c, std::chrono::milliseconds timeout);
// SIGTERM, then SIGKILL after `grace`; reaps; returns the wait status.
int stop(const Child& c, std::chrono::milliseconds grace);

// Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, the
// identity of a process across pid reuse; 0 when there is none.
uint64_t start_time(pid_t pid);
// A pidfd on `pid` if it is still the process that started at `start`.
Result<UniqueFd> pin(pid_t pid, uint64_t start);
// Takes over a process (and its pid-namespace holder, if any) that a
// predecessor started and recorded (pid, start time): a Child whose pidfd
// and holder work as for one spawned here, except that its wait status is
// unknown (kStatusUnknown).  An Error if either is gone or is another
// process now.
Result<Child> adopt(pid_t pid, uint64_t start, pid_t holder_pid = -1, uint64_t holder_start = 0);

// A record of a process that may outlive whoever started it (a QEMU whose
// hypervisor was killed): its pid and its start time (/proc/PID/stat), so a
// later process that reuses the pid is never taken for it.
Status write_record(const std::string& path, pid_t pid);
// The pid and start time a record written by write_record names; an Error
// for a missing or malformed one.
Result<std::pair<pid_t, uint64_t>> read_record(const std::string& path);
// SIGKILLs `pid` if it is still the process that started at `start`, and
// waits up to `wait` for it to go; false when it was gone (or another
// process) already.
bool kill_pinned(pid_t pid, uint64_t start, std::chrono::milliseconds wait);
// Kills the process a record names if it still runs (same pid and start
// time) and waits up to `wait` for it to go: its pid, or 0 when none ran.
// A missing record is 0; an unreadable one an Error.
Result<pid_t> kill_recorded(const std::string& path, std::chrono::milliseconds wait);

// Directory of the running executable (its siblings are the other binaries).
std::string exe_dir();
// Finds `name` on PATH; empty when absent.
std::string find_on_path(const std::string& name);
std::string describe_status(int wait_status);

}  // namespace axl::proc
