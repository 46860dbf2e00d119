#include "driverdom/runtime/options.h"

#include <CLI/CLI.hpp>
#include <charconv>

namespace axl::driverdom {

namespace {

// A whole decimal number no smaller than `min`, or the reason it is not.
CLI::Validator at_least(int min, const std::string& what) {
  return CLI::Validator(
      [min, what](std::string& v) -> std::string {
        int n = 0;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc() || end != v.data() + v.size() || n < min)
          return "must be " + what + ", not " + v;
        return {};
      },
      what);
}

}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  std::string kind;
  int tap_fd = 0, supervisor_fd = 0, hv_fd = 0, hv_pid = 0, host_pid = 0;
  CLI::App app{"axolotl-driverdom: one driver domain (started by axolotl-supervisor)"};
  app.set_help_flag();  // the caller prints the usage with any error
  // 0-2 are stdio; a TAP there means the caller wired something wrong.
  const auto fd = at_least(3, "a file descriptor number >= 3");
  const auto pid = at_least(1, "a process id");
  app.add_option("--name", o.name, "the driver's name in the host config")->required();
  app.add_option("--kind", kind, "net or blk")->required()->check(CLI::IsMember({"net", "blk"}));
  app.add_option("--hv-socket", o.hv_socket, "the hypervisor's driver socket");
  auto* tap = app.add_option("--tap-fd", tap_fd, "net: the TAP, inherited")->check(fd);
  auto* sup =
      app.add_option("--supervisor-fd", supervisor_fd, "the health channel, inherited")->check(fd);
  auto* hv =
      app.add_option("--hv-fd", hv_fd, "a connected hypervisor socket, inherited")->check(fd);
  auto* hvp =
      app.add_option("--hv-pid", hv_pid, "escape-attempt hooks only: the hypervisor")->check(pid);
  auto* hostp =
      app.add_option("--host-pid", host_pid, "own pid outside its pid namespace")->check(pid);
  app.add_flag("--standby", o.standby, "start as a warm standby");
  app.add_flag("--parked", o.parked, "a spare: wait for start on the health channel");
  app.add_flag("--fault-injection", o.fault_injection, "fault hooks reachable");
  app.add_option("--fault-at-start", o.fault_at_start, "a fault hook to run at start");
  app.add_flag("--sandbox", o.sandbox, "confine itself before serving");
  app.add_option("--poll-us", o.poll_us, "channel polling window, microseconds")
      ->check(CLI::Range(0, 1000));
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // as CLI11 wants them
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return make_error(e.what());
  }
  o.kind = kind == "net" ? Kind::kNet : Kind::kBlk;
  if (tap->count()) o.tap_fd = tap_fd;
  if (sup->count()) o.supervisor_fd = supervisor_fd;
  if (hv->count()) o.hv_fd = hv_fd;
  if (hvp->count()) o.hv_pid = hv_pid;
  if (hostp->count()) o.host_pid = host_pid;

  if (o.hv_socket.empty() && !o.hv_fd) return make_error("--hv-socket or --hv-fd is required");
  if (o.hv_pid && !o.fault_injection) return make_error("--hv-pid needs --fault-injection");
  if (o.parked && !o.supervisor_fd) return make_error("--parked needs --supervisor-fd");
  if (o.parked && (o.standby || o.hv_fd))
    return make_error("--parked excludes --standby and --hv-fd (the connection comes at start)");
  if (o.tap_fd && o.kind != Kind::kNet) return make_error("--tap-fd is only for --kind net");
  if (!o.fault_at_start.empty() && !o.fault_injection)
    return make_error("--fault-at-start needs --fault-injection");
  if ((o.tap_fd && (o.tap_fd == o.supervisor_fd || o.tap_fd == o.hv_fd)) ||
      (o.hv_fd && o.hv_fd == o.supervisor_fd))
    return make_error("--tap-fd, --supervisor-fd and --hv-fd must differ");
  return o;
}

}  // namespace axl::driverdom
