#include "vtpm/options.h"

#include <CLI/CLI.hpp>
#include <charconv>

namespace axl::vtpm {
namespace {
Result<int> parse_int(const std::string& flag, const std::string& v, int lo, int hi) {
  int x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size() || x < lo || x > hi) {
    return make_error(flag + " wants a number in " + std::to_string(lo) + ".." +
                      std::to_string(hi) + ", got '" + v + "'");
  }
  return x;
}

// A vTPM id is a domain name (common/config.h's valid_name is stricter) and
// goes into key derivation as is: kept to a small, printable alphabet.
constexpr size_t kMaxIdBytes = 64;

// `s` as one printable line, for an error message.
std::string shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return s.size() > 80 ? out + "..." : out;
}

Status check_vtpm_id(const std::string& id, const std::string& what) {
  bool ok = !id.empty() && id.size() <= kMaxIdBytes && id != "." && id != "..";
  for (char c : id) {
    ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (ok) return {};
  return make_error(what + " '" + shown(id) + "' is no vTPM id: want 1.." +
                    std::to_string(kMaxIdBytes) + " bytes of [A-Za-z0-9._-], not . or ..");
}

// The last component of a path as written ("a/b/" -> "b"); "" for "/".
std::string last_component(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// 0..2 are stdio: never a channel, key or directory.
constexpr int kMinFd = 3;
constexpr int kMaxFd = 1 << 20;

// An fd or number option: a whole decimal number in lo..hi (CLI11 puts the
// option's name in front of the message).
CLI::Validator in_range(int lo, int hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        auto n = parse_int("", v, lo, hi);
        return n ? std::string() : n.error().message.substr(1);
      },
      "N");
}

