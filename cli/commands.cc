#include "cli/commands.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <thread>

#include "cli/guest_exit.h"
#include "common/config.h"
#include "common/control_requests.h"
#include "common/unique_fd.h"

namespace axl::cli {

using control::call;
using control::ControlReply;

namespace fs = std::filesystem;

int fail(const std::string& msg) {
  fprintf(stderr, "axl: %s\n", msg.c_str());
  return 1;
}

namespace {
// A reply that must describe exactly one domain (create, domain info).
Result<ControlReply> one_domain(Result<ControlReply> r) {
  if (r && r->get().getDomains().size() != 1)
    return make_error(Errc::kMalformed, "the hypervisor's reply names no domain");
  return r;
}

Result<ControlReply> domain_info(const HostPaths& p, const std::string& name) {
  return one_domain(call(p.hv_socket(), control::hv::domain_info(name)));
}
}  // namespace

int create(const HostPaths& p, const std::string& config_path, const std::string& vtpm_state) {
  auto text = config::read_file(config_path);
  if (!text) return fail(text.error().message);
  std::error_code ec;
  std::string abs = fs::absolute(config_path, ec).string();
  std::string base = fs::path(abs).parent_path().string();
  // Validate here too, so a bad file is reported against the user's path.
  auto g = config::parse_guest(*text, config_path, base);
  if (!g) return fail(g.error().message);
  auto r = one_domain(call(p.hv_socket(), control::hv::create(*text, base, vtpm_state)));
  if (!r) return fail(r.error().message);
  auto d = r->get().getDomains()[0];
  printf("created domain %s (id %u, %s)\n", d.getName().cStr(), d.getId(), d.getAccel().cStr());
  return 0;
}

int list(const HostPaths& p) {
  auto r = call(p.hv_socket(), control::hv::list());
  if (!r) return fail(r.error().message);
  printf("%-20s %4s %8s %5s %-8s %-5s %8s\n", "Name", "ID", "Mem(MiB)", "VCPUs", "State", "Accel",
         "QEMU");
  for (auto d : r->get().getDomains())
    printf("%-20s %4u %8u %5u %-8s %-5s %8d\n", d.getName().cStr(), d.getId(), d.getMemoryMib(),
           d.getVcpus(), d.getState().cStr(), d.getAccel().cStr(), d.getQemuPid());
  return 0;
}

int destroy(const HostPaths& p, const std::string& name) {
  auto r = call(p.hv_socket(), control::hv::destroy(name));
  if (!r) return fail(r.error().message);
  printf("destroyed domain %s\n", name.c_str());
  return 0;
}

int drivers(const HostPaths& p, bool stats) {
  auto sup = call(p.supervisor_socket(), control::list_drivers());
  if (!sup) return fail(sup.error().message);
  auto hv = call(p.hv_socket(), control::list_drivers());
  printf("%-16s %-4s %8s %-10s %8s %7s %9s %8s  %s\n", "Name", "Kind", "PID", "State", "Restarts",
         "Devices", "HbLag(ms)", "Standby", "LastFailure");
  for (auto d : sup->get().getDrivers()) {
    uint32_t devices = 0;
    if (hv)
      for (auto h : hv->get().getDrivers())
        if (h.getName() == d.getName()) devices = h.getDevices();
    // A warm standby's pid, or a parked spare's (one token: scripts read
    // the columns by position).
    std::string standby = d.getStandbyPid() ? std::to_string(d.getStandbyPid())
                          : d.getSparePid() ? "parked:" + std::to_string(d.getSparePid())
                                            : "-";
    printf("%-16s %-4s %8d %-10s %8u %7u %9.1f %8s  %s\n", d.getName().cStr(), d.getKind().cStr(),
           d.getPid(), d.getState().cStr(), d.getRestarts(), devices, d.getHeartbeatLagMs(),
           standby.c_str(), d.getLastFailure().size() ? d.getLastFailure().cStr() : "-");
  }
  if (!stats) return 0;
  // Detect: the supervisor's (pidfd, heartbeats, a report); HvDetect: the
  // hypervisor's channel lock, which tells of a crash first ("-": unknown).
  printf("\n%-16s %-20s %12s %12s %12s %12s  %s\n", "Driver", "When", "Detect(us)", "Restart(us)",
         "Outage(us)", "HvDetect(us)", "Cause");
  for (auto d : sup->get().getDrivers())
    for (auto o : d.getOutages()) {
      time_t t = time_t(o.getAtUnixS());
      char when[32];
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
      std::string outage = o.getOutageUs() ? std::to_string(o.getOutageUs()) : "pending";
      std::string hv = o.getHvDetectUs() >= 0 ? std::to_string(o.getHvDetectUs()) : "-";
      printf("%-16s %-20s %12llu %12llu %12s %12s  %s\n", d.getName().cStr(), when,
             (unsigned long long)o.getDetectUs(), (unsigned long long)o.getRestartUs(),
             outage.c_str(), hv.c_str(), o.getCause().cStr());
    }
  return 0;
}

int vtpm_pipe(const HostPaths& p, const std::string& name) {
  // The supervisor connects to the vTPM once the access policy allows it
  // (vtpm_access) and hands the connection over.
  auto r = call(p.supervisor_socket(), control::supervisor::open_vtpm(name, "access"));
  if (!r) return fail(r.error().message);
  if (r->fds().size() != 1) return fail("the supervisor sent no vTPM connection");
  UniqueFd s = std::move(r->fds()[0]);
  // Bytes both ways until either side closes; TPM commands and answers
  // carry their own sizes, the vTPM checks them.
  char buf[8192];
  pollfd pf[2] = {{0, POLLIN, 0}, {s.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail(std::string("poll: ") + strerror(errno));
    }
    for (int i = 0; i < 2; ++i) {
      if (!pf[i].revents) continue;
      const int from = i == 0 ? 0 : s.get(), to = i == 0 ? s.get() : 1;
      const ssize_t n = ::read(from, buf, sizeof buf);
      if (n <= 0) return 0;
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = ::write(to, buf + off, size_t(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        off += w;
      }
    }
  }
}

int vtpm_delete(const HostPaths& p, const std::string& name) {
  auto r = call(p.supervisor_socket(), control::supervisor::delete_vtpm(name));
  if (!r) return fail(r.error().message);
  printf("vTPM of domain %s retired\n", name.c_str());
  return 0;
}

int vtpms(const HostPaths& p) {
  auto sup = call(p.supervisor_socket(), control::supervisor::list_vtpms());
  if (!sup) return fail(sup.error().message);
  printf("%-16s %8s %-10s %8s %6s %10s  %s\n", "Domain", "PID", "State", "Restarts", "Port",
         "Uptime(s)", "LastFailure");
  for (auto v : sup->get().getVtpms()) {
    std::string port = v.getCommandPort() ? std::to_string(v.getCommandPort()) : "-";
    printf("%-16s %8d %-10s %8u %6s %10.1f  %s\n", v.getDomain().cStr(), v.getPid(),
           v.getState().cStr(), v.getRestarts(), port.c_str(), double(v.getUptimeMs()) / 1e3,
           v.getLastFailure().size() ? v.getLastFailure().cStr() : "-");
  }
  return 0;
}

int driver_kill(const HostPaths& p, const std::string& name, const std::string& signal) {
  auto r = call(p.supervisor_socket(), control::supervisor::kill_driver(name, signal));
  if (!r) return fail(r.error().message);
  printf("sent SIG%s to driver %s\n", signal.c_str(), name.c_str());
  return 0;
}

int inject(const HostPaths& p, const std::string& name, const std::string& fault,
           const FaultTrigger& trigger) {
  auto r = call(p.supervisor_socket(), control::supervisor::inject_fault(name, fault, trigger));
  if (!r) return fail(r.error().message);
  if (trigger.immediate())
    printf("injected fault %s into driver %s\n", fault.c_str(), name.c_str());
  else
    printf("armed fault %s in driver %s: after %llu requests, probability %g, seed %llu\n",
           fault.c_str(), name.c_str(), static_cast<unsigned long long>(trigger.after),
           trigger.probability, static_cast<unsigned long long>(trigger.seed));
  return 0;
}

int inject_daemon(const HostPaths& p, const std::string& daemon, const std::string& fault) {
  if (daemon != "supervisor" && daemon != "hv")
    return fail("--daemon: NAME must be supervisor or hv, not '" + daemon + "'");
  auto r = call(daemon == "hv" ? p.hv_socket() : p.supervisor_socket(),
                control::supervisor::inject_daemon_fault(fault));
  if (!r) return fail(r.error().message);
  printf("injected fault %s into the %s\n", fault.c_str(),
         daemon == "hv" ? "hypervisor" : "supervisor");
  return 0;
}

int inject_vtpm(const HostPaths& p, const std::string& domain, const std::string& fault) {
  auto r = call(p.supervisor_socket(), control::supervisor::inject_vtpm_fault(domain, fault));
  if (!r) return fail(r.error().message);
  printf("injected fault %s into the vTPM of domain %s\n", fault.c_str(), domain.c_str());
  return 0;
}

int driver_restart(const HostPaths& p, const std::string& name) {
  auto r = call(p.supervisor_socket(), control::supervisor::restart_driver(name));
  if (!r) return fail(r.error().message);
  printf("restarting driver %s\n", name.c_str());
  return 0;
}

int wait(const HostPaths& p, const std::string& name, double timeout_s) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  for (;;) {
    auto r = domain_info(p, name);
    if (!r) return fail(r.error().message);
    auto d = r->get().getDomains()[0];
    if (std::string(d.getState().cStr()) == "shutoff") break;
    if (std::string(d.getState().cStr()) == "crashed")
      return fail("domain " + name + " crashed: " + std::string(d.getCrashCause().cStr()));
    if (std::chrono::steady_clock::now() > deadline) {
      fprintf(stderr, "axl: domain %s still running after %.0f s\n", name.c_str(), timeout_s);
      return 124;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The bundled guest init reports its script's status on the console, read
  // through the hypervisor (the policy's console permission).
  auto r = call(p.hv_socket(), control::hv::open_console(name, true));
  if (!r) return fail(r.error().message);
  if (r->fds().size() != 1) return fail("the hypervisor sent no console log");
  std::string log;
  char buf[65536];
  for (ssize_t n; (n = ::read(r->fds()[0].get(), buf, sizeof buf)) > 0;) log.append(buf, size_t(n));
  auto status = parse_guest_exit(log);
  if (!status) return fail("domain " + name + " shut off: " + status.error().message);
  printf("domain %s shut off, script exit status %d\n", name.c_str(), *status);
  return *status;
}

namespace {
// A timeout in seconds on the command line, as the milliseconds a request
// carries (1 ms .. 1 h).
std::optional<uint32_t> timeout_ms(double s) {
  if (!(s > 0) || s > 3600) return std::nullopt;
  return uint32_t(std::max(1.0, s * 1000));
}
}  // namespace

int exec(const HostPaths& p, const std::string& name, const std::vector<std::string>& argv,
         double timeout_s) {
  auto ms = timeout_ms(timeout_s);
  if (!ms) {
    fail("--timeout must be more than 0 and at most 3600 seconds");
    return 255;
  }
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  auto r = call(p.hv_socket(), control::hv::guest_exec(name, argv[0], args, *ms), int(*ms) + 10000);
  if (!r) {
    fail(r.error().message);
    return 255;
  }
  auto x = r->get().getExec();
  auto out = x.getStdout(), err = x.getStderr();
  fwrite(out.begin(), 1, out.size(), stdout);
  fflush(stdout);
  fwrite(err.begin(), 1, err.size(), stderr);
  if (x.getTruncated()) fprintf(stderr, "axl: the command's output was cut short\n");
  if (x.getSignal() > 0 && x.getExitCode() < 0) return 128 + x.getSignal();
  return x.getExitCode() & 0xff;
}

int shutdown(const HostPaths& p, const std::string& name, double timeout_s, bool force) {
  auto ms = timeout_ms(timeout_s);
  if (!ms) return fail("--timeout must be more than 0 and at most 3600 seconds");
  auto r = call(p.hv_socket(), control::hv::guest_shutdown(name, *ms, force), int(*ms) + 10000);
  if (!r) return fail(r.error().message);
  if (r->get().getForced())
    printf("domain %s did not power off within %g s: destroyed\n", name.c_str(), timeout_s);
  else
    printf("domain %s powered off\n", name.c_str());
  return 0;
}

int console(const HostPaths& p, const std::string& name, bool log_only) {
  // The hypervisor hands the console over once the access policy allows it.
  auto r = call(p.hv_socket(), control::hv::open_console(name, log_only));
  if (!r) return fail(r.error().message);
  if (r->fds().size() != 1) return fail("the hypervisor sent no console");
  UniqueFd s = std::move(r->fds()[0]);
  if (log_only) {
    char buf[65536];
    for (ssize_t n; (n = ::read(s.get(), buf, sizeof buf)) > 0;)
      if (fwrite(buf, 1, size_t(n), stdout) != size_t(n)) return fail("cannot write the log");
    return 0;
  }
  bool tty = isatty(0);
  termios saved{};
  if (tty) {
    tcgetattr(0, &saved);
    termios raw = saved;
    cfmakeraw(&raw);
    tcsetattr(0, TCSANOW, &raw);
    fprintf(stderr, "Connected to %s (escape character is ^])\r\n", name.c_str());
  }
  char buf[4096];
  for (;;) {
    pollfd fds[2] = {{0, POLLIN, 0}, {s.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) break;
    if (fds[0].revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) break;
      if (tty && memchr(buf, 0x1d, size_t(n))) break;  // ^]
      if (::write(s.get(), buf, size_t(n)) < 0) break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::read(s.get(), buf, sizeof buf);
      if (n <= 0) break;
      if (::write(1, buf, size_t(n)) < 0) break;
    }
  }
  if (tty) tcsetattr(0, TCSANOW, &saved);
  return 0;
}

}  // namespace axl::cli
