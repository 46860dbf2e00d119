#include "driverdom/runtime/options.h"

#include <charconv>

namespace axl::driverdom {

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  bool have_kind = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--standby") {
      o.standby = true;
      continue;
    }
    if (a == "--parked") {
      o.parked = true;
      continue;
    }
    if (a == "--fault-injection") {
      o.fault_injection = true;
      continue;
    }
    if (a == "--fault-at-start" && i + 1 < args.size()) {
      o.fault_at_start = args[++i];
      continue;
    }
    if (a == "--sandbox") {
      o.sandbox = true;
      continue;
    }
    if (a == "--hv-pid" || a == "--host-pid") {
      if (i + 1 >= args.size()) return make_error(a + " needs a value");
      const std::string& v = args[++i];
      int pid = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), pid);
      if (ec != std::errc() || end != v.data() + v.size() || pid <= 0)
        return make_error(a + " must be a process id, not " + v);
      (a == "--hv-pid" ? o.hv_pid : o.host_pid) = pid;
      continue;
    }
    if (a != "--name" && a != "--kind" && a != "--hv-socket" && a != "--tap-fd" &&
        a != "--supervisor-fd" && a != "--hv-fd")
      return make_error("unknown argument: " + a);
    if (i + 1 >= args.size()) return make_error(a + " needs a value");
    const std::string& v = args[++i];
    if (a == "--name") {
      o.name = v;
    } else if (a == "--kind") {
      if (v == "net")
        o.kind = Kind::kNet;
      else if (v == "blk")
        o.kind = Kind::kBlk;
      else
        return make_error("--kind must be net or blk, not " + v);
      have_kind = true;
    } else if (a == "--hv-socket") {
      o.hv_socket = v;
    } else {
      int fd = -1;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), fd);
      // 0-2 are stdio; a TAP there means the caller wired something wrong.
      if (ec != std::errc() || end != v.data() + v.size() || fd < 3)
        return make_error(a + " must be a file descriptor number >= 3, not " + v);
      (a == "--tap-fd" ? o.tap_fd : a == "--hv-fd" ? o.hv_fd : o.supervisor_fd) = fd;
    }
  }
  if (o.name.empty()) return make_error("--name is required");
  if (!have_kind) return make_error("--kind is required");
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
