#include "common/process.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

namespace axl::proc {

namespace {
int pidfd_open(pid_t pid) { return int(::syscall(SYS_pidfd_open, pid, 0)); }

[[noreturn]] void child_exec(const SpawnOptions& o, int log_fd, char** argv) {
  for (int fd : o.join_cgroup_fds)
    if (::write(fd, "0", 1) != 1) _exit(126);
  if (o.new_session) ::setsid();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int devnull = ::open("/dev/null", O_RDWR);
  // Move every fd we hand over above the target range first, so a mapping
  // like (5 -> 3), (3 -> 5) cannot clobber itself.
  std::vector<std::pair<int, int>> fds;
  for (auto [from, to] : o.fds) fds.emplace_back(::fcntl(from, F_DUPFD_CLOEXEC, 100), to);
  ::dup2(devnull, 0);
  ::dup2(log_fd >= 0 ? log_fd : devnull, 1);
  ::dup2(log_fd >= 0 ? log_fd : devnull, 2);
  for (auto [from, to] : fds) ::dup2(from, to);  // dup2 clears CLOEXEC on `to`
  int maxfd = 3;
  for (auto& p : fds) maxfd = std::max(maxfd, p.second + 1);
  for (int fd = 3; fd < maxfd; ++fd) {
    bool keep = false;
    for (auto& p : fds) keep |= p.second == fd;
    if (!keep) ::close(fd);
  }
  ::syscall(SYS_close_range, maxfd, ~0U, 0);
  ::execv(argv[0], argv);
  dprintf(2, "cannot exec %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}
}  // namespace

Result<Child> spawn(const SpawnOptions& o) {
  if (o.argv.empty()) return make_error("spawn: empty argv");
  UniqueFd log;
  if (!o.log_path.empty()) {
    log.reset(::open(o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (!log) return make_error("cannot open log " + o.log_path + ": " + strerror(errno));
  }
  std::vector<char*> argv;
  for (auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  if (::access(argv[0], X_OK) != 0) return make_error(std::string("cannot execute ") + argv[0]);
  pid_t pid = ::fork();
  if (pid < 0) return make_error(std::string("fork: ") + strerror(errno));
  if (pid == 0) {
    if (o.log_path.empty()) {
      // Inherit stdout/stderr: map them onto themselves.
      SpawnOptions copy = o;
      copy.fds.emplace_back(1, 1);
      copy.fds.emplace_back(2, 2);
      child_exec(copy, -1, argv.data());
    }
    child_exec(o, log.get(), argv.data());
  }
  Child c;
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
  if (::waitpid(c.pid, &st, 0) < 0) return make_error(std::string("waitpid: ") + strerror(errno));
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
  if (WIFEXITED(st)) return "exited " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("killed by ") + strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

}  // namespace axl::proc
