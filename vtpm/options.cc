#include "vtpm/options.h"

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
}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= args.size()) return make_error(a + " needs a value");
      return args[++i];
    };
    auto str = [&](std::string& dst) -> Status {
      auto v = value();
      if (!v) return v.error();
      if (v->empty()) return make_error(a + " needs a non-empty value");
      dst = v.value();
      return {};
    };
    auto fd = [&](int& dst) -> Status {
      auto v = value();
      if (!v) return v.error();
      auto n = parse_int(a, v.value(), kMinFd, kMaxFd);
      if (!n) return n.error();
      dst = n.value();
      return {};
    };
    Status st;
    if (a == "--state-dir")
      st = str(o.state_dir);
    else if (a == "--vtpm-id") {
      auto v = value();
      if (!v) return v.error();
      st = check_vtpm_id(v.value(), "--vtpm-id");
      o.vtpm_id = v.value();
    } else if (a == "--key-file")
      st = str(o.key_file);
    else if (a == "--ca-dir")
      st = str(o.ca_dir);
    else if (a == "--ctrl-socket")
      st = str(o.ctrl_socket);
    else if (a == "--command-socket")
      st = str(o.command_socket);
    else if (a == "--measure-log")
      st = str(o.measure_log);
    else if (a == "--command-port") {
      auto v = value();
      if (!v) return v.error();
      auto n = parse_int(a, v.value(), 1, 65534);
      if (!n) return n.error();
      o.command_port = n.value();
    } else if (a == "--command-port-fds") {
      auto v = value();
      if (!v) return v.error();
      const auto comma = v->find(',');
      if (comma == std::string::npos)
        return make_error(a + " wants two fds N,M (commands, control), got '" + v.value() + "'");
      auto n = parse_int(a, v->substr(0, comma), kMinFd, kMaxFd);
      if (!n) return n.error();
      auto m = parse_int(a, v->substr(comma + 1), kMinFd, kMaxFd);
      if (!m) return m.error();
      o.port_command_fd = n.value();
      o.port_ctrl_fd = m.value();
    } else if (a == "--ctrl-fd" || a == "--ctrl-conn-fd")
      st = fd(o.ctrl_fd);
    else if (a == "--data-fd")
      st = fd(o.data_fd);
    else if (a == "--ready-fd")
      st = fd(o.ready_fd);
    else if (a == "--handover-fd")
      st = fd(o.handover_fd);
    else if (a == "--health-fd")
      st = fd(o.health_fd);
    else if (a == "--key-fd")
      st = fd(o.key_fd);
    else if (a == "--measure-log-fd")
      st = fd(o.measure_log_fd);
    else if (a == "--ctrl-listen-fd")
      st = fd(o.ctrl_listen_fd);
    else if (a == "--command-listen-fd")
      st = fd(o.command_listen_fd);
    else if (a == "--state-fd")
      st = fd(o.state_fd);
    else if (a == "--sandbox")
      o.sandbox = true;
    else if (a == "--provision")
      o.provision_only = true;
    else if (a == "--startup-clear")
      o.startup_clear = true;
    else if (a == "--no-checkpoint")
      o.checkpoint = false;
    else
      return make_error("unknown argument '" + a + "'");
    if (!st) return st.error();
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
                     o.port_command_fd, o.port_ctrl_fd,   o.state_fd,       o.health_fd};
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
