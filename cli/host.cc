// axl host up / down: start and stop the host stack (hypervisor, supervisor,
// driver domains).  The daemons' PIDs are recorded in the state dir and
// verified before any signal is sent, so `down` never touches a stranger.
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "common/config.h"
#include "common/control_requests.h"
#include "common/fs.h"
#include "common/process.h"
#include "supervisor/journal.h"

namespace axl::cli {

using control::call;
using control::ControlReply;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string pid_file(const HostPaths& p, const std::string& d) {
  return p.state_dir + "/" + d + ".pid";
}

// The monitors that restart the supervisor and the hypervisor
// (axolotl-monitor); their pid files.
constexpr const char* kMonitor = "supervisor-monitor";
constexpr const char* kHvMonitor = "hv-monitor";
const char* const kDaemons[] = {"supervisor", "hv", kMonitor, kHvMonitor};
bool is_monitor(const std::string& d) { return d == kMonitor || d == kHvMonitor; }

// The PID in `file` if that process is alive and is our daemon for this
// state dir (its command line starts with the program and names the state
// dir), else -1.
pid_t live_daemon(const HostPaths& p, const std::string& daemon) {
  std::ifstream f(pid_file(p, daemon));
  pid_t pid = -1;
  if (!(f >> pid) || pid <= 0) return -1;
  auto cmd = config::read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmd) return -1;
  const std::string program = is_monitor(daemon) ? "axolotl-monitor" : "axolotl-" + daemon;
  const std::string argv0 = cmd->substr(0, cmd->find('\0'));
  const auto slash = argv0.rfind('/');
  if (argv0.substr(slash == std::string::npos ? 0 : slash + 1) != program ||
      cmd->find(p.state_dir) == std::string::npos)
    return -1;
  return pid;
}

// The last line of a daemon's log that is its own (a daemon's log also holds
// its monitor's lines, which only say that it exited).
std::string last_line(const std::string& path) {
  auto s = config::read_file(path);
  if (!s) return "";
  std::string t = *s;
  for (;;) {
    while (!t.empty() && t.back() == '\n') t.pop_back();
    const auto pos = t.rfind('\n');
    std::string line = pos == std::string::npos ? t : t.substr(pos + 1);
    if (line.find(" axolotl-monitor ") == std::string::npos || pos == std::string::npos)
      return line;
    t.resize(pos);
  }
}

bool wait_ping(const std::string& socket, const proc::Child& c, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (call(socket, control::ping(), 2000)) return true;
    if (proc::wait_for(c, 50ms)) return false;  // died
  }
  return false;
}

void remove_runtime_files(const HostPaths& p) {
  std::error_code ec;
  for (const char* f :
       {"hv.sock", "supervisor.sock", "drivers.sock", "hv.pid", "supervisor.pid",
        "supervisor-monitor.pid", "supervisor.notify", "hv-monitor.pid", "hv.notify", "hv.reaped",
        "supervisor.reaped", "host.toml", "policy.toml", "policy.source"})
    fs::remove(p.state_dir + "/" + f, ec);
  (void)remove_tree(p.state_dir + "/dom");
  (void)remove_tree(p.state_dir + "/instances");
  (void)remove_tree(p.state_dir + "/hv");
}

// Stops one daemon: a polite shutdown request, then SIGTERM, then SIGKILL.
void stop_daemon(const HostPaths& p, const std::string& daemon, const std::string& socket) {
  pid_t pid = live_daemon(p, daemon);
  if (pid < 0) return;
  (void)call(socket, control::shutdown(), 5000);
  for (int i = 0; i < 200 && live_daemon(p, daemon) == pid; ++i) std::this_thread::sleep_for(50ms);
  if (live_daemon(p, daemon) == pid) {
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 60 && live_daemon(p, daemon) == pid; ++i) std::this_thread::sleep_for(50ms);
  }
  if (live_daemon(p, daemon) == pid) ::kill(pid, SIGKILL);
}

// A daemon's monitor: asked to restart it no more (it then exits with the
// daemon, which is stopped next).
pid_t quiet_monitor(const HostPaths& p, const char* monitor) {
  pid_t pid = live_daemon(p, monitor);
  if (pid > 0) ::kill(pid, SIGTERM);
  return pid;
}

void await_monitor(const HostPaths& p, const char* monitor, pid_t pid) {
  if (pid <= 0) return;
  for (int i = 0; i < 100 && live_daemon(p, monitor) == pid; ++i) std::this_thread::sleep_for(50ms);
  if (live_daemon(p, monitor) == pid) ::kill(pid, SIGKILL);
}

