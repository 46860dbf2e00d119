#include "driverdom/runtime/sandbox.h"

#include <linux/sched.h>

#include <array>
#include <span>

#include "common/sandbox.h"
#include "driverdom/blk/io_ring.h"

namespace axl::driverdom {

namespace {

// blk: requests against the image fd it was handed.
// With its I/O ring (made before the sandbox; io_uring_setup stays out):
// submitting and reaping, and installing image fds, which the ring's own
// restrictions confine to read, write and fsync (driverdom/blk/io_ring.h).
constexpr int kBlk[] = {
    SCMP_SYS(pread64), SCMP_SYS(pwrite64),  SCMP_SYS(preadv),         SCMP_SYS(pwritev),
    SCMP_SYS(fsync),   SCMP_SYS(fdatasync), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)};
// net: frames through the TAP fd it was handed with read/write (the base
// set); the TAP was configured before confinement.  Nothing beyond that.
constexpr std::array<int, 0> kNet{};

// Flags a fault-injection fork may not carry: no threads, no namespaces.
constexpr uint64_t kForbiddenCloneFlags = CLONE_THREAD | CLONE_VM | CLONE_NEWNS | CLONE_NEWUSER |
                                          CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                                          CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_PARENT;

}  // namespace

Status load_seccomp(const SandboxPolicy& policy) {
  auto f = sandbox::Filter::create();
  if (!f) return f.error();
  if (auto s = f->allow_base(); !s) return s;
  if (auto s = f->allow(policy.kind == Kind::kBlk ? std::span<const int>(kBlk)
                                                  : std::span<const int>(kNet));
      !s)
    return s;
  if (policy.fault_injection) {
    if (auto s = f->allow_if(SCMP_SYS(clone), SCMP_A0(SCMP_CMP_MASKED_EQ, kForbiddenCloneFlags, 0));
        !s)
      return s;
  }
  return f->load();
}

Status enter_sandbox(const SandboxPolicy& policy) {
  sandbox::Limits limits;
  // Descriptors: the channels, doorbells and images of its devices.
  limits.nofile = 256;
  // Counted per user namespace, so this is the driver alone; hog-pids is
  // meant to meet the pids cgroup limit instead.
  // A blk driver's I/O ring adds the kernel's io-wq threads, which count.
  limits.nproc = policy.fault_injection      ? 4096
                 : policy.kind == Kind::kBlk ? blk::IoRing::kProcesses
                                             : 1;
  if (auto s = sandbox::confine(limits); !s) return s;
  return load_seccomp(policy);
}

}  // namespace axl::driverdom
