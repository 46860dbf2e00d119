// axolotl-monitor: restarts one daemon of the host when it dies, and keeps
// the fds it asks to have kept across its own death (docs/architecture.md,
// "No single point of failure").
//
//   axolotl-monitor --state-dir DIR --name NAME -- PROGRAM [ARGS...]
//
// What systemd does for a unit with Restart=on-failure and
// FileDescriptorStoreMax=, for hosts that `axl host up` starts by hand:
// - runs PROGRAM, records its pid in DIR/NAME.pid, and runs it again when it
//   dies of anything but a clean exit (status 0: it was asked to stop): at
//   once if it had served (READY=1) for a second, else after a back-off that
//   grows while it keeps dying that early (100 ms to 5 s); a first start that dies
//   before it says READY=1 ends the monitor with its status instead (a bad
//   config is not retried forever);
// - serves sd_notify(3)'s fd store on DIR/NAME.notify (0600; only the
//   current PROGRAM process is heard): FDSTORE=1 + FDNAME keeps the fd sent,
//   FDSTOREREMOVE=1 drops it, and each start gets every kept fd as
//   sd_listen_fds(3) hands them ($LISTEN_FDS, $LISTEN_PID, $LISTEN_FDNAMES);
// - is the subreaper of what PROGRAM leaves behind (PR_SET_CHILD_SUBREAPER):
//   the domains of a crashed supervisor become its children, and it reaps
//   them when they exit, so none lingers as a zombie.
// SIGTERM or SIGINT: no more restarts; it exits once PROGRAM has (stopping
// PROGRAM is its owner's business: `axl host down` asks it to).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/process.h"
#include "common/unique_fd.h"
#include "supervisor/monitor/notify.h"

namespace {

using axl::UniqueFd;
constexpr size_t kMaxStored = 1024;

const char kUsage[] = "usage: axolotl-monitor --state-dir DIR --name NAME -- PROGRAM [ARGS...]";

uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

struct Monitor {
  std::string dir, name;
  std::vector<std::string> argv;
  std::map<std::string, UniqueFd> stored;
  UniqueFd notify;
  pid_t child = -1;
  bool stopping = false;
  bool ever_ready = false;  // any start said READY=1
  bool ready = false;       // the current one did
  uint64_t started_ms = 0, ready_ms = 0, restart_at_ms = 0;
  unsigned quick_deaths = 0;  // deaths in a row before serving a second

  std::string notify_path() const { return dir + "/" + name + ".notify"; }
  std::string pid_path() const { return dir + "/" + name + ".pid"; }

  bool open_notify() {
    const std::string path = notify_path();
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
      AXL_ERROR("notify socket path too long: %s", path.c_str());
      return false;
    }
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    notify.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int one = 1;
    ::unlink(path.c_str());
    const mode_t old = ::umask(0077);
    const bool ok = notify && ::bind(notify.get(), reinterpret_cast<sockaddr*>(&addr),
                                     socklen_t(sizeof addr)) == 0;
    ::umask(old);
    if (!ok || ::setsockopt(notify.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
      AXL_ERROR("cannot serve %s: %s", path.c_str(), strerror(errno));
      return false;
    }
    return true;
  }

