// The vTPM's seccomp allow-list, tried in forked children: what it does in
// service (state files, the sockets it was handed, threads) works; anything
// that would reach beyond them kills the child by SIGSYS.
#include "vtpm/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace axl::vtpm {
namespace {

// Runs `body` in a child under the vTPM's filter; returns its wait status:
// exit 0 when `body` returns true, 1 when false, 2 when the filter could not
// be loaded.
int run_confined(const std::function<bool()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (auto s = load_seccomp(); !s) {
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

TEST(VtpmSeccomp, ThreadsWork) {
  int st = run_confined([] {
    // Threads that wait for each other and allocate (a thread's own malloc
    // arena), started and joined more than once.
    std::mutex m;
    std::condition_variable cv;
    int arrived = 0;
    std::atomic<int> sum{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 12; ++i)
      ts.emplace_back([&, i] {
        std::vector<char> buf(size_t(1) << 16, char(i));
        std::unique_lock l(m);
        ++arrived;
        cv.notify_all();
        cv.wait(l, [&] { return arrived == 12; });
        sum += buf[0];
      });
    for (auto& t : ts) t.join();
    return sum == 66;
  });
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
}

TEST(VtpmSeccomp, Clone3FailsWithEnosys) {
  int st = run_confined([] {
    struct {
      uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } args{};
    args.exit_signal = SIGCHLD;
    return ::syscall(SYS_clone3, &args, sizeof args) == -1 && errno == ENOSYS;
  });
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
}

TEST(VtpmSeccomp, StateFilesWork) {
  char tmpl[] = "/tmp/axl-vtpm-sandbox-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  int st = run_confined([&] {
    // What StateStore does, and the rest of the state-file I/O allowed.
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return false;
    int f = ::openat(d, ".tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (f < 0 || ::write(f, "sealed", 6) != 6 || ::fsync(f) != 0 || ::fdatasync(f) != 0)
      return false;
    if (::pwrite(f, "S", 1, 0) != 1 || ::ftruncate(f, 4096) != 0 || ::fallocate(f, 0, 0, 8192) != 0)
      return false;
    char b[6];
    if (::pread(f, b, sizeof b, 0) != 6 || memcmp(b, "Sealed", 6) != 0) return false;
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED || ::msync(p, 4096, MS_SYNC) != 0 || ::munmap(p, 4096) != 0) return false;
    ::close(f);
    if (::renameat(d, ".tmp", d, "volatile.1.state") != 0) return false;
    if (::syscall(SYS_renameat2, d, "volatile.1.state", d, "volatile.2.state", 0) != 0)
      return false;
    struct stat s {};
    if (::stat((dir + "/volatile.2.state").c_str(), &s) != 0 || s.st_size != 8192) return false;
    int names = 0;
    DIR* dd = ::opendir(dir.c_str());
    if (!dd) return false;
    while (dirent* e = ::readdir(dd)) names += e->d_name[0] != '.';
    ::closedir(dd);
    if (names != 1 || ::unlinkat(d, "volatile.2.state", 0) != 0 || ::fsync(d) != 0) return false;
    return ::close(d) == 0;
  });
  ::rmdir(dir.c_str());
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
}

TEST(VtpmSeccomp, HandedSocketsWork) {
  // A listener with a connection waiting, made before confinement as the
  // supervisor makes them.
  const std::string path = "/tmp/axl-vtpm-sandbox-test-" + std::to_string(::getpid()) + ".sock";
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  int l = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l, 4), 0);
  int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::write(c, "ping", 4), 4);
  int st = run_confined([&] {
    int s = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (s < 0) return false;
    int type = 0, one = 1;
    socklen_t len = sizeof type;
    if (::getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return false;
    if (::setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0) return false;
    sockaddr_un me{}, peer{};
    socklen_t ml = sizeof me, pl = sizeof peer;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&me), &ml) != 0 ||
        ::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &pl) != 0)
      return false;
    char b[4];
    if (::recv(s, b, sizeof b, 0) != 4 || memcmp(b, "ping", 4) != 0) return false;
    if (::send(s, "pong", 4, MSG_NOSIGNAL) != 4) return false;
    return ::shutdown(s, SHUT_RDWR) == 0;
  });
  char b[4] = {};
  EXPECT_EQ(::read(c, b, sizeof b), 4);
  EXPECT_EQ(memcmp(b, "pong", 4), 0);
  ::close(c);
  ::close(l);
  ::unlink(path.c_str());
  EXPECT_TRUE(exited_ok(st)) << "status " << st;
}

