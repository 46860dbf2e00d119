// The seccomp allow-lists, tried in forked children: a call outside a
// driver kind's list kills the child by SIGSYS, a call on it works.
#include "driverdom/runtime/sandbox.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

namespace axl::driverdom {
namespace {

// Runs `body` in a child under `policy`; returns its wait status.  The
// child exits 0 when `body` returns true, 1 when false, 2 when the filter
// could not be loaded.
int run_confined(const SandboxPolicy& policy, const std::function<bool()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (auto s = load_seccomp(policy); !s) {
      fprintf(stderr, "%s\n", s.error().message.c_str());
      _exit(2);
    }
    _exit(body() ? 0 : 1);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

bool killed_by_sigsys(int st) { return WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS; }
bool exited_ok(int st) { return WIFEXITED(st) && WEXITSTATUS(st) == 0; }

const SandboxPolicy kBlkPolicy{Kind::kBlk, false};
const SandboxPolicy kNetPolicy{Kind::kNet, false};

TEST(Seccomp, BlkImageIoWorks) {
  char path[] = "/tmp/axl-sandbox-test.XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  int st = run_confined(kBlkPolicy, [fd] {
    char out[512], in[512];
    for (size_t i = 0; i < sizeof out; ++i) out[i] = char(i * 7);
    if (::pwrite(fd, out, sizeof out, 4096) != ssize_t(sizeof out)) return false;
    if (::fdatasync(fd) != 0 || ::fsync(fd) != 0) return false;
    if (::pread(fd, in, sizeof in, 4096) != ssize_t(sizeof in)) return false;
    return memcmp(in, out, sizeof in) == 0;
  });
  ::close(fd);
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
}

TEST(Seccomp, ControlSocketWithFdsWorks) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
  for (const SandboxPolicy& p : {kBlkPolicy, kNetPolicy}) {
    int st = run_confined(p, [&] {
      // Passes an fd over the socket as the hypervisor's attach does.
      char byte = 'x';
      iovec iov{&byte, 1};
      alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))]{};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = ctl;
      mh.msg_controllen = sizeof ctl;
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &sp[0], sizeof(int));
      if (::sendmsg(sp[0], &mh, MSG_NOSIGNAL) != 1) return false;
      mh.msg_controllen = sizeof ctl;
      if (::recvmsg(sp[1], &mh, MSG_CMSG_CLOEXEC) != 1) return false;
      int got = -1;
      memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof got);
      return ::close(got) == 0;
    });
    EXPECT_TRUE(exited_ok(st)) << "status " << st;
  }
  ::close(sp[0]);
  ::close(sp[1]);
}

TEST(Seccomp, NetMayNotTouchBlockIo) {
  int st = run_confined(kNetPolicy, [] {
    char b[8];
    (void)::pread(0, b, sizeof b, 0);
    return true;
  });
  EXPECT_TRUE(killed_by_sigsys(st)) << "status " << st;
}

TEST(Seccomp, SocketsPtraceKillAndExecAreFatal) {
  const std::vector<std::function<bool()>> attempts = {
      [] { return ::socket(AF_INET, SOCK_STREAM, 0) >= 0; },
      [] { return ::socket(AF_UNIX, SOCK_SEQPACKET, 0) >= 0; },
      [] { return ::ptrace(PTRACE_ATTACH, ::getppid(), nullptr, nullptr) == 0; },
      [] { return ::kill(::getppid(), 0) == 0; },
      [] {
        char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
        ::execv(argv[0], argv);
        return false;
      },
      [] { return ::fork() >= 0; },
  };
  for (const SandboxPolicy& p : {kBlkPolicy, kNetPolicy})
    for (size_t i = 0; i < attempts.size(); ++i) {
      int st = run_confined(p, attempts[i]);
      EXPECT_TRUE(killed_by_sigsys(st))
          << "attempt " << i << " kind " << kind_name(p.kind) << ": status " << st;
    }
}

TEST(Seccomp, AbortStillDiesBySigabrt) {
  int st = run_confined(kBlkPolicy, [] {
    std::abort();
    return false;
  });
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) << "status " << st;
}

TEST(Seccomp, FaultInjectionMayForkButNotSpawnThreadsOrNamespaces) {
  int st = run_confined({Kind::kBlk, true}, [] {
    pid_t c = ::fork();
    if (c == 0) _exit(0);
    return c > 0;
  });
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
  st = run_confined({Kind::kBlk, true}, [] {
    return ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0) >= 0;
  });
  EXPECT_TRUE(killed_by_sigsys(st)) << "status " << st;
}

}  // namespace
}  // namespace axl::driverdom
