#include "common/process.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/log.h"

namespace axl::proc {

namespace {
int pidfd_open(pid_t pid) { return int(::syscall(SYS_pidfd_open, pid, 0)); }

// Everything the child needs, prepared by the parent: after a raw clone()
// the child must not allocate (another thread may have held malloc's lock).
constexpr size_t kMaxFds = 64;
constexpr size_t kPidDigits = 12;
struct ExecPlan {
  char** argv = nullptr;
  std::pair<int, int> fds[kMaxFds];
  size_t nfds = 0;
  int log_fd = -1;  // -1: stdout/stderr are in `fds` (inherited)
  bool new_session = false;
  const int* cgroup_fds = nullptr;  // joined by writing "0" (unconfined only)
  size_t ncgroup_fds = 0;
  // Confined only: the parent sends our PID (its view) on sync_fd once it
  // has mapped our ids; the digits go into pid_slot (kPidDigits + 1 bytes).
  int sync_fd = -1;
  int sync_peer = -1;
  char* pid_slot = nullptr;
  int exe_fd = -1;               // confined: exec this fd (the path may not be reachable)
  bool drop_privileges = false;  // SpawnOptions::drop_privileges
  bool mount_proc = false;       // SpawnOptions::new_pid_ns: a /proc of its own pid namespace
  uint64_t file_size_limit = 0;  // SpawnOptions::file_size_limit
  bool switch_ids = false;       // SpawnOptions::run_as
  uid_t uid = 0;
  gid_t gid = 0;
  gid_t groups[8] = {};
  size_t ngroups = 0;
  // Confined only: directories to open in the new mount namespace, and the
  // child fd each goes to (SandboxSpec::mount_sources).
  const char* source_paths[kMaxFds] = {};
  int source_fds[kMaxFds] = {};
  size_t nsources = 0;
};

// SpawnOptions::drop_privileges, in the child (no allocation).  False, with
// the reason written to `log`, if any step failed: the child must not run
// with more than it was meant to.
bool drop_privileges_now(const ExecPlan& p, int log) {
  if (::unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS) != 0) {
    dprintf(log, "drop privileges: unshare: %s\n", strerror(errno));
    return false;
  }
  // Mounts made on either side stay there (the child can make none anyway).
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    dprintf(log, "drop privileges: mount: %s\n", strerror(errno));
    return false;
  }
  // In a pid namespace of its own, the host's /proc would show every host
  // process, and its own pids would name others there.
  if (p.mount_proc &&
      ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    dprintf(log, "drop privileges: mount /proc: %s\n", strerror(errno));
    return false;
  }
  if (::prctl(PR_SET_SECUREBITS,
              SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                  SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED,
              0, 0, 0) != 0) {
    dprintf(log, "drop privileges: securebits: %s\n", strerror(errno));
    return false;
  }
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      dprintf(log, "drop privileges: bounding set: %s\n", strerror(errno));
      return false;
    }
  }
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  // NO_SETUID_FIXUP keeps the capabilities over the id change: they are
  // cleared just after, explicitly.
  if (p.switch_ids &&
      (::setgroups(p.ngroups, p.groups) != 0 || ::setresgid(p.gid, p.gid, p.gid) != 0 ||
       ::setresuid(p.uid, p.uid, p.uid) != 0)) {
    dprintf(log, "drop privileges: cannot become uid %d: %s\n", int(p.uid), strerror(errno));
    return false;
  }
  struct __user_cap_header_struct hdr {
    _LINUX_CAPABILITY_VERSION_3, 0
  };
  struct __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &hdr, data) != 0 || ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    dprintf(log, "drop privileges: %s\n", strerror(errno));
    return false;
  }
  return true;
}

void put_digits(char* slot, long v) {
  char tmp[kPidDigits];
  size_t n = 0;
  do tmp[n++] = char('0' + v % 10), v /= 10;
  while (v && n < kPidDigits);
  for (size_t i = 0; i < n; ++i) slot[i] = tmp[n - 1 - i];
  slot[n] = 0;
}

