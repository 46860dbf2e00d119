#include "vtpm/sandbox.h"

#include <errno.h>
#include <linux/sched.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include "common/sandbox.h"

namespace axl::vtpm {

namespace {

// The state dir (/state): sealed state written to a temp file and renamed
// into place, old checkpoints unlinked, the directory scanned for them, files
// and the directory fsync'd.  The empty root leaves no other path to reach,
// so no argument is checked: unlink and rename are unlinkat and renameat from
// the cwd (/) and reach no further.  pread64, pwrite64, ftruncate, fallocate
// and msync (through a shared mapping) are file I/O on what it opened there;
// StateStore does not use them today.  mkdir, link, symlink, chmod and chown
// stay fatal.
constexpr int kStateFiles[] = {
    SCMP_SYS(open),      SCMP_SYS(openat),    SCMP_SYS(rename),    SCMP_SYS(renameat),
    SCMP_SYS(renameat2), SCMP_SYS(unlink),    SCMP_SYS(unlinkat),  SCMP_SYS(getdents64),
    SCMP_SYS(fsync),     SCMP_SYS(fdatasync), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
    SCMP_SYS(pread64),   SCMP_SYS(pwrite64),  SCMP_SYS(msync),
};

// The sockets it was handed (sendmsg and recvmsg are in the base set).
constexpr int kSockets[] = {
    SCMP_SYS(accept4),     SCMP_SYS(shutdown),    SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(recvfrom),
};

// Threads.  futex, set_robust_list, rseq, madvise, mprotect, munmap and exit
// are in the base set.  Once a process has more threads than 8 malloc
// arenas, glibc sizes them by the CPU count: it reads /sys, which is gone,
// then falls back to the CPU mask.
constexpr int kThreads[] = {SCMP_SYS(sched_getaffinity)};

// A thread shares memory, signal handlers and thread group with its creator
// (the kernel demands all three together), and enters no namespace.
constexpr uint64_t kThreadFlags = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD;
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
                                     CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;

sandbox::Limits limits() {
  sandbox::Limits l;
  // Listeners, connections, the state files being written, the log.
  l.nofile = 256;
  // Tasks of its uid in its own user namespace: itself and up to 63 threads.
  l.nproc = 64;
  return l;
}

}  // namespace

Status load_seccomp() {
  auto f = sandbox::Filter::create();
  if (!f) return f.error();
  if (auto s = f->allow_base(); !s) return s;
  if (auto s = f->allow(kStateFiles); !s) return s;
  if (auto s = f->allow(kSockets); !s) return s;
  if (auto s = f->allow(kThreads); !s) return s;
  // send() is sendto without an address: only to the connected peer.
  if (auto s = f->allow_if(SCMP_SYS(sendto), SCMP_A4(SCMP_CMP_EQ, 0)); !s) return s;
  if (auto s = f->allow_if(SCMP_SYS(clone), SCMP_A0(SCMP_CMP_MASKED_EQ,
                                                    kThreadFlags | kNamespaceFlags, kThreadFlags));
      !s)
    return s;
  if (auto s = f->fail_with(SCMP_SYS(clone3), ENOSYS); !s) return s;
  return f->load();
}

Status enter_sandbox(int state_fd) {
  // OpenSSL reads its configuration (and any provider it names) on first use;
  // do that now, while those files are still there to read.
  if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr) != 1)
    return make_error("cannot initialise OpenSSL");
  const sandbox::BindMount state{state_fd, kSandboxStateDir};
  if (auto s = sandbox::confine(limits(), {&state, 1}); !s) return s;
  return load_seccomp();
}

}  // namespace axl::vtpm
