// A confined process's own half of its confinement (docs/architecture.md,
// "Confinement"), shared by the driver domains (driverdom/runtime/sandbox.h)
// and the vTPM domain (vtpm/sandbox.h).  The spawner has already put the
// process in fresh user, mount, pid, network, ipc and uts namespaces as an
// unprivileged uid (common/process.h, SandboxSpec).  Once the program holds
// every fd it will use, it gives up the rest here: rlimits, an empty
// read-only root (carrying only the bind mounts it asks for), every
// capability, dumpability and new privileges, and then loads its own seccomp
// allow-list, under which any other syscall kills the process (SIGSYS, which
// the supervisor handles as a crash).
#pragma once
#include <seccomp.h>
#include <sys/resource.h>

#include <memory>
#include <span>
#include <string>

#include "common/result.h"

namespace axl::sandbox {

// A directory to carry into the empty root.  The source must be an fd
// (O_PATH is enough) opened inside this process's own mount namespace: the
// kernel refuses to mount from another one (common/process.h, SandboxSpec's
// mount_sources, opens it there).  confine() closes it, so that no fd into
// the host's tree (whose `..` would lead out) is left once the root is empty.
struct BindMount {
  int source_fd = -1;
  std::string target;  // one level below the new root, e.g. "/state"
  // Always mounted nosuid, nodev, noexec; read-write unless this is set.
  bool read_only = false;
};

struct Limits {
  rlim_t nofile = 256;
  // Tasks (threads included) of this uid in its user namespace, which only
  // this process has: 1 means no fork and no thread.
  rlim_t nproc = 1;
  rlim_t address_space = rlim_t(4) << 30;  // ignored in sanitizer builds
};

// Every step but seccomp, in order: rlimits (and no core dumps), the empty
// root with `binds`, capabilities dropped, not dumpable, no_new_privs.  The
// process needs CAP_SYS_ADMIN in its own user and mount namespace (root
// there, as the spawner makes it).  Load the seccomp filter right after.
Status confine(const Limits& limits, std::span<const BindMount> binds = {});

// A seccomp filter under construction; any syscall it does not name kills
// the whole process.
class Filter {
 public:
  static Result<Filter> create();
  // The calls every confined Axolotl process needs: an Asio event loop
  // (epoll, timerfds), reading and writing the fds it was handed,
  // SCM_RIGHTS on its sockets, malloc, signal handling, abort() and exit.
  Status allow_base();
  Status allow(int nr);
  Status allow(std::span<const int> nrs);
  // Allowed when the syscall's arguments pass `cmp` (one comparison).
  Status allow_if(int nr, const scmp_arg_cmp& cmp);
  // The call fails with `err` instead of killing (e.g. clone3 -> ENOSYS:
  // glibc then falls back to clone, whose flags a filter can inspect).
  Status fail_with(int nr, int err);
  // Loads it into the calling thread, and so into every thread it starts
  // later; sets no_new_privs, as the kernel demands.
  Status load();

 private:
  struct Release {
    void operator()(void* ctx) const { seccomp_release(ctx); }
  };
  explicit Filter(void* ctx) : ctx_(ctx) {}
  Status add(uint32_t action, int nr, unsigned argc, const scmp_arg_cmp* args);
  std::unique_ptr<void, Release> ctx_;
};

}  // namespace axl::sandbox
