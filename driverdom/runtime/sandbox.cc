#include "driverdom/runtime/sandbox.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include <array>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>

namespace axl::driverdom {

namespace {

Status sys_error(const std::string& what) { return make_error(what + ": " + strerror(errno)); }

// What every driver's event loop needs: Asio's epoll reactor and timers,
// the control and health sockets (SCM_RIGHTS), the channel mapping and its
// eventfd doorbells, malloc, signals (SIGTERM handling, abort()), exit.
constexpr int kCommon[] = {
    SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(close),
    SCMP_SYS(recvmsg), SCMP_SYS(sendmsg), SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_pwait2), SCMP_SYS(poll),
    SCMP_SYS(ppoll), SCMP_SYS(pause), SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime),
    SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(madvise), SCMP_SYS(mremap),
    SCMP_SYS(brk), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(fcntl), SCMP_SYS(dup),
    SCMP_SYS(futex), SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday), SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn), SCMP_SYS(sigaltstack), SCMP_SYS(exit),
    SCMP_SYS(exit_group), SCMP_SYS(restart_syscall), SCMP_SYS(sched_yield),
    SCMP_SYS(getrandom), SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(lseek),
    // No open/openat: a confined driver has every fd it will use, so an
    // open is an escape attempt and kills it (it is then replaced).
};
// blk: requests against the image fd it was handed.
constexpr int kBlk[] = {SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(preadv),
                        SCMP_SYS(pwritev), SCMP_SYS(fsync), SCMP_SYS(fdatasync)};
// net: frames through the TAP fd it was handed with read/write (common);
// the TAP was configured before confinement.  Nothing beyond the common set.
constexpr std::array<int, 0> kNet{};

// Flags a fault-injection fork may not carry: no threads, no namespaces.
constexpr uint64_t kForbiddenCloneFlags =
    CLONE_THREAD | CLONE_VM | CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
    CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_PARENT;

struct CtxDeleter {
  void operator()(void* c) const { seccomp_release(c); }
};

Status add(scmp_filter_ctx ctx, int nr, unsigned argc = 0, const scmp_arg_cmp* args = nullptr) {
  int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, argc, args);
  if (rc < 0) {
    char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    std::string n = name ? name : std::to_string(nr);
    free(name);
    return make_error("seccomp rule for " + n + ": " + strerror(-rc));
  }
  return {};
}

Status set_rlimit(int resource, rlim_t value, const char* name) {
  rlimit r{value, value};
  if (::setrlimit(resource, &r) < 0) return sys_error(std::string("setrlimit ") + name);
  return {};
}

// pivot_root into an empty tmpfs, then make it read-only: afterwards no path
// leads anywhere (no /proc, /sys, /dev, state dir or sockets).
Status empty_root() {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
    return sys_error("make mounts private");
  // Any existing directory serves as the mount point; the mount is ours only.
  const char* at = "/tmp";
  if (::mount("axl-empty", at, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") < 0)
    return sys_error("mount tmpfs for the empty root");
  if (::chdir(at) < 0) return sys_error("chdir to the empty root");
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

Status load_seccomp(const SandboxPolicy& policy) {
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_KILL_PROCESS));
  if (!ctx) return make_error("seccomp_init failed");
  for (int nr : kCommon)
    if (auto s = add(ctx.get(), nr); !s) return s;
  for (int nr : policy.kind == Kind::kBlk ? std::span<const int>(kBlk) : std::span<const int>(kNet))
    if (auto s = add(ctx.get(), nr); !s) return s;
  // Signals only to itself (abort() raises SIGABRT with tgkill).
  scmp_arg_cmp self = SCMP_A0(SCMP_CMP_EQ, uint64_t(::getpid()));
  if (auto s = add(ctx.get(), SCMP_SYS(tgkill), 1, &self); !s) return s;
  // ioctl only to make an fd (non-)blocking or close-on-exec (Asio does).
  for (uint64_t req : {uint64_t(FIONBIO), uint64_t(FIOCLEX), uint64_t(FIONCLEX)}) {
    scmp_arg_cmp a = SCMP_A1(SCMP_CMP_EQ, req);
    if (auto s = add(ctx.get(), SCMP_SYS(ioctl), 1, &a); !s) return s;
  }
  if (policy.fault_injection) {
    scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, kForbiddenCloneFlags, 0);
    if (auto s = add(ctx.get(), SCMP_SYS(clone), 1, &a); !s) return s;
  }
  if (int rc = seccomp_load(ctx.get()); rc < 0)
    return make_error(std::string("seccomp_load: ") + strerror(-rc));
  return {};
}

Status enter_sandbox(const SandboxPolicy& policy) {
  // Descriptors: the channels, doorbells and images of its devices.
  if (auto s = set_rlimit(RLIMIT_NOFILE, 256, "NOFILE"); !s) return s;
  if (auto s = set_rlimit(RLIMIT_CORE, 0, "CORE"); !s) return s;
  // Counted per user namespace, so this is the driver alone; hog-pids is
  // meant to meet the pids cgroup limit instead.
  if (auto s = set_rlimit(RLIMIT_NPROC, policy.fault_injection ? 4096 : 1, "NPROC"); !s) return s;
#if !defined(__SANITIZE_ADDRESS__)
  // Sanitizers reserve terabytes of address space; elsewhere 4 GiB is far
  // above what channels and the heap need (the cgroup memory limit rules RSS).
  if (auto s = set_rlimit(RLIMIT_AS, rlim_t(4) << 30, "AS"); !s) return s;
#endif
  if (auto s = empty_root(); !s) return s;
  if (auto s = drop_capabilities(); !s) return s;
  // Not even a same-uid process outside may ptrace it or read its memory.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) return sys_error("PR_SET_DUMPABLE");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return sys_error("PR_SET_NO_NEW_PRIVS");
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer's check at exit clones a tracer thread, which the filter
  // kills; check now instead (everything live is still reachable here).
  __lsan_do_leak_check();
#endif
  return load_seccomp(policy);
}

}  // namespace axl::driverdom