[[noreturn]] void child_exec(const ExecPlan& p) {
  for (size_t i = 0; i < p.ncgroup_fds; ++i)
    if (::write(p.cgroup_fds[i], "0", 1) != 1) _exit(126);
  // The mount sources, opened while this process still has the parent's
  // uid (see SandboxSpec), then handed over like the other fds.
  int sources[kMaxFds];
  if (p.sync_fd >= 0) {
    ::close(p.sync_peer);  // so a parent that dies leaves us reading EOF
    int32_t host_pid = 0;
    if (::read(p.sync_fd, &host_pid, sizeof host_pid) != sizeof host_pid) _exit(126);
    ::close(p.sync_fd);
    for (size_t i = 0; i < p.nsources; ++i) {
      sources[i] = ::open(p.source_paths[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sources[i] < 0) {
        dprintf(p.log_fd >= 0 ? p.log_fd : 2, "sandbox: cannot open %s: %s\n", p.source_paths[i],
                strerror(errno));
        _exit(126);
      }
    }
    // Ids are mapped now: become root of our user namespace, which is the
    // unprivileged host_uid/host_gid outside.  glibc's setres[ug]id signal
    // every thread it believes the process has; in a child made by a raw
    // clone that list is the parent's.  It is safe here only because the
    // one spawner that confines (the supervisor) is single-threaded; a
    // multithreaded spawner must fork() instead, as the QEMU pid namespace
    // path below does.
    if (::setgroups(0, nullptr) < 0 || ::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0) {
      dprintf(p.log_fd >= 0 ? p.log_fd : 2, "sandbox: cannot switch ids: %s\n", strerror(errno));
      _exit(126);
    }
    if (p.pid_slot) put_digits(p.pid_slot, host_pid);
  }
  if (p.new_session) ::setsid();
  if (p.drop_privileges && !drop_privileges_now(p, p.log_fd >= 0 ? p.log_fd : 2)) _exit(126);
  // What a child creates (QEMU's console log and sockets, a driver's files)
  // is its owner's only, whatever umask the host was started with.
  ::umask(0077);
  if (p.file_size_limit) {
    struct rlimit fsize {
      p.file_size_limit, p.file_size_limit
    };
    if (::setrlimit(RLIMIT_FSIZE, &fsize) != 0) {
      dprintf(p.log_fd >= 0 ? p.log_fd : 2, "cannot set RLIMIT_FSIZE: %s\n", strerror(errno));
      _exit(126);
    }
    ::signal(SIGXFSZ, SIG_IGN);  // stays ignored across exec
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int devnull = ::open("/dev/null", O_RDWR);
  // Move every fd we hand over above the target range first, so a mapping
  // like (5 -> 3), (3 -> 5) cannot clobber itself.
  std::pair<int, int> fds[kMaxFds];
  size_t nfds = 0;
  for (size_t i = 0; i < p.nfds; ++i)
    fds[nfds++] = {::fcntl(p.fds[i].first, F_DUPFD_CLOEXEC, 100), p.fds[i].second};
  for (size_t i = 0; i < p.nsources; ++i)
    fds[nfds++] = {::fcntl(sources[i], F_DUPFD_CLOEXEC, 100), p.source_fds[i]};
  int exe = p.exe_fd >= 0 ? ::fcntl(p.exe_fd, F_DUPFD_CLOEXEC, 100) : -1;
  ::dup2(devnull, 0);
  ::dup2(p.log_fd >= 0 ? p.log_fd : devnull, 1);
  ::dup2(p.log_fd >= 0 ? p.log_fd : devnull, 2);
  for (size_t i = 0; i < nfds; ++i) ::dup2(fds[i].first, fds[i].second);  // clears CLOEXEC
  int maxfd = 3;
  for (size_t i = 0; i < nfds; ++i) maxfd = std::max(maxfd, fds[i].second + 1);
  for (int fd = 3; fd < maxfd; ++fd) {
    bool keep = false;
    for (size_t i = 0; i < nfds; ++i) keep |= fds[i].second == fd;
    if (!keep) ::close(fd);
  }
  if (exe >= 0) {
    int e = ::fcntl(exe, F_DUPFD_CLOEXEC, maxfd);
    if (e > maxfd) ::syscall(SYS_close_range, maxfd, e - 1, 0);
    ::syscall(SYS_close_range, e + 1, ~0U, 0);
    ::syscall(SYS_execveat, e, "", p.argv, environ, AT_EMPTY_PATH);
  } else {
    ::syscall(SYS_close_range, maxfd, ~0U, 0);
    ::execv(p.argv[0], p.argv);
  }
  dprintf(2, "cannot exec %s: %s\n", p.argv[0], strerror(errno));
  _exit(127);
}

// fork() without glibc's wrapper, so namespace flags can be given.
pid_t raw_clone(unsigned long flags) {
  return pid_t(::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, 0));
}

Status write_file(const std::string& path, const std::string& text) {
  UniqueFd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!f || ::write(f.get(), text.data(), text.size()) != ssize_t(text.size()))
    return make_error("cannot write " + path + ": " + strerror(errno));
  return {};
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// A pid namespace whose init does nothing but hold it.  It outlives its
// creator on purpose (no PR_SET_PDEATHSIG): the domain it holds must survive
// a crash of the supervisor, whose successor adopts both (or `axl host down`
// kills both by their records).
Result<NsHolder> make_pid_ns_holder() {
  pid_t h = raw_clone(CLONE_NEWPID);
  if (h < 0) return make_error(std::string("cannot create a pid namespace: ") + strerror(errno));
  if (h == 0) {
    ::syscall(SYS_close_range, 0, ~0U, 0);
    for (;;) ::pause();
  }
  UniqueFd fd(pidfd_open(h));
  if (!fd) {
    int e = errno;
    kill_and_reap(h);
    return make_error(std::string("pidfd_open: ") + strerror(e));
  }
  return NsHolder(h, std::move(fd));
}

Result<Child> spawn_confined(const SpawnOptions& o, ExecPlan& plan, char* pid_slot) {
  const SandboxSpec& sb = *o.sandbox;
  UniqueFd exe(::open(plan.argv[0], O_PATH | O_CLOEXEC));
  if (!exe) return make_error(std::string("cannot open ") + plan.argv[0] + ": " + strerror(errno));
  int sp[2];
  if (::pipe2(sp, O_CLOEXEC) < 0) return make_error(std::string("pipe2: ") + strerror(errno));
  UniqueFd sync_r(sp[0]), sync_w(sp[1]);
  auto holder = make_pid_ns_holder();
  if (!holder) return holder.error();
  UniqueFd own_ns(::open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC));
  if (!own_ns) return make_error(std::string("cannot open own pid namespace: ") + strerror(errno));
  // Our next child goes into the holder's pid namespace; this thread's own
  // pid namespace does not change, and is restored for children right after.
  UniqueFd hfd(pidfd_open(holder->pid()));
  if (!hfd || ::setns(hfd.get(), CLONE_NEWPID) < 0)
    return make_error(std::string("cannot enter the new pid namespace: ") + strerror(errno));
  plan.sync_fd = sync_r.get();
  plan.sync_peer = sync_w.get();
  plan.pid_slot = pid_slot;
  plan.exe_fd = exe.get();
  for (const auto& [path, fd] : sb.mount_sources) {
    plan.source_paths[plan.nsources] = path.c_str();
    plan.source_fds[plan.nsources++] = fd;
  }
  pid_t pid = raw_clone(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS);
  if (pid == 0) child_exec(plan);
  int clone_errno = errno;
  if (::setns(own_ns.get(), CLONE_NEWPID) < 0) {
    // Every later child would land in the wrong namespace: unrecoverable.
    AXL_ERROR("cannot return to own pid namespace: %s", strerror(errno));
    std::abort();
  }
  if (pid < 0)
    return make_error(std::string("cannot create the sandbox namespaces (user namespaces "
                                  "unavailable?): ") +
                      strerror(clone_errno));
  sync_r.reset();
  auto fail = [&](Error e) -> Result<Child> {
    kill_and_reap(pid);
    return e;
  };
  const std::string proc = "/proc/" + std::to_string(pid);
  if (auto s = write_file(proc + "/uid_map", "0 " + std::to_string(sb.host_uid) + " 1\n"); !s)
    return fail(s.error());
  if (auto s = write_file(proc + "/gid_map", "0 " + std::to_string(sb.host_gid) + " 1\n"); !s)
    return fail(s.error());
  const std::string pid_text = std::to_string(pid);
  for (int fd : o.join_cgroup_fds)
    if (::write(fd, pid_text.data(), pid_text.size()) != ssize_t(pid_text.size()))
      return fail(
          make_error(std::string("cannot move the child into its cgroup: ") + strerror(errno)));
  int32_t host_pid = pid;
  if (::write(sync_w.get(), &host_pid, sizeof host_pid) != sizeof host_pid)
    return fail(make_error(std::string("cannot release the child: ") + strerror(errno)));
  Child c;
  c.pid = pid;
  c.pidfd.reset(pidfd_open(pid));
  c.ns_holder = std::move(holder).value();
  if (!c.pidfd) return fail(make_error(std::string("pidfd_open: ") + strerror(errno)));
  return c;
}
}  // namespace

