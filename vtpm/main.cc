// axolotl-vtpm: one guest's TPM 2.0 (libtpms), its state sealed at rest,
// served over the swtpm control protocol and a TCP command port.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/asio.h"
#include "common/config.h"
#include "common/heartbeat.h"
#include "common/log.h"
#include "policy/measure.h"
#include "vtpm/options.h"
#include "vtpm/provision.h"
#include "vtpm/sandbox.h"
#include "vtpm/server.h"
#include "vtpm/tpm_engine.h"
#include "vtpm/tpm_wire.h"

namespace {

int fail(const std::string& msg) {
  fprintf(stderr, "axolotl-vtpm: %s\n", msg.c_str());
  return 1;
}

// AXL_VTPM_FAULT=die-in-command:CODE | die-after-checkpoint:CODE |
// hog-memory:CODE (CODE a TPM
// command code, e.g. 0x17e): a test hook for the first instance only (one
// not handed a data channel), so the restarted one serves normally.
axl::Result<std::pair<axl::vtpm::TpmEngine::Fault, uint32_t>> parse_fault(const std::string& v) {
  using F = axl::vtpm::TpmEngine::Fault;
  const auto colon = v.find(':');
  const std::string kind = v.substr(0, colon);
  F f = kind == "die-in-command"         ? F::kDieInCommand
        : kind == "die-after-checkpoint" ? F::kDieAfterCheckpoint
        : kind == "hog-memory"           ? F::kHogMemory
                                         : F::kNone;
  if (f == F::kNone || colon == std::string::npos) {
    return axl::make_error("AXL_VTPM_FAULT '" + v +
                           "': want die-in-command:CODE, die-after-checkpoint:CODE or "
                           "hog-memory:CODE");
  }
  const std::string num = v.substr(colon + 1);
  char* end = nullptr;
  errno = 0;
  unsigned long code = std::strtoul(num.c_str(), &end, 0);
  if (num.empty() || *end != '\0' || errno != 0 || code > 0xffffffffUL) {
    return axl::make_error("AXL_VTPM_FAULT '" + v + "': bad command code '" + num + "'");
  }
  return std::pair{f, static_cast<uint32_t>(code)};
}

// Every fd named on the command line, checked before anything is made or
// served (or confined): a wrong one fails the start with one line naming it.
axl::Status check_fds(const axl::vtpm::Options& o) {
  const std::pair<int, const char*> open_fds[] = {{o.ctrl_fd, "--ctrl-fd"},
                                                  {o.data_fd, "--data-fd"},
                                                  {o.ready_fd, "--ready-fd"},
                                                  {o.handover_fd, "--handover-fd"},
                                                  {o.key_fd, "--key-fd"},
                                                  {o.measure_log_fd, "--measure-log-fd"},
                                                  {o.state_fd, "--state-fd"},
                                                  {o.health_fd, "--health-fd"},
                                                  {o.generation_fd, "--generation-fd"}};
  for (const auto& [fd, flag] : open_fds)
    if (fd >= 0 && ::fcntl(fd, F_GETFD) < 0)
      return axl::make_error(std::string(flag) + " " + std::to_string(fd) + " is not an open fd");
  return axl::vtpm::check_listening_fds(o.ctrl_listen_fd, o.command_listen_fd, o.port_command_fd,
                                        o.port_ctrl_fd);
}

// An event log is a few KiB; anything near this is not one.
constexpr size_t kMaxLogBytes = 16 << 20;

axl::Result<std::string> read_fd(int fd, const std::string& what) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return axl::make_error("cannot read " + what + ": " + strerror(errno));
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxLogBytes) return axl::make_error(what + " is too large for an event log");
  }
}

