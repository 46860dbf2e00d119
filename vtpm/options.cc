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
    Status st;
    if (a == "--state-dir") st = str(o.state_dir);
    else if (a == "--key-file") st = str(o.key_file);
    else if (a == "--ca-dir") st = str(o.ca_dir);
    else if (a == "--ctrl-socket") st = str(o.ctrl_socket);
    else if (a == "--command-socket") st = str(o.command_socket);
    else if (a == "--measure-log") st = str(o.measure_log);
    else if (a == "--command-port") {
      auto v = value();
      if (!v) return v.error();
      auto n = parse_int(a, v.value(), 1, 65534);
      if (!n) return n.error();
      o.command_port = n.value();
    } else if (a == "--ctrl-fd" || a == "--ctrl-conn-fd" || a == "--data-fd" ||
               a == "--ready-fd" || a == "--handover-fd") {
      auto v = value();
      if (!v) return v.error();
      // 0..2 are stdio: never a channel.
      auto n = parse_int(a, v.value(), 3, 1 << 20);
      if (!n) return n.error();
      int& dst = a == "--data-fd"      ? o.data_fd
                 : a == "--ready-fd"   ? o.ready_fd
                 : a == "--handover-fd" ? o.handover_fd
                                        : o.ctrl_fd;
      dst = n.value();
    } else if (a == "--provision") o.provision_only = true;
    else if (a == "--startup-clear") o.startup_clear = true;
    else if (a == "--no-checkpoint") o.checkpoint = false;
    else return make_error("unknown argument '" + a + "'");
    if (!st) return st.error();
  }
  if (o.state_dir.empty()) return make_error("--state-dir is required");
  if (o.key_file.empty()) return make_error("--key-file is required");
  if (o.data_fd >= 0 && o.ctrl_fd < 0) {
    return make_error("--data-fd needs the control connection it belongs to (--ctrl-fd)");
  }
  for (int fd : {o.ctrl_fd, o.data_fd, o.ready_fd, o.handover_fd}) {
    int same = 0;
    for (int g : {o.ctrl_fd, o.data_fd, o.ready_fd, o.handover_fd}) same += fd >= 0 && g == fd;
    if (same > 1) return make_error("fd " + std::to_string(fd) + " given for two purposes");
  }
  if (!o.provision_only && o.ctrl_socket.empty() && o.ctrl_fd < 0 && o.command_port == 0 &&
      o.command_socket.empty()) {
    return make_error(
        "nothing to serve: give --ctrl-socket, --ctrl-fd, --command-port or --command-socket");
  }
  return o;
}

}  // namespace axl::vtpm