// Domains whose supervisor died and none adopted them yet: their records
// (supervisor/journal.h) name them and their pid-namespace holders.
void stop_recorded_instances(const HostPaths& p) {
  const std::string dir = p.state_dir + "/instances";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto text = config::read_file(e.path().string());
    if (!text) continue;
    auto r = supervisor::parse_record(*text);
    if (!r) {
      fprintf(stderr, "axl: %s: %s\n", e.path().c_str(), r.error().message.c_str());
      continue;
    }
    const bool stopped = proc::kill_pinned(r->pid, r->start, 2000ms);
    if (r->holder_pid > 0) (void)proc::kill_pinned(r->holder_pid, r->holder_start, 2000ms);
    if (stopped)
      printf("host down: stopped %s %s pid %d, left behind by its supervisor\n", r->kind.c_str(),
             r->name.c_str(), r->pid);
  }
}

}  // namespace

int host_up(const HostPaths& p, const std::string& config_path, const std::string& bus) {
  auto text = config::read_file(config_path);
  if (!text) return fail(text.error().message);
  auto host = config::parse_host(*text, config_path);
  if (!host) return fail(host.error().message);
  for (const char* d : kDaemons) {
    if (live_daemon(p, d) > 0)
      return fail("a host is already running with state dir " + p.state_dir);
  }
  for (const char* d : kDaemons) {
    if (fs::exists(pid_file(p, d)))
      return fail("stale state dir " + p.state_dir + " (its " + d +
                  " is gone): run 'axl host down --state-dir " + p.state_dir + "' to clean it");
  }
  std::string bin = proc::exe_dir();
  for (const char* b : {"axolotl-hv", "axolotl-supervisor", "axolotl-monitor", "axolotl-driverdom"})
    if (::access((bin + "/" + b).c_str(), X_OK) != 0)
      return fail(std::string("missing ") + b + " beside axl in " + bin);
  if (proc::find_on_path("qemu-system-x86_64").empty())
    return fail("QEMU not found: qemu-system-x86_64 is not on PATH (run scripts/setup)");
  if (auto s = check_state_dir(p.state_dir); !s) return fail(s.error().message);
  // The access policy both daemons load at start: the host config's, read
  // relative to it, checked here so a bad one stops nothing but this command.
  std::string policy_file = host->policy;
  if (!policy_file.empty() && policy_file[0] != '/') {
    const auto slash = config_path.rfind('/');
    policy_file =
        (slash == std::string::npos ? "." : config_path.substr(0, slash)) + "/" + policy_file;
  }
  if (auto s = install_policy(p, policy_file); !s) return fail(s.error().message);
  // The supervisor reads its own copy: the user's file may change or vanish.
  // Never written through a symlink someone left there.
  {
    const std::string copy = p.state_dir + "/host.toml";
    UniqueFd f(::open(copy.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f || ::write(f.get(), text->data(), text->size()) != ssize_t(text->size()))
      return fail("cannot write " + copy + ": " + strerror(errno));
  }

  auto start = [&](const std::string& daemon,
                   std::vector<std::string> argv) -> Result<proc::Child> {
    proc::SpawnOptions so;
    so.argv = std::move(argv);
    so.log_path = p.state_dir + "/" +
                  (daemon == kMonitor     ? "supervisor"
                   : daemon == kHvMonitor ? "hv"
                                          : daemon) +
                  ".log";
    so.new_session = true;
    auto c = proc::spawn(so);
    if (!c) return c.error();
    std::ofstream(pid_file(p, daemon)) << c->pid << "\n";
    return c;
  };
  auto abort_up = [&](const std::string& msg) {
    const pid_t monitor = quiet_monitor(p, kMonitor), hv_monitor = quiet_monitor(p, kHvMonitor);
    stop_daemon(p, "supervisor", p.supervisor_socket());
    stop_daemon(p, "hv", p.hv_socket());
    await_monitor(p, kMonitor, monitor);
    await_monitor(p, kHvMonitor, hv_monitor);
    stop_recorded_instances(p);
    remove_runtime_files(p);
    return fail(msg);
  };

  // Both daemons run under a monitor that restarts them if they crash and
  // keeps the fds their domains need meanwhile (supervisor/monitor/main.cc);
  // each monitor writes its daemon's pid file at each start.
  auto hv = start(kHvMonitor, {bin + "/axolotl-monitor", "--state-dir", p.state_dir, "--name", "hv",
                               "--", bin + "/axolotl-hv", "--state-dir", p.state_dir});
  if (!hv) return abort_up(hv.error().message);
  if (!wait_ping(p.hv_socket(), *hv, 10s))
    return abort_up("hypervisor did not start: " + last_line(p.state_dir + "/hv.log"));
  std::vector<std::string> sup_argv{bin + "/axolotl-monitor",
                                    "--state-dir",
                                    p.state_dir,
                                    "--name",
                                    "supervisor",
                                    "--",
                                    bin + "/axolotl-supervisor",
                                    "--state-dir",
                                    p.state_dir,
                                    "--config",
                                    p.state_dir + "/host.toml"};
  if (bus == "system")
    sup_argv.push_back("--dbus-system");
  else if (bus == "none")
    sup_argv.push_back("--no-dbus");
  else if (!bus.empty())
    sup_argv.insert(sup_argv.end(), {"--dbus-address", bus});
  auto sup = start(kMonitor, std::move(sup_argv));
  if (!sup) return abort_up(sup.error().message);
  if (!wait_ping(p.supervisor_socket(), *sup, 10s))
    return abort_up("supervisor did not start: " + last_line(p.state_dir + "/supervisor.log"));
  // Up means every driver domain has said hello to the hypervisor, or has
  // used up its restart budget (the host runs on without it, as Xen's does
  // without a dead driver domain).
  auto deadline = std::chrono::steady_clock::now() + 15s;
  std::vector<std::string> failed;
  bool settled = false;
  while (!settled && std::chrono::steady_clock::now() < deadline) {
    auto hv_r = call(p.hv_socket(), control::list_drivers());
    auto sup_r = call(p.supervisor_socket(), control::list_drivers());
    if (proc::wait_for(*sup, 0ms))
      return abort_up("supervisor exited: " + last_line(p.state_dir + "/supervisor.log"));
    if (hv_r && sup_r) {
      failed.clear();
      size_t settled_count = 0;
      for (auto d : sup_r->get().getDrivers()) {
        bool connected = false;
        for (auto h : hv_r->get().getDrivers()) connected |= h.getName() == d.getName();
        if (std::string(d.getState().cStr()) == "failed") {
          failed.push_back(std::string(d.getName().cStr()) + " (" + d.getLastFailure().cStr() +
                           ")");
          ++settled_count;
        } else if (connected) {
          ++settled_count;
        }
      }
      settled = settled_count == host->drivers.size();
    }
    if (!settled) std::this_thread::sleep_for(50ms);
  }
  if (!settled) {
    std::string why;
    for (auto& d : host->drivers) {
      std::string l = last_line(p.state_dir + "/driver-" + d.name + ".log");
      if (!l.empty()) why = " (driver " + d.name + ": " + l + ")";
    }
    return abort_up("driver domains did not connect to the hypervisor" + why);
  }
  if (failed.size() == host->drivers.size())
    return abort_up("every driver domain failed: " + failed.front());
  for (auto& f : failed) fprintf(stderr, "axl: warning: driver %s failed at start\n", f.c_str());
  printf("host up: %zu driver domain%s, state dir %s\n", host->drivers.size(),
         host->drivers.size() == 1 ? "" : "s", p.state_dir.c_str());
  return 0;
}

int host_down(const HostPaths& p) {
  bool any = false;
  for (const char* d : kDaemons) any |= live_daemon(p, d) > 0 || fs::exists(pid_file(p, d));
  if (!any) return fail("no host running with state dir " + p.state_dir);
  // The supervisor is not restarted from now on.  Hypervisor first: it
  // destroys every domain while their drivers still serve them; then the
  // supervisor stops the driver domains; then whatever a crashed supervisor
  // left behind.
  const pid_t monitor = quiet_monitor(p, kMonitor), hv_monitor = quiet_monitor(p, kHvMonitor);
  stop_daemon(p, "hv", p.hv_socket());
  stop_daemon(p, "supervisor", p.supervisor_socket());
  await_monitor(p, kMonitor, monitor);
  await_monitor(p, kHvMonitor, hv_monitor);
  stop_recorded_instances(p);
  // A QEMU whose hypervisor was killed still runs: its record names it.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(p.state_dir + "/dom", ec)) {
    auto killed = proc::kill_recorded(e.path().string() + "/qemu.pid", 2000ms);
    if (!killed)
      fprintf(stderr, "axl: %s\n", killed.error().message.c_str());
    else if (*killed)
      printf("host down: stopped QEMU pid %d of domain %s, left behind by its hypervisor\n",
             *killed, e.path().filename().c_str());
    // The init of its pid namespace (gone with QEMU if it was killed first).
    if (auto h = proc::kill_recorded(e.path().string() + "/qemu-ns.pid", 2000ms); !h)
      fprintf(stderr, "axl: %s\n", h.error().message.c_str());
  }
  remove_runtime_files(p);
  printf("host down\n");
  return 0;
}

}  // namespace axl::cli