NsHolder& NsHolder::operator=(NsHolder&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = std::exchange(o.pid_, -1);
    pidfd_ = std::move(o.pidfd_);
  }
  return *this;
}

UniqueFd NsHolder::kill_and_release(pid_t* pid) {
  *pid = pid_;
  if (pid_ <= 0) return UniqueFd();
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  pid_ = -1;
  return std::move(pidfd_);
}

void NsHolder::reset() {
  if (pid_ <= 0) return;
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  pidfd_.reset();
}

Result<Child> spawn(const SpawnOptions& o) {
  if (o.argv.empty()) return make_error("spawn: empty argv");
  UniqueFd log;
  if (!o.log_path.empty()) {
    log.reset(
        ::open(o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!log) return make_error("cannot open log " + o.log_path + ": " + strerror(errno));
  }
  std::vector<char*> argv;
  for (auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  std::vector<char> pid_slot(kPidDigits + 1, '0');
  pid_slot.back() = 0;
  std::string pid_flag;
  if (o.sandbox && !o.sandbox->host_pid_flag.empty()) {
    pid_flag = o.sandbox->host_pid_flag;
    argv.push_back(pid_flag.data());
    argv.push_back(pid_slot.data());
  }
  argv.push_back(nullptr);
  if (::access(argv[0], X_OK) != 0) return make_error(std::string("cannot execute ") + argv[0]);
  ExecPlan plan;
  plan.argv = argv.data();
  if (o.fds.size() + 2 + (o.sandbox ? o.sandbox->mount_sources.size() : 0) > kMaxFds)
    return make_error("spawn: too many fds");
  if (o.log_path.empty()) {
    // Inherit stdout/stderr: map them onto themselves, first, so that a
    // mapping the caller gives for 1 or 2 (applied later) wins.
    plan.fds[plan.nfds++] = {1, 1};
    plan.fds[plan.nfds++] = {2, 2};
  }
  for (auto& f : o.fds) plan.fds[plan.nfds++] = f;
  plan.log_fd = log.get();
  plan.new_session = o.new_session;
  plan.file_size_limit = o.file_size_limit;
  if (o.sandbox) return spawn_confined(o, plan, pid_slot.data());
  plan.drop_privileges = o.drop_privileges;
  if (o.run_as) {
    if (!o.drop_privileges || o.groups.size() > std::size(plan.groups))
      return make_error("spawn: run_as needs drop_privileges and at most 8 groups");
    plan.switch_ids = true;
    plan.uid = o.run_as->first;
    plan.gid = o.run_as->second;
    for (gid_t g : o.groups) plan.groups[plan.ngroups++] = g;
  }
  plan.cgroup_fds = o.join_cgroup_fds.data();
  plan.ncgroup_fds = o.join_cgroup_fds.size();
  Child c;
  UniqueFd own_ns;
  if (o.new_pid_ns) {
    if (!o.drop_privileges) return make_error("spawn: new_pid_ns needs drop_privileges");
    auto holder = make_pid_ns_holder();
    if (!holder) return holder.error();
    c.ns_holder = std::move(holder).value();
    own_ns.reset(::open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC));
    if (!own_ns)
      return make_error(std::string("cannot open own pid namespace: ") + strerror(errno));
    // As for a confined child: only this thread's next child goes there.
    UniqueFd hfd(pidfd_open(c.ns_holder.pid()));
    if (!hfd || ::setns(hfd.get(), CLONE_NEWPID) < 0)
      return make_error(std::string("cannot enter the new pid namespace: ") + strerror(errno));
    plan.mount_proc = true;
  }
  // glibc's fork (not a raw clone): it resets the child's view of the
  // parent's threads, which setresuid's all-threads broadcast would wait on.
  // After the setns above, it too lands in the new pid namespace.
  pid_t pid = ::fork();
  if (pid == 0) child_exec(plan);
  int clone_errno = errno;
  if (own_ns && ::setns(own_ns.get(), CLONE_NEWPID) < 0) {
    AXL_ERROR("cannot return to own pid namespace: %s", strerror(errno));
    std::abort();
  }
  if (pid < 0) return make_error(std::string("fork: ") + strerror(clone_errno));
  c.pid = pid;
  c.pidfd.reset(pidfd_open(pid));
  if (!c.pidfd) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return make_error(std::string("pidfd_open: ") + strerror(errno));
  }
  return c;
}

