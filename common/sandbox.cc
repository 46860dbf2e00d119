#include "common/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include <cstdlib>

#include "common/unique_fd.h"

namespace axl::sandbox {

namespace {

Status sys_error(const std::string& what) { return make_error(what + ": " + strerror(errno)); }

// What every confined event loop needs: Asio's epoll reactor and timers,
// its sockets (SCM_RIGHTS), mappings, eventfd doorbells, malloc, signals
// (SIGTERM handling, abort()), exit.
constexpr int kBase[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(close),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_pwait2),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(pause),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mprotect),
    SCMP_SYS(madvise),
    SCMP_SYS(mremap),
    SCMP_SYS(brk),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    SCMP_SYS(futex),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(sigaltstack),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(sched_yield),
    SCMP_SYS(getrandom),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(lseek),
    // No open/openat here: a process that holds every fd it will use has
    // nothing to open, so for it an open is an escape attempt.
};

Status set_rlimit(int resource, rlim_t value, const char* name) {
  rlimit r{value, value};
  if (::setrlimit(resource, &r) < 0) return sys_error(std::string("setrlimit ") + name);
  return {};
}

Status set_rlimits(const Limits& l) {
  if (auto s = set_rlimit(RLIMIT_NOFILE, l.nofile, "NOFILE"); !s) return s;
  if (auto s = set_rlimit(RLIMIT_CORE, 0, "CORE"); !s) return s;
  if (auto s = set_rlimit(RLIMIT_NPROC, l.nproc, "NPROC"); !s) return s;
#if !defined(__SANITIZE_ADDRESS__)
  // Sanitizers reserve terabytes of address space; elsewhere the limit is far
  // above what the process needs (a cgroup memory limit, if any, rules RSS).
  if (auto s = set_rlimit(RLIMIT_AS, l.address_space, "AS"); !s) return s;
#endif
  return {};
}

bool plain_target(const std::string& t) {
  return t.size() > 1 && t[0] == '/' && t.find('/', 1) == std::string::npos && t != "/." &&
         t != "/..";
}

// Clones the tree at `b.source_fd` (detached, so its flags can be set before
// anyone sees it) and attaches it at `at`.
Status attach(const BindMount& b, const std::string& at) {
  UniqueFd tree(::open_tree(b.source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (!tree) return sys_error("open_tree for " + b.target);
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                  (b.read_only ? MOUNT_ATTR_RDONLY : 0);
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
    return sys_error("restrict the mount for " + b.target);
  if (::move_mount(tree.get(), "", AT_FDCWD, at.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
    return sys_error("bind-mount " + b.target);
  return {};
}

// pivot_root into an empty tmpfs carrying `binds`, then make the tmpfs
// read-only: afterwards no path leads anywhere but into the binds (no /proc,
// /sys, /dev, host state or sockets).
Status empty_root(std::span<const BindMount> binds) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
    return sys_error("make mounts private");
  // Any existing directory serves as the mount point; the mount is ours only.
  const std::string at = "/tmp";
  if (::mount("axl-empty", at.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,mode=0555") < 0)
    return sys_error("mount tmpfs for the empty root");
  for (const BindMount& b : binds) {
    if (!plain_target(b.target)) return make_error("bad bind mount target '" + b.target + "'");
    const std::string dir = at + b.target;
    if (::mkdir(dir.c_str(), 0555) < 0)
      return sys_error("mkdir " + b.target + " in the empty root");
    if (auto s = attach(b, dir); !s) return s;
  }
  if (::chdir(at.c_str()) < 0) return sys_error("chdir to the empty root");
  if (::syscall(SYS_pivot_root, ".", ".") < 0) return sys_error("pivot_root");
  if (::umount2(".", MNT_DETACH) < 0) return sys_error("detach the old root");
  if (::chdir("/") < 0) return sys_error("chdir /");
  if (::mount(nullptr, "/", nullptr,
              MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0)
    return sys_error("remount the empty root read-only");
  return {};
}

Status drop_capabilities() {
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      return sys_error("drop capability bounding set");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    return sys_error("clear ambient capabilities");
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (::syscall(SYS_capset, &hdr, data) < 0) return sys_error("capset");
  return {};
}

}  // namespace

Status confine(const Limits& limits, std::span<const BindMount> binds) {
  // The sources are closed whatever happens: they lead into the host's tree.
  struct CloseSources {
    std::span<const BindMount> b;
    ~CloseSources() {
      for (const BindMount& m : b)
        if (m.source_fd >= 0) ::close(m.source_fd);
    }
  } close_sources{binds};
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer's check at exit clones a tracer thread, which a filter
  // kills; check now instead, while it can still read /proc and start that
  // thread (NPROC), and everything live is still reachable.
  __lsan_do_leak_check();
#endif
  if (auto s = set_rlimits(limits); !s) return s;
  if (auto s = empty_root(binds); !s) return s;
  if (auto s = drop_capabilities(); !s) return s;
  // Not even a same-uid process outside may ptrace it or read its memory.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) return sys_error("PR_SET_DUMPABLE");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return sys_error("PR_SET_NO_NEW_PRIVS");
  return {};
}

Result<Filter> Filter::create() {
  void* ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
  if (!ctx) return make_error("seccomp_init failed");
  return Filter(ctx);
}

Status Filter::add(uint32_t action, int nr, unsigned argc, const scmp_arg_cmp* args) {
  int rc = seccomp_rule_add_array(ctx_.get(), action, nr, argc, args);
  if (rc < 0) {
    char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    std::string n = name ? name : std::to_string(nr);
    free(name);
    return make_error("seccomp rule for " + n + ": " + strerror(-rc));
  }
  return {};
}

Status Filter::allow(int nr) { return add(SCMP_ACT_ALLOW, nr, 0, nullptr); }

Status Filter::allow(std::span<const int> nrs) {
  for (int nr : nrs)
    if (auto s = allow(nr); !s) return s;
  return {};
}

Status Filter::allow_if(int nr, const scmp_arg_cmp& cmp) {
  return add(SCMP_ACT_ALLOW, nr, 1, &cmp);
}

Status Filter::fail_with(int nr, int err) {
  return add(SCMP_ACT_ERRNO(uint32_t(err)), nr, 0, nullptr);
}

Status Filter::allow_base() {
  if (auto s = allow(kBase); !s) return s;
  // Signals only to itself (abort() raises SIGABRT with tgkill).
  if (auto s = allow_if(SCMP_SYS(tgkill), SCMP_A0(SCMP_CMP_EQ, uint64_t(::getpid()))); !s) return s;
  // ioctl only to make an fd (non-)blocking or close-on-exec (Asio does).
  for (uint64_t req : {uint64_t(FIONBIO), uint64_t(FIOCLEX), uint64_t(FIONCLEX)})
    if (auto s = allow_if(SCMP_SYS(ioctl), SCMP_A1(SCMP_CMP_EQ, req)); !s) return s;
#if defined(__SANITIZE_ADDRESS__)
  // ASan probes whether memory is readable by writing it into a pipe (when a
  // thread starts, for one).
  if (auto s = allow(SCMP_SYS(pipe2)); !s) return s;
#endif
  return {};
}

Status Filter::load() {
  if (int rc = seccomp_load(ctx_.get()); rc < 0)
    return make_error(std::string("seccomp_load: ") + strerror(-rc));
  return {};
}

}  // namespace axl::sandbox
