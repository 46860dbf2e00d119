// The driver domain's own half of its confinement (docs/architecture.md,
// "Confinement").  The supervisor spawns it in fresh user, mount, pid, network, ipc and
// uts namespaces as an unprivileged uid (common/process.h, SandboxSpec) and
// hands it every fd it will use, connections included.  Once those are in
// hand and before it serves anything, the driver gives up the rest
// (common/sandbox.h: an empty read-only root, rlimits, every capability,
// no_new_privs) and loads the seccomp allow-list for its kind, under which
// any other syscall kills the process (SIGSYS, which the supervisor handles
// as a crash).
#pragma once
#include "common/result.h"
#include "driverdom/runtime/driver.h"

namespace axl::driverdom {

struct SandboxPolicy {
  Kind kind = Kind::kBlk;
  // Fault-injection drivers may also fork (the hog-pids hook exercises the
  // pids limit); nothing else is added for them.
  bool fault_injection = false;
};

// Loads the seccomp allow-list for `policy` into the calling process (it has
// to be single-threaded).  Sets no_new_privs as the kernel demands.
Status load_seccomp(const SandboxPolicy& policy);

// Every step, in order; the process needs CAP_SYS_ADMIN in its own user and
// mount namespace (root there, as the supervisor spawns it).
Status enter_sandbox(const SandboxPolicy& policy);

}  // namespace axl::driverdom