Result<int> wait_for(const Child& c, std::chrono::milliseconds timeout) {
  pollfd p{c.pidfd.get(), POLLIN, 0};
  int r;
  do r = ::poll(&p, 1, int(timeout.count()));
  while (r < 0 && errno == EINTR);
  if (r <= 0) return make_error("still running");
  int st = 0;
  if (::waitpid(c.pid, &st, 0) < 0) {
    // Not our child (adopted from a predecessor): it exited, how is its
    // reaper's to know.
    if (errno == ECHILD) return kStatusUnknown;
    return make_error(std::string("waitpid: ") + strerror(errno));
  }
  return st;
}

int stop(const Child& c, std::chrono::milliseconds grace) {
  ::syscall(SYS_pidfd_send_signal, c.pidfd.get(), SIGTERM, nullptr, 0);
  auto st = wait_for(c, grace);
  if (st) return *st;
  ::syscall(SYS_pidfd_send_signal, c.pidfd.get(), SIGKILL, nullptr, 0);
  auto st2 = wait_for(c, std::chrono::milliseconds(10000));
  return st2 ? *st2 : -1;
}

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  std::string s(buf);
  return s.substr(0, s.rfind('/'));
}

std::string find_on_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

std::string describe_status(int st) {
  if (st == kStatusUnknown) return "exited (status unknown: adopted, not our child)";
  if (WIFEXITED(st)) return "exited " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("killed by ") + strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

// Field 22 of /proc/PID/stat, in clock ticks since boot; 0 when gone.
uint64_t start_time(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  const auto close = line.rfind(')');  // the command may hold spaces and ')'
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

Result<UniqueFd> pin(pid_t pid, uint64_t start) {
  if (pid <= 1 || !start) return make_error("no such process");
  UniqueFd fd(pidfd_open(pid));
  if (!fd) return make_error("pid " + std::to_string(pid) + " is gone");
  // Checked after the pidfd pins it: the start time names the process held.
  if (start_time(pid) != start)
    return make_error("pid " + std::to_string(pid) + " is another process now");
  return fd;
}

Result<Child> adopt(pid_t pid, uint64_t start, pid_t holder_pid, uint64_t holder_start) {
  auto fd = pin(pid, start);
  if (!fd) return fd.error();
  Child c;
  c.pid = pid;
  c.pidfd = std::move(fd).value();
  if (holder_pid > 0) {
    auto h = pin(holder_pid, holder_start);
    if (!h) return make_error("its pid-namespace holder: " + h.error().message);
    c.ns_holder = NsHolder(holder_pid, std::move(h).value());
  }
  return c;
}

Status write_record(const std::string& path, pid_t pid) {
  const uint64_t t = start_time(pid);
  if (!t) return make_error("no process " + std::to_string(pid) + " to record");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << pid << " " << t << "\n";
    if (!f.flush()) return make_error("cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error("cannot write " + path + ": " + strerror(errno));
  return {};
}

Result<std::pair<pid_t, uint64_t>> read_record(const std::string& path) {
  std::ifstream f(path);
  if (!f) return make_error("no process record " + path);
  long long pid = 0;
  unsigned long long t = 0;
  if (!(f >> pid >> t) || pid <= 1 || pid > INT32_MAX || !t)
    return make_error("malformed process record " + path);
  return std::pair<pid_t, uint64_t>(pid_t(pid), uint64_t(t));
}

Result<pid_t> kill_recorded(const std::string& path, std::chrono::milliseconds wait) {
  if (::access(path.c_str(), F_OK) != 0) return pid_t(0);
  auto r = read_record(path);
  if (!r) return r.error();
  return kill_pinned(r->first, r->second, wait) ? r->first : pid_t(0);
}

bool kill_pinned(pid_t pid, uint64_t start, std::chrono::milliseconds wait) {
  auto fd = pin(pid, start);
  if (!fd || ::syscall(SYS_pidfd_send_signal, fd->get(), SIGKILL, nullptr, 0) != 0) return false;
  pollfd p{fd->get(), POLLIN, 0};
  (void)::poll(&p, 1, int(wait.count()));
  return true;
}

}  // namespace axl::proc