  void start() {
    std::vector<std::string> names;
    std::vector<int> fds;
    for (auto& [n, fd] : stored) {
      names.push_back(n);
      fds.push_back(fd.get());
    }
    std::string joined;
    for (auto& n : names) joined += (joined.empty() ? "" : ":") + n;
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const std::string notify_env = notify_path();
    const pid_t pid = ::fork();
    if (pid < 0) {
      AXL_ERROR("fork: %s", strerror(errno));
      restart_at_ms = now_ms() + 1000;
      return;
    }
    if (pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      // The kept fds go to 3, 4, ...: moved out of the way first.
      const int n = int(fds.size());
      std::vector<int> high;
      for (int fd : fds) high.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3 + n + 100));
      for (int i = 0; i < n; ++i) ::dup2(high[size_t(i)], 3 + i);  // clears CLOEXEC
      ::syscall(SYS_close_range, 3 + n, ~0U, 0);
      setenv("NOTIFY_SOCKET", notify_env.c_str(), 1);
      if (n > 0) {
        setenv("LISTEN_FDS", std::to_string(n).c_str(), 1);
        setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
        setenv("LISTEN_FDNAMES", joined.c_str(), 1);
      }
      ::execv(args[0], args.data());
      dprintf(2, "axolotl-monitor: cannot exec %s: %s\n", args[0], strerror(errno));
      _exit(127);
    }
    child = pid;
    ready = false;
    started_ms = now_ms();
    const std::string tmp = pid_path() + ".tmp";
    if (FILE* f = fopen(tmp.c_str(), "w")) {
      fprintf(f, "%d\n", pid);
      fclose(f);
      ::rename(tmp.c_str(), pid_path().c_str());
    }
    AXL_INFO("started %s, pid %d, with %zu kept fd%s", argv[0].c_str(), pid, fds.size(),
             fds.size() == 1 ? "" : "s");
  }

  // One datagram from the notify socket.
  void read_notice() {
    char buf[4096];
    iovec iov{buf, sizeof buf - 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(notify.get(), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;
    std::vector<UniqueFd> fds;
    pid_t sender = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          fds.emplace_back(fd);
        }
      } else if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred cr{};
        memcpy(&cr, CMSG_DATA(c), sizeof cr);
        sender = cr.pid;
      }
    }
    if (sender <= 0 || sender != child) {
      AXL_WARN("notice from pid %d ignored: only %s (pid %d) is heard", sender, name.c_str(),
               child);
      return;
    }
    if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
      AXL_WARN("truncated notice from pid %d ignored", sender);
      return;
    }
    auto notice = axl::monitor::parse_notice(std::string(buf, size_t(n)));
    if (!notice) {
      AXL_WARN("notice from pid %d ignored: %s", sender, notice.error().message.c_str());
      return;
    }
    if (notice->ready && !ready) {
      ready = ever_ready = true;
      ready_ms = now_ms();
      AXL_INFO("%s (pid %d) is ready", name.c_str(), child);
    }
    if (notice->remove) stored.erase(notice->name);
    if (notice->store) {
      if (fds.size() != 1) {
        AXL_WARN("FDSTORE %s with %zu fds ignored (one per name)", notice->name.c_str(),
                 fds.size());
      } else if (stored.size() >= kMaxStored && !stored.count(notice->name)) {
        AXL_WARN("fd store full (%zu): %s not kept", kMaxStored, notice->name.c_str());
      } else {
        stored[notice->name] = std::move(fds.front());
      }
    }
  }

  std::string reaped_path() const { return dir + "/" + name + ".reaped"; }

  // An orphan the daemon left behind (a domain of a crashed daemon) exited:
  // its status goes to DIR/NAME.reaped ("PID START STATUS" per line), where
  // the successor that adopted it reads how it ended (it is not its parent).
  void record_orphan(pid_t p, uint64_t start, int st) {
    UniqueFd f(::open(reaped_path().c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                      0600));
    if (!f) return;
    const std::string line =
        std::to_string(p) + " " + std::to_string(start) + " " + std::to_string(st) + "\n";
    (void)!::write(f.get(), line.data(), line.size());
  }

  // Returns false when the monitor is done (its exit status in *rc).
  bool reap(int* rc) {
    for (;;) {
      // Looked at before it is reaped: its start time (its identity with
      // the pid) is readable only until then.
      siginfo_t si{};
      if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0) return true;
      const uint64_t start = si.si_pid != child ? axl::proc::start_time(si.si_pid) : 0;
      int st = 0;
      const pid_t p = ::waitpid(si.si_pid, &st, WNOHANG);
      if (p <= 0) return true;
      if (p != child) {  // a domain the daemon left behind: reaped
        record_orphan(p, start, st);
        continue;
      }
      child = -1;
      ::unlink(pid_path().c_str());
      AXL_WARN("%s (pid %d) %s", name.c_str(), p, axl::proc::describe_status(st).c_str());
      if (stopping || (WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        *rc = 0;
        return false;
      }
      if (!ever_ready) {
        *rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        AXL_ERROR("%s failed before it ever served: not restarting", name.c_str());
        return false;
      }
      // One that served (READY) for a second is restarted at once; one that
      // keeps dying before that backs off, 100 ms doubling up to 5 s.
      const uint64_t now = now_ms();
      quick_deaths = !ready || now - ready_ms < 1000 ? quick_deaths + 1 : 0;
      uint64_t delay = quick_deaths == 0 ? 0 : 100ull << std::min(quick_deaths - 1, 6u);
      restart_at_ms = now + std::min<uint64_t>(delay, 5000);
      AXL_INFO("restarting %s in %llu ms", name.c_str(), (unsigned long long)(restart_at_ms - now));
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  axl::log::set_component("axolotl-monitor");
  Monitor m;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if ((a == "--state-dir" || a == "--name") && i + 1 < argc) {
      (a == "--name" ? m.name : m.dir) = argv[++i];
    } else {
      fprintf(stderr, "axolotl-monitor: unknown argument '%s'\n%s\n", a.c_str(), kUsage);
      return 2;
    }
  }
  for (; i < argc; ++i) m.argv.emplace_back(argv[i]);
  if (m.dir.empty() || m.name.empty() || m.argv.empty() || m.name.find('/') != std::string::npos) {
    fprintf(stderr, "axolotl-monitor: %s\n", kUsage);
    return 2;
  }
  if (::access(m.argv[0].c_str(), X_OK) != 0) {
    fprintf(stderr, "axolotl-monitor: cannot execute %s\n", m.argv[0].c_str());
    return 2;
  }
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) AXL_WARN("not a subreaper: %s", strerror(errno));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd || !m.open_notify()) return 1;
  m.start();
  int rc = 0;
  for (;;) {
    int timeout = -1;
    if (m.child < 0 && !m.stopping) {
      const uint64_t now = now_ms();
      if (now >= m.restart_at_ms) {
        m.start();
        continue;
      }
      timeout = int(m.restart_at_ms - now);
    }
    pollfd p[2] = {{sigfd.get(), POLLIN, 0}, {m.notify.get(), POLLIN, 0}};
    if (::poll(p, 2, timeout) < 0 && errno != EINTR) break;
    if (p[1].revents & POLLIN)
      for (int k = 0; k < 64 && (p[1].revents & POLLIN); ++k) {
        m.read_notice();
        pollfd q{m.notify.get(), POLLIN, 0};
        if (::poll(&q, 1, 0) <= 0) break;
      }
    if (p[0].revents & POLLIN) {
      signalfd_siginfo si{};
      bool chld = false;
      while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          chld = true;
        } else if (!m.stopping) {
          m.stopping = true;
          AXL_INFO("stopping: %s is not restarted any more", m.name.c_str());
        }
      }
      if (chld && !m.reap(&rc)) break;
      if (m.stopping && m.child < 0) break;
    }
  }
  // What it left behind is someone else's now; no kept fd outlives us.
  ::unlink(m.notify_path().c_str());
  return rc;
}