TEST(VtpmSeccomp, EscapesAreFatal) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp), 0);
  const std::vector<std::pair<const char*, std::function<bool()>>> attempts = {
      {"socket", [] { return ::socket(AF_INET, SOCK_STREAM, 0) >= 0; }},
      {"socketpair",
       [] {
         int p[2];
         return ::socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0;
       }},
      {"connect",
       [&] {
         sockaddr_un a{};
         a.sun_family = AF_UNIX;
         return ::connect(sp[0], reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
       }},
      {"bind",
       [&] {
         sockaddr_un a{};
         a.sun_family = AF_UNIX;
         return ::bind(sp[0], reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
       }},
      {"listen", [&] { return ::listen(sp[0], 1) == 0; }},
      {"sendto with an address",
       [&] {
         sockaddr_un a{};
         a.sun_family = AF_UNIX;
         return ::sendto(sp[0], "x", 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof a) == 1;
       }},
      {"fork", [] { return ::fork() >= 0; }},
      {"vfork-like clone",
       [] {
         return ::syscall(SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, nullptr, nullptr, nullptr,
                          0) >= 0;
       }},
      {"thread in a new namespace",
       [] {
         return ::syscall(SYS_clone, CLONE_VM | CLONE_SIGHAND | CLONE_THREAD | CLONE_NEWNET,
                          nullptr, nullptr, nullptr, 0) >= 0;
       }},
      {"unshare", [] { return ::unshare(CLONE_NEWUSER) == 0; }},
      {"exec",
       [] {
         char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
         ::execv(argv[0], argv);
         return false;
       }},
      {"ptrace", [] { return ::ptrace(PTRACE_ATTACH, ::getppid(), nullptr, nullptr) == 0; }},
      {"kill another", [] { return ::kill(::getppid(), 0) == 0; }},
      {"mkdir", [] { return ::mkdir("/tmp/axl-vtpm-sandbox-never", 0700) == 0; }},
      {"symlink", [] { return ::symlink("/etc/passwd", "/tmp/axl-vtpm-sandbox-never") == 0; }},
      {"link", [] { return ::link("/etc/passwd", "/tmp/axl-vtpm-sandbox-never") == 0; }},
      {"chmod", [] { return ::chmod("/tmp", 0777) == 0; }},
      {"chown", [] { return ::chown("/tmp", 0, 0) == 0; }},
      {"mount", [] { return ::mount("none", "/tmp", "tmpfs", 0, nullptr) == 0; }},
      {"ioctl", [] { return ::ioctl(0, TIOCSTI, "x") == 0; }},
  };
  for (const auto& [what, attempt] : attempts) {
    int st = run_confined(attempt);
    EXPECT_TRUE(killed_by_sigsys(st)) << what << ": status " << st;
  }
  ::close(sp[0]);
  ::close(sp[1]);
}

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ::close(fd);
  return ok;
}

// The whole of enter_sandbox(), in a child that makes its own user and
// mount namespaces as the supervisor's spawn would: the state dir is all
// there is, and threads work even in numbers that make glibc's malloc look
// for the CPU count (in /sys first, which is gone).
TEST(VtpmSandbox, ConfinedStateDirAndThreads) {
  char tmpl[] = "/tmp/axl-vtpm-sandbox-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  pid_t pid = ::fork();
  if (pid == 0) {
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0 ||
        !write_text("/proc/self/setgroups", "deny") ||
        !write_text("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1\n") ||
        !write_text("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1\n"))
      _exit(2);
    int state = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (auto s = enter_sandbox(state); !s) {
      fprintf(stderr, "%s\n", s.error().message.c_str());
      _exit(3);
    }
    std::vector<std::string> root;
    if (DIR* d = ::opendir("/")) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') root.push_back(e->d_name);
      ::closedir(d);
    }
    if (root != std::vector<std::string>{"state"}) _exit(4);
    if (std::string(kSandboxStateDir) != "/state") _exit(4);
    std::mutex m;
    std::condition_variable cv;
    int arrived = 0;
    constexpr int kThreads = 40;
    std::atomic<int> written{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < kThreads; ++i)
      ts.emplace_back([&, i] {
        std::vector<char> buf(size_t(1) << 16, 'x');
        {
          std::unique_lock l(m);
          ++arrived;
          cv.notify_all();
          cv.wait(l, [&] { return arrived == kThreads; });
        }
        const std::string p = "/state/t" + std::to_string(i);
        int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0 && ::write(fd, buf.data(), 16) == 16 && ::close(fd) == 0 &&
            ::unlink(p.c_str()) == 0)
          ++written;
      });
    for (auto& t : ts) t.join();
    _exit(written == kThreads ? 0 : 5);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::rmdir(dir.c_str());
  if (WIFEXITED(st) && WEXITSTATUS(st) == 2) GTEST_SKIP() << "no user namespaces here";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
}

TEST(VtpmSeccomp, AbortStillDiesBySigabrt) {
  int st = run_confined([] {
    std::abort();
    return false;
  });
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) << "status " << st;
}

}  // namespace
}  // namespace axl::vtpm