// The hypervisor's measurements of this boot.
axl::Result<std::vector<axl::vtpm::BootMeasurement>> read_measurements(const std::string& text,
                                                                       const std::string& what) {
  auto events = axl::policy::parse_event_log(text);
  if (!events) return axl::make_error(what + ": " + events.error().message);
  std::vector<axl::vtpm::BootMeasurement> boot;
  for (const auto& e : *events) {
    if (e.type == axl::policy::kEvNoAction) continue;
    if (e.pcr > 23)
      return axl::make_error(what + ": PCR " + std::to_string(e.pcr) + " out of range");
    boot.push_back({e.pcr, e.digest});
  }
  return boot;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace axl::vtpm;
  axl::log::set_component("vtpm");
  auto opts = parse_options({argv + 1, argv + argc});
  if (!opts) {
    fprintf(stderr, "axolotl-vtpm: %s\n%s\n", opts.error().message.c_str(), kUsage);
    return 2;
  }
  const Options& o = opts.value();
  if (auto s = check_fds(o); !s) return fail(s.error().message);

  // The event loop and its signal handling first: Asio makes its epoll
  // instance, eventfd, timerfd and signal pipe here, which a confined
  // process no longer can.
  boost::asio::io_context io;
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);

  struct stat st {};
  const int rc = o.state_fd >= 0 ? ::fstat(o.state_fd, &st) : ::stat(o.state_dir.c_str(), &st);
  if (rc != 0 || !S_ISDIR(st.st_mode)) {
    return fail(o.state_fd >= 0 ? "--state-fd " + std::to_string(o.state_fd) + " is not a directory"
                                : "state dir " + o.state_dir + " is not a directory");
  }
  // The hypervisor's measurements of this boot: checked before anything is
  // made or served, so a bad log fails the start with its reason.
  std::vector<BootMeasurement> boot;
  if (!o.measure_log.empty() || o.measure_log_fd >= 0) {
    const std::string what = o.measure_log_fd >= 0
                                 ? "--measure-log-fd " + std::to_string(o.measure_log_fd)
                                 : "--measure-log " + o.measure_log;
    axl::Result<std::string> text = axl::make_error("");
    if (o.measure_log_fd >= 0) {
      text = read_fd(o.measure_log_fd, what);
      ::close(o.measure_log_fd);
    } else {
      text = axl::config::read_file(o.measure_log);
    }
    if (!text) return fail(what + ": " + text.error().message);
    auto m = read_measurements(*text, what);
    if (!m) return fail(m.error().message);
    boot = std::move(m.value());
  }
  axl::Result<Key> key = axl::make_error("");
  if (o.key_fd >= 0) {
    key = load_key_fd(o.key_fd, "--key-fd " + std::to_string(o.key_fd));
    ::close(o.key_fd);
  } else {
    key = load_key_file(o.key_file, o.state_dir);
  }
  if (!key) return fail(key.error().message);

  // Nothing a guest or a stored state file says has been read yet: confine
  // now (vtpm/sandbox.h).  The state dir is /state from here on.
  std::string state_dir = o.state_dir;
  if (o.sandbox) {
    if (auto s = enter_sandbox(o.state_fd); !s) return fail("sandbox: " + s.error().message);
    state_dir = kSandboxStateDir;
    AXL_INFO("sandboxed: empty root with %s at %s, no capabilities, no_new_privs, seccomp",
             o.state_dir.c_str(), kSandboxStateDir);
  }

  // Every key the state is sealed under is bound to this vTPM's id
  // (vtpm/state_store.h): another vTPM's files do not open here.
  auto store = StateStore::open(state_dir, VtpmKey{key.value(), o.vtpm_id});
  if (!store) return fail(store.error().message);
  // A permanent state older than the newest the supervisor was told of is a
  // copy put back: refused, and left exactly as found.
  if (store->generation() < o.rollback_floor)
    return fail("rollback refused: " + o.state_dir + "/permanent.state is generation " +
                std::to_string(store->generation()) + ", older than generation " +
                std::to_string(o.rollback_floor) +
                " the host recorded; put the newer state back (or retire it: axl vtpm-delete)");
  if (o.generation_fd >= 0) {
    store->on_saved([fd = o.generation_fd](uint32_t g) {
      const uint8_t b[4] = {uint8_t(g >> 24), uint8_t(g >> 16), uint8_t(g >> 8), uint8_t(g)};
      // One datagram, never waited on, never a SIGPIPE: a supervisor that
      // is gone (restarting) or reads late loses this report, nothing else.
      if (::send(fd, b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL) != ssize_t(sizeof b))
        AXL_WARN("could not report permanent state generation %u: %s", g, strerror(errno));
    });
  }
  const std::string perm_path = store->path(StateKind::kPermanent);
  struct stat perm {};
  const bool fresh = ::stat(perm_path.c_str(), &perm) != 0 && errno == ENOENT;
  auto engine = TpmEngine::create(std::move(store.value()), o.checkpoint);
  if (!engine) return fail(engine.error().message);
  TpmEngine& tpm = *engine.value();
  if (const char* f = std::getenv("AXL_VTPM_FAULT"); f && *f) {
    auto fault = parse_fault(f);
    if (!fault) return fail(fault.error().message);
    if (o.data_fd < 0) {
      tpm.set_fault(fault->first, fault->second);
      AXL_WARN("fault injection: %s", f);
    } else {
      AXL_INFO("fault injection %s: not in a restarted instance", f);
    }
  }

  if (fresh) {
    // First creation: manufacture the TPM (EK + certificate, AK).
    if (o.sandbox) {
      return fail(
          "the state dir holds no vTPM yet: make it first with --provision (unconfined, "
          "with --ca-dir)");
    }
    if (o.ca_dir.empty()) return fail("creating a new vTPM needs --ca-dir (the host vTPM CA)");
    auto ca = ensure_host_ca(o.ca_dir);
    if (!ca) return fail(ca.error().message);
    axl::Status s = tpm.power_on(false);
    if (s) s = provision(tpm, ca.value(), state_dir + "/ek.crt");
    if (!s) {
      tpm.power_off(true);
      ::unlink(perm_path.c_str());  // a half-made TPM is no TPM
      return fail("provisioning failed: " + s.error().message);
    }
  }
  if (o.provision_only) return 0;
  // Only now: provisioning's own TPM2_Startup is no boot of the guest.
  tpm.set_boot_measurements(std::move(boot));

  if (auto s = tpm.power_on(true); !s) return fail(s.error().message);
  if (tpm.resumed()) {
    AXL_INFO("resumed the volatile state of %s (%llu journal records replayed)",
             o.state_dir.c_str(), static_cast<unsigned long long>(tpm.stats().replayed));
  } else if (o.startup_clear) {
    auto r = tpm.call(tpm::Command(tpm::kCcStartup, {}, 0).u16(0).finish());
    if (!r) return fail("TPM2_Startup: " + r.error().message);
  }

  Server server(io, tpm);
  ServerOptions so;
  so.ctrl_socket = o.ctrl_socket;
  so.ctrl_fd = o.ctrl_fd;
  so.command_port = o.command_port;
  so.command_socket = o.command_socket;
  so.data_fd = o.data_fd;
  so.handover_fd = o.handover_fd;
  so.ctrl_listen_fd = o.ctrl_listen_fd;
  so.command_listen_fd = o.command_listen_fd;
  so.port_command_fd = o.port_command_fd;
  so.port_ctrl_fd = o.port_ctrl_fd;
  if (auto s = server.start(so); !s) return fail(s.error().message);
  // Test hook: a first start that takes this long (a slow disk, a loaded
  // host), so tests can watch the host serve everyone else meanwhile.
  if (const char* d = std::getenv("AXL_VTPM_START_DELAY_MS"); d && *d && o.data_fd < 0) {
    char* end = nullptr;
    const long ms = std::strtol(d, &end, 10);
    if (*end != '\0' || ms < 0 || ms > 600000)
      return fail(std::string("AXL_VTPM_START_DELAY_MS '") + d + "': 0..600000 expected");
    AXL_WARN("test hook: ready only after %ld ms", ms);
    ::usleep(useconds_t(ms) * 1000);
  }
  if (o.ready_fd >= 0) {
    // Everything listens: whoever started us may now point QEMU here.
    const char ready = 'R';
    if (::write(o.ready_fd, &ready, 1) != 1)
      return fail("--ready-fd: " + std::string(strerror(errno)));
    ::close(o.ready_fd);
  }
  bool orderly = false;
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    orderly = true;
    io.stop();
  });
  // Supervised: heartbeats answered from this loop, withheld while the
  // engine is stuck in one command (no TPM command takes this long).
  constexpr std::chrono::seconds kCommandHang{30};
  std::unique_ptr<axl::HeartbeatResponder> heartbeat;
  if (o.health_fd >= 0) {
    heartbeat = std::make_unique<axl::HeartbeatResponder>(
        io, axl::UniqueFd(o.health_fd),
        // The guest's TPM never depends on the supervisor: serve on, unwatched
        // (docs/architecture.md, "No single point of failure").
        [] { AXL_WARN("the supervisor's health channel closed: serving on, unwatched"); },
        // Fault hooks (axl inject --vtpm), with --fault-injection only.
        [&tpm, enabled = o.fault_injection](const std::string& f, const axl::FaultTrigger&) {
          if (!enabled) {
            AXL_WARN("fault '%s' on the health channel ignored: fault injection is off", f.c_str());
            return;
          }
          AXL_WARN("fault hook: %s", f.c_str());
          if (f == "crash") std::abort();
          if (f == "hang")  // the loop stops turning: heartbeats go unanswered
            for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
          if (f == "die-in-command")
            tpm.set_fault(TpmEngine::Fault::kDieInCommand, TpmEngine::kAnyCommand);
          else
            AXL_WARN("unknown fault '%s' ignored", f.c_str());
        },
        [&server, kCommandHang] { return !server.stuck(kCommandHang); });
  }
  const bool inherited_listeners =
      o.ctrl_listen_fd >= 0 || o.command_listen_fd >= 0 || o.port_command_fd >= 0;
  AXL_INFO("vTPM %s serving %s%s%s%s", o.vtpm_id.c_str(),
           o.ctrl_socket.empty() ? "" : ("control " + o.ctrl_socket + " ").c_str(),
           o.command_port ? ("tcp 127.0.0.1:" + std::to_string(o.command_port) + "/" +
                             std::to_string(o.command_port + 1) + " ")
                                .c_str()
                          : "",
           inherited_listeners ? "on the listening sockets it was handed, " : "",
           o.checkpoint ? "checkpointing" : "without checkpoints");
  io.run();
  server.stop();
  // SIGTERM or CMD_SHUTDOWN: the TPM is powered off, its volatile state goes.
  if (orderly || server.shutdown_requested()) tpm.power_off(true);
  const auto& s = tpm.stats();
  auto mean_us = [](std::chrono::nanoseconds t, uint64_t n) {
    return n ? static_cast<double>(t.count()) / 1e3 / static_cast<double>(n) : 0.0;
  };
  AXL_INFO(
      "stopped: commands=%llu checkpoints=%llu failures=%llu mean_checkpoint_us=%.1f "
      "volatile_bytes=%llu journaled=%llu mean_journal_us=%.2f",
      static_cast<unsigned long long>(s.commands), static_cast<unsigned long long>(s.checkpoints),
      static_cast<unsigned long long>(s.checkpoint_failures),
      mean_us(s.checkpoint_time, s.checkpoints),
      static_cast<unsigned long long>(s.checkpoint_bytes),
      static_cast<unsigned long long>(s.journaled), mean_us(s.journal_time, s.journaled));
  return 0;
}