const CLI::Validator kNonEmpty(
    [](std::string& v) -> std::string { return v.empty() ? "needs a non-empty value" : ""; }, "");

}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  std::string port_fds;
  CLI::App app{"axolotl-vtpm: one guest's virtual TPM (started by axolotl-supervisor)"};
  app.set_help_flag();  // the caller prints the usage with any error
  app.add_option("--state-dir", o.state_dir, "its sealed state")->check(kNonEmpty);
  app.add_option("--vtpm-id", o.vtpm_id, "which vTPM this is")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            auto s = check_vtpm_id(v, "--vtpm-id");
            return s ? std::string() : s.error().message;
          },
          "ID"));
  app.add_option("--key-file", o.key_file, "the host key")->check(kNonEmpty);
  app.add_option("--ca-dir", o.ca_dir, "the host's vTPM CA (provisioning)")->check(kNonEmpty);
  app.add_option("--ctrl-socket", o.ctrl_socket, "QEMU's control socket")->check(kNonEmpty);
  app.add_option("--command-socket", o.command_socket, "raw TPM commands")->check(kNonEmpty);
  app.add_option("--measure-log", o.measure_log, "TCG event log to extend")->check(kNonEmpty);
  app.add_option("--command-port", o.command_port, "TCP command port (and port + 1)")
      ->check(in_range(1, 65534));
  app.add_option("--command-port-fds", port_fds, "listening fds N,M for the command port");
  const auto fd = [&](const char* names, int& dst, const char* what) {
    app.add_option(names, dst, what)->check(in_range(kMinFd, kMaxFd));
  };
  fd("--ctrl-fd,--ctrl-conn-fd", o.ctrl_fd, "a connected control socket");
  fd("--data-fd", o.data_fd, "the command channel a previous instance was handed");
  fd("--ready-fd", o.ready_fd, "written once everything listens");
  fd("--handover-fd", o.handover_fd, "where the channels are handed over");
  fd("--health-fd", o.health_fd, "the supervisor's heartbeats");
  fd("--key-fd", o.key_fd, "this vTPM's key (derived for it from the host key), open");
  fd("--measure-log-fd", o.measure_log_fd, "the event log, open");
  fd("--ctrl-listen-fd", o.ctrl_listen_fd, "the control socket, listening");
  fd("--command-listen-fd", o.command_listen_fd, "the command socket, listening");
  fd("--state-fd", o.state_fd, "the state dir, open (--sandbox)");
  fd("--generation-fd", o.generation_fd, "where each new permanent state generation is reported");
  app.add_option("--rollback-floor", o.rollback_floor,
                 "refuse a permanent state older than this generation");
  app.add_flag("--sandbox", o.sandbox, "confine itself");
  app.add_flag("--fault-injection", o.fault_injection, "honour fault hooks (axl inject --vtpm)");
  app.add_flag("--provision", o.provision_only, "make the TPM and exit");
  app.add_flag("--startup-clear", o.startup_clear, "TPM2_Startup(CLEAR) itself");
  app.add_flag("!--no-checkpoint", o.checkpoint, "no checkpoints of the volatile state");
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // as CLI11 wants them
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return make_error(e.what());
  }
  if (!port_fds.empty()) {
    const std::string a = "--command-port-fds";
    const auto comma = port_fds.find(',');
    if (comma == std::string::npos)
      return make_error(a + " wants two fds N,M (commands, control), got '" + port_fds + "'");
    auto n = parse_int(a, port_fds.substr(0, comma), kMinFd, kMaxFd);
    if (!n) return n.error();
    auto m = parse_int(a, port_fds.substr(comma + 1), kMinFd, kMaxFd);
    if (!m) return m.error();
    o.port_command_fd = n.value();
    o.port_ctrl_fd = m.value();
  }
  if (o.state_dir.empty()) return make_error("--state-dir is required");
  if (o.key_file.empty() == (o.key_fd < 0))
    return make_error("give one of --key-file and --key-fd");
  if (!o.measure_log.empty() && o.measure_log_fd >= 0)
    return make_error("give one of --measure-log and --measure-log-fd");
  if (o.data_fd >= 0 && o.ctrl_fd < 0) {
    return make_error("--data-fd needs the control connection it belongs to (--ctrl-fd)");
  }
  const int fds[] = {o.ctrl_fd,         o.data_fd,        o.ready_fd,       o.handover_fd,
                     o.key_fd,          o.measure_log_fd, o.ctrl_listen_fd, o.command_listen_fd,
                     o.port_command_fd, o.port_ctrl_fd,   o.state_fd,       o.health_fd,
                     o.generation_fd};
  for (int fd : fds) {
    int same = 0;
    for (int g : fds) same += fd >= 0 && g == fd;
    if (same > 1) return make_error("fd " + std::to_string(fd) + " given for two purposes");
  }
  if (o.sandbox) {
    // Once confined no path leads anywhere but into the state dir, and no
    // socket can be made: everything comes as an fd.
    if (o.state_fd < 0) return make_error("--sandbox needs --state-fd (the state dir, opened)");
    if (!o.ctrl_socket.empty() || !o.command_socket.empty() || o.command_port)
      return make_error(
          "--sandbox binds no socket: give --ctrl-listen-fd, --command-listen-fd or "
          "--command-port-fds instead of paths and ports");
    if (!o.ca_dir.empty() || o.provision_only)
      return make_error(
          "--sandbox does not provision (no --ca-dir, no --provision): a confined "
          "vTPM never holds the CA key");
  } else if (o.state_fd >= 0) {
    return make_error("--state-fd is for --sandbox only");
  }
  if (o.vtpm_id.empty()) {
    // Run by hand: the state dir's name says which vTPM it holds.  Confined,
    // the dir is /state, so whoever confines it must say.
    if (o.sandbox) return make_error("--sandbox needs --vtpm-id (the state dir is /state there)");
    o.vtpm_id = last_component(o.state_dir);
    if (auto s = check_vtpm_id(o.vtpm_id, "the state dir's name"); !s)
      return make_error(s.error().message + "; give --vtpm-id");
  }
  if (!o.provision_only && o.ctrl_socket.empty() && o.ctrl_fd < 0 && o.command_port == 0 &&
      o.command_socket.empty() && o.ctrl_listen_fd < 0 && o.command_listen_fd < 0 &&
      o.port_command_fd < 0) {
    return make_error(
        "nothing to serve: give --ctrl-socket, --ctrl-fd, --command-port, --command-socket or "
        "a listening fd");
  }
  return o;
}

}  // namespace axl::vtpm
