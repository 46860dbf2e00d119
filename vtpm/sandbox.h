// The vTPM domain's confinement: the driver domains' mechanics
// (common/sandbox.h) with an allow-list of its own.  The supervisor spawns it
// in fresh user, mount, pid, network, ipc and uts namespaces as uid 65534
// (common/process.h, SandboxSpec) and hands it everything as fds: its state
// dir (opened inside its mount namespace), the host key, the boot's event
// log, and sockets already listening (QEMU's control socket, the host tools'
// command socket, the TCP command port).  After reading the key and the log,
// and before it reads any stored state or a byte from a guest, it confines
// itself here: an empty read-only root holding only the state dir at /state,
// no capabilities, no_new_privs, not dumpable, rlimits, and the filter below.
//
// The filter is the drivers' base set plus what the vTPM does in service:
//  - files in its state dir (StateStore: temp file, rename into place, unlink
//    the previous checkpoint, scan for checkpoints).  The empty root makes
//    every path lead there or nowhere, so open/openat/renameat/unlinkat need
//    no argument checks; mkdir, link, symlink, chmod and chown stay fatal;
//  - the sockets it was handed: accept4 on the listeners, and on connections
//    send/recv (SCM_RIGHTS for CMD_SET_DATAFD and the handover), shutdown and
//    socket options.  socket, bind, connect and listen stay fatal;
//  - threads (a connection may be served on a thread of its own): clone only
//    with CLONE_THREAD|CLONE_VM|CLONE_SIGHAND and no namespace flag, clone3
//    fails with ENOSYS so glibc falls back to clone, whose flags a filter can
//    see.  fork, exec, ptrace and signals to others stay fatal.
#pragma once
#include "common/result.h"

namespace axl::vtpm {

// Where the state dir is, once confined.
inline constexpr const char* kSandboxStateDir = "/state";

// Loads the vTPM's allow-list into the calling process (still single-
// threaded: threads started later inherit it).
Status load_seccomp();

// Every step, in order; `state_fd` (a directory opened inside this process's
// mount namespace) becomes /state and is closed.  Loads OpenSSL's
// configuration first, while the files it names can still be read.
Status enter_sandbox(int state_fd);

}  // namespace axl::vtpm
