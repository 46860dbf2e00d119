// axolotl-vtpm: one guest's TPM 2.0 (libtpms), its state sealed at rest,
// served over the swtpm control protocol and a TCP command port.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/config.h"
#include "common/log.h"
#include "policy/measure.h"
#include "vtpm/options.h"
#include "vtpm/provision.h"
#include "vtpm/server.h"
#include "vtpm/tpm_engine.h"
#include "vtpm/tpm_wire.h"

namespace {

int fail(const std::string& msg) {
  fprintf(stderr, "axolotl-vtpm: %s\n", msg.c_str());
  return 1;
}

// AXL_VTPM_FAULT=die-in-command:CODE | die-after-checkpoint:CODE (CODE a TPM
// command code, e.g. 0x17e): a test hook for the first instance only (one
// not handed a data channel), so the restarted one serves normally.
axl::Result<std::pair<axl::vtpm::TpmEngine::Fault, uint32_t>> parse_fault(const std::string& v) {
  using F = axl::vtpm::TpmEngine::Fault;
  const auto colon = v.find(':');
  const std::string kind = v.substr(0, colon);
  F f = kind == "die-in-command"         ? F::kDieInCommand
        : kind == "die-after-checkpoint" ? F::kDieAfterCheckpoint
                                         : F::kNone;
  if (f == F::kNone || colon == std::string::npos) {
    return axl::make_error("AXL_VTPM_FAULT '" + v +
                           "': want die-in-command:CODE or die-after-checkpoint:CODE");
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

  struct stat st{};
  if (::stat(o.state_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail("state dir " + o.state_dir + " is not a directory");
  }
  // The hypervisor's measurements of this boot: checked before anything is
  // made or served, so a bad log fails the start with its reason.
  std::vector<BootMeasurement> boot;
  if (!o.measure_log.empty()) {
    auto text = axl::config::read_file(o.measure_log);
    if (!text) return fail("--measure-log: " + text.error().message);
    auto events = axl::policy::parse_event_log(*text);
    if (!events) return fail("--measure-log " + o.measure_log + ": " + events.error().message);
    for (const auto& e : *events) {
      if (e.type == axl::policy::kEvNoAction) continue;
      if (e.pcr > 23) return fail("--measure-log " + o.measure_log + ": PCR " +
                                  std::to_string(e.pcr) + " out of range");
      boot.push_back({e.pcr, e.digest});
    }
  }
  auto key = load_key_file(o.key_file, o.state_dir);
  if (!key) return fail(key.error().message);
  auto store = StateStore::open(o.state_dir, key.value());
  if (!store) return fail(store.error().message);
  const std::string perm_path = store->path(StateKind::kPermanent);
  const bool fresh = ::access(perm_path.c_str(), F_OK) != 0 && errno == ENOENT;
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
    if (o.ca_dir.empty()) return fail("creating a new vTPM needs --ca-dir (the host vTPM CA)");
    auto ca = ensure_host_ca(o.ca_dir);
    if (!ca) return fail(ca.error().message);
    axl::Status s = tpm.power_on(false);
    if (s) s = provision(tpm, ca.value(), o.state_dir + "/ek.crt");
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

  boost::asio::io_context io;
  Server server(io, tpm);
  ServerOptions so;
  so.ctrl_socket = o.ctrl_socket;
  so.ctrl_fd = o.ctrl_fd;
  so.command_port = o.command_port;
  so.command_socket = o.command_socket;
  so.data_fd = o.data_fd;
  so.handover_fd = o.handover_fd;
  if (auto s = server.start(so); !s) return fail(s.error().message);
  if (o.ready_fd >= 0) {
    // Everything listens: whoever started us may now point QEMU here.
    const char ready = 'R';
    if (::write(o.ready_fd, &ready, 1) != 1) return fail("--ready-fd: " + std::string(strerror(errno)));
    ::close(o.ready_fd);
  }
  bool orderly = false;
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    orderly = true;
    io.stop();
  });
  AXL_INFO("serving %s%s%s", o.ctrl_socket.empty() ? "" : ("control " + o.ctrl_socket + " ").c_str(),
           o.command_port ? ("tcp 127.0.0.1:" + std::to_string(o.command_port) + "/" +
                             std::to_string(o.command_port + 1) + " ").c_str()
                          : "",
           o.checkpoint ? "checkpointing" : "without checkpoints");
  io.run();
  server.stop();
  // SIGTERM or CMD_SHUTDOWN: the TPM is powered off, its volatile state goes.
  if (orderly || server.shutdown_requested()) tpm.power_off(true);
  const auto& s = tpm.stats();
  auto mean_us = [](std::chrono::nanoseconds t, uint64_t n) {
    return n ? static_cast<double>(t.count()) / 1e3 / static_cast<double>(n) : 0.0;
  };
  AXL_INFO("stopped: commands=%llu checkpoints=%llu failures=%llu mean_checkpoint_us=%.1f "
           "volatile_bytes=%llu journaled=%llu mean_journal_us=%.2f",
           static_cast<unsigned long long>(s.commands),
           static_cast<unsigned long long>(s.checkpoints),
           static_cast<unsigned long long>(s.checkpoint_failures),
           mean_us(s.checkpoint_time, s.checkpoints),
           static_cast<unsigned long long>(s.checkpoint_bytes),
           static_cast<unsigned long long>(s.journaled), mean_us(s.journal_time, s.journaled));
  return 0;
}
