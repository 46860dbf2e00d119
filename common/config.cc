#include "common/config.h"

#include <toml++/toml.h>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

namespace axl::config {

namespace {

std::string where(const std::string& origin, const toml::source_region& r) {
  return origin + ":" + std::to_string(r.begin.line);
}

// Rejects keys the schema does not know: a typo must not be silently ignored.
Status check_keys(const toml::table& t, std::initializer_list<const char*> allowed,
                  const std::string& origin, const std::string& ctx) {
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (auto&& [k, v] : t) {
    if (!ok.count(std::string(k.str())))
      return make_error(where(origin, v.source()) + ": unknown key '" + ctx + std::string(k.str()) +
                        "'");
  }
  return {};
}

template <typename T>
Result<std::optional<T>> get_opt(const toml::table& t, const char* key, const std::string& origin,
                                 const std::string& ctx) {
  const toml::node* n = t.get(key);
  if (!n) return std::optional<T>{};
  if (auto v = n->value_exact<T>()) return std::optional<T>(*v);
  const char* want = std::is_same_v<T, std::string> ? "a string"
                     : std::is_same_v<T, bool>      ? "a boolean"
                                                    : "an integer";
  return make_error(where(origin, n->source()) + ": '" + ctx + key + "' must be " + want);
}

template <typename T>
Result<T> get_req(const toml::table& t, const char* key, const std::string& origin,
                  const std::string& ctx) {
  auto v = get_opt<T>(t, key, origin, ctx);
  if (!v) return v.error();
  if (!v->has_value()) return make_error(origin + ": missing required key '" + ctx + key + "'");
  return **v;
}

// A device's optional `queues` (1..max, default 1).
Result<uint32_t> get_queues(const toml::table& t, const std::string& origin, const std::string& ctx,
                            int64_t max) {
  auto q = get_opt<int64_t>(t, "queues", origin, ctx);
  if (!q) return q.error();
  if (q->has_value() && (**q < 1 || **q > max))
    return make_error(origin + ": " + ctx + "queues must be between 1 and " + std::to_string(max));
  return uint32_t(q->value_or(1));
}

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return base + "/" + p;
}

Result<const toml::array*> table_array(const toml::table& t, const char* key,
                                       const std::string& origin) {
  const toml::node* n = t.get(key);
  if (!n) return static_cast<const toml::array*>(nullptr);
  const toml::array* a = n->as_array();
  if (!a || !a->is_array_of_tables())
    return make_error(where(origin, n->source()) + ": '" + key + "' must be [[" + key +
                      "]] tables");
  return a;
}

Result<toml::table> parse_toml(const std::string& text, const std::string& origin) {
  try {
    return toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ":" << e.source().begin.line << ": " << e.description();
    return make_error(os.str());
  }
}

// Errors quote the input (toml++ quotes the text it choked on, we quote
// names and values), and the input may hold line breaks or other control
// characters: escape them so every error stays one line.
std::string one_line(const std::string& msg) {
  std::string out;
  for (unsigned char c : msg) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out;
}

}  // namespace

static Result<HostConfig> parse_host_checked(const std::string& text, const std::string& origin);
static Result<GuestConfig> parse_guest_checked(const std::string& text, const std::string& origin,
                                               const std::string& base_dir);

Result<HostConfig> parse_host(const std::string& text, const std::string& origin) {
  auto h = parse_host_checked(text, origin);
  if (!h) return make_error(one_line(h.error().message));
  return h;
}

Result<GuestConfig> parse_guest(const std::string& text, const std::string& origin,
                                const std::string& base_dir) {
  auto g = parse_guest_checked(text, origin, base_dir);
  if (!g) return make_error(one_line(g.error().message));
  return g;
}

const char* to_string(DriverKind k) { return k == DriverKind::kNet ? "net" : "blk"; }

const DriverConfig* HostConfig::find_driver(const std::string& name) const {
  for (auto& d : drivers)
    if (d.name == name) return &d;
  return nullptr;
}

bool is_fault_name(const std::string& s) {
  for (const char* f : kFaultNames)
    if (s == f) return true;
  return false;
}

bool is_vtpm_fault_name(const std::string& s) {
  for (const char* f : kVtpmFaultNames)
    if (s == f) return true;
  return false;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (char c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return isalnum(static_cast<unsigned char>(s[0]));
}

Result<std::array<uint8_t, 6>> parse_mac(const std::string& s) {
  std::array<uint8_t, 6> m{};
  unsigned v[6];
  char tail;
  if (s.size() != 17 || sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3],
                               &v[4], &v[5], &tail) != 6)
    return make_error("bad MAC address '" + s + "' (want xx:xx:xx:xx:xx:xx)");
  for (int i = 0; i < 6; ++i) m[i] = uint8_t(v[i]);
  if (m[0] & 1) return make_error("MAC address '" + s + "' is multicast");
  return m;
}

std::string format_mac(const std::array<uint8_t, 6>& m) {
  char b[18];
  snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error("cannot read " + path);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

Result<HostConfig> parse_host_checked(const std::string& text, const std::string& origin) {
  auto parsed = parse_toml(text, origin);
  if (!parsed) return parsed.error();
  const toml::table& t = *parsed;
  if (auto s = check_keys(t, {"driver", "policy", "vtpm_fault_injection", "daemon_fault_injection"},
                          origin, "");
      !s)
    return s.error();
  auto arr = table_array(t, "driver", origin);
  if (!arr) return arr.error();
  HostConfig h;
  auto pol = get_opt<std::string>(t, "policy", origin, "");
  if (!pol) return pol.error();
  if (*pol) {
    if ((*pol)->empty())
      return make_error(where(origin, t.get("policy")->source()) +
                        ": 'policy' must name a policy file");
    h.policy = **pol;
  }
  for (auto [key, dst] : {std::pair{"vtpm_fault_injection", &h.vtpm_fault_injection},
                          std::pair{"daemon_fault_injection", &h.daemon_fault_injection}}) {
    auto v = get_opt<bool>(t, key, origin, "");
    if (!v) return v.error();
    *dst = v->value_or(false);
  }
  if (*arr) {
    for (const toml::node& n : **arr) {
      const toml::table& d = *n.as_table();
      if (auto s = check_keys(
              d,
              {"name", "kind", "tap", "restart_max", "restart_window_s", "backoff_ms",
               "heartbeat_ms", "heartbeat_misses", "fault_injection", "fault_at_start", "standby",
               "sandbox", "memory_max_mib", "pids_max", "cpu_percent", "io_timeout_ms", "poll_us"},
              origin, "driver.");
          !s)
        return s.error();
      DriverConfig dc;
      auto name = get_req<std::string>(d, "name", origin, "driver.");
      if (!name) return name.error();
      dc.name = *name;
      if (!valid_name(dc.name))
        return make_error(where(origin, d.source()) + ": bad driver name '" + dc.name + "'");
      if (h.find_driver(dc.name))
        return make_error(where(origin, d.source()) + ": duplicate driver name '" + dc.name + "'");
      auto kind = get_req<std::string>(d, "kind", origin, "driver.");
      if (!kind) return kind.error();
      if (*kind == "net")
        dc.kind = DriverKind::kNet;
      else if (*kind == "blk")
        dc.kind = DriverKind::kBlk;
      else
        return make_error(where(origin, d.source()) + ": driver '" + dc.name + "': unknown kind '" +
                          *kind + "' (want net or blk)");
      auto tap = get_opt<std::string>(d, "tap", origin, "driver.");
      if (!tap) return tap.error();
      if (dc.kind == DriverKind::kNet) {
        if (!tap->has_value())
          return make_error(origin + ": net driver '" + dc.name + "' needs 'tap'");
        dc.tap = **tap;
        if (dc.tap.empty() || dc.tap.size() > 15 || !valid_name(dc.tap))
          return make_error(origin + ": driver '" + dc.name + "': bad tap name '" + dc.tap + "'");
        for (auto& o : h.drivers)
          if (o.tap == dc.tap)
            return make_error(origin + ": tap '" + dc.tap + "' used by two drivers");
      } else if (tap->has_value()) {
        return make_error(origin + ": blk driver '" + dc.name + "' takes no 'tap'");
      }
      for (auto [key, dst, max] : {std::tuple{"restart_max", &dc.restart_max, 1000},
                                   std::tuple{"restart_window_s", &dc.restart_window_s, 86400},
                                   std::tuple{"backoff_ms", &dc.backoff_ms, 60000},
                                   std::tuple{"heartbeat_ms", &dc.heartbeat_ms, 60000},
                                   std::tuple{"heartbeat_misses", &dc.heartbeat_misses, 1000},
                                   std::tuple{"memory_max_mib", &dc.memory_max_mib, 1 << 20},
                                   std::tuple{"pids_max", &dc.pids_max, 1 << 20},
                                   std::tuple{"cpu_percent", &dc.cpu_percent, 6400},
                                   std::tuple{"io_timeout_ms", &dc.io_timeout_ms, 3600000},
                                   std::tuple{"poll_us", &dc.poll_us, 1000}}) {
        auto v = get_opt<int64_t>(d, key, origin, "driver.");
        if (!v) return v.error();
        if (!v->has_value()) continue;
        if (**v < 0 || **v > max)
          return make_error(origin + ": driver '" + dc.name + "': " + key +
                            " must be between 0 and " + std::to_string(max));
        *dst = uint32_t(**v);
      }
      auto sb = get_opt<bool>(d, "standby", origin, "driver.");
      if (!sb) return sb.error();
      dc.standby = sb->value_or(false);
      auto sandbox = get_opt<bool>(d, "sandbox", origin, "driver.");
      if (!sandbox) return sandbox.error();
      dc.sandbox = sandbox->value_or(true);
      auto fi = get_opt<bool>(d, "fault_injection", origin, "driver.");
      if (!fi) return fi.error();
      dc.fault_injection = fi->value_or(false);
      auto fs = get_opt<std::string>(d, "fault_at_start", origin, "driver.");
      if (!fs) return fs.error();
      if (fs->has_value()) {
        if (!dc.fault_injection)
          return make_error(origin + ": driver '" + dc.name +
                            "': fault_at_start needs fault_injection = true");
        if (!is_fault_name(**fs))
          return make_error(origin + ": driver '" + dc.name + "': unknown fault '" + **fs + "'");
        dc.fault_at_start = **fs;
      }
      if (dc.heartbeat_ms == 0 || dc.heartbeat_misses == 0)
        return make_error(origin + ": driver '" + dc.name +
                          "': heartbeat_ms and heartbeat_misses must be at least 1");
      h.drivers.push_back(std::move(dc));
    }
  }
  if (h.drivers.empty()) return make_error(origin + ": no [[driver]] defined");
  return h;
}

Result<GuestConfig> parse_guest_checked(const std::string& text, const std::string& origin,
                                        const std::string& base_dir) {
  auto parsed = parse_toml(text, origin);
  if (!parsed) return parsed.error();
  const toml::table& t = *parsed;
  if (auto s = check_keys(
          t,
          {"name", "memory_mib", "vcpus", "accel", "iommu", "kernel", "initrd", "cmdline",
           "on_crash", "firmware", "log_max_mib", "disk", "nic", "guest", "vtpm"},
          origin, "");
      !s)
    return s.error();
  GuestConfig g;
  auto name = get_req<std::string>(t, "name", origin, "");
  if (!name) return name.error();
  g.name = *name;
  if (!valid_name(g.name)) return make_error(origin + ": bad guest name '" + g.name + "'");
  // Optional integers, each within its range.
  for (auto [key, dst, lo, hi] :
       {std::tuple{"memory_mib", &g.memory_mib, 64, 65536}, std::tuple{"vcpus", &g.vcpus, 1, 64},
        std::tuple{"log_max_mib", &g.log_max_mib, 1, 65536}}) {
    auto v = get_opt<int64_t>(t, key, origin, "");
    if (!v) return v.error();
    if (!v->has_value()) continue;
    if (**v < lo || **v > hi)
      return make_error(origin + ": " + key + " must be between " + std::to_string(lo) + " and " +
                        std::to_string(hi));
    *dst = uint32_t(**v);
  }
  auto iommu = get_opt<bool>(t, "iommu", origin, "");
  if (!iommu) return iommu.error();
  g.iommu = iommu->value_or(false);
  for (auto [key, dst] : {std::pair{"accel", &g.accel}, std::pair{"kernel", &g.kernel},
                          std::pair{"initrd", &g.initrd}, std::pair{"cmdline", &g.cmdline},
                          std::pair{"on_crash", &g.on_crash}, std::pair{"firmware", &g.firmware}}) {
    auto v = get_opt<std::string>(t, key, origin, "");
    if (!v) return v.error();
    if (v->has_value()) *dst = **v;
  }
  if (g.accel != "auto" && g.accel != "kvm" && g.accel != "tcg")
    return make_error(origin + ": accel must be auto, kvm or tcg, not '" + g.accel + "'");
  if (!g.firmware.empty() && g.firmware != "bios" && g.firmware != "uefi")
    return make_error(origin + ": firmware must be bios or uefi, not '" + g.firmware + "'");
  if (!g.firmware.empty())
    for (const char* k : {"kernel", "initrd", "cmdline"})
      if (t.contains(k))
        return make_error(origin + ": '" + k + "' does not apply to firmware = \"" + g.firmware +
                          "\" (the firmware boots the OS on the boot disk)");
  if (g.on_crash != "destroy" && g.on_crash != "restart" && g.on_crash != "preserve")
    return make_error(origin + ": on_crash must be destroy, restart or preserve, not '" +
                      g.on_crash + "'");
  g.kernel = resolve(base_dir, g.kernel);
  g.initrd = resolve(base_dir, g.initrd);
  if (g.cmdline.find('\n') != std::string::npos)
    return make_error(origin + ": cmdline must be one line");

  auto disks = table_array(t, "disk", origin);
  if (!disks) return disks.error();
  if (*disks) {
    for (const toml::node& n : **disks) {
      const toml::table& d = *n.as_table();
      if (auto s = check_keys(
              d, {"driver", "image", "readonly", "format", "boot", "cache", "aio", "queues"},
              origin, "disk.");
          !s)
        return s.error();
      DiskConfig dc;
      auto drv = get_req<std::string>(d, "driver", origin, "disk.");
      if (!drv) return drv.error();
      auto img = get_req<std::string>(d, "image", origin, "disk.");
      if (!img) return img.error();
      auto ro = get_opt<bool>(d, "readonly", origin, "disk.");
      if (!ro) return ro.error();
      dc.driver = *drv;
      dc.image = resolve(base_dir, *img);
      dc.read_only = ro->value_or(false);
      auto fmt = get_opt<std::string>(d, "format", origin, "disk.");
      if (!fmt) return fmt.error();
      dc.format = fmt->value_or("raw");
      auto boot = get_opt<bool>(d, "boot", origin, "disk.");
      if (!boot) return boot.error();
      dc.boot = boot->value_or(false);
      if (dc.format != "raw" && dc.format != "qcow2")
        return make_error(origin + ": disk.format must be \"raw\" or \"qcow2\", not \"" +
                          dc.format + "\"");
      auto cache = get_opt<std::string>(d, "cache", origin, "disk.");
      if (!cache) return cache.error();
      dc.cache = cache->value_or("writeback");
      if (dc.cache != "writeback" && dc.cache != "none")
        return make_error(origin + ": disk.cache must be \"writeback\" or \"none\", not \"" +
                          dc.cache + "\"");
      if (dc.cache == "none" && dc.format != "raw")
        return make_error(origin + ": disk.cache = \"none\" is supported for raw images only");
      auto aio = get_opt<std::string>(d, "aio", origin, "disk.");
      if (!aio) return aio.error();
      dc.aio = aio->value_or("auto");
      if (dc.aio != "auto" && dc.aio != "io_uring" && dc.aio != "sync")
        return make_error(origin + ": disk.aio must be \"auto\", \"io_uring\" or \"sync\", not \"" +
                          dc.aio + "\"");
      if (dc.aio == "io_uring" && dc.format != "raw")
        return make_error(origin + ": disk.aio = \"io_uring\" is supported for raw images only");
      auto queues = get_queues(d, origin, "disk.", 16);
      if (!queues) return queues.error();
      dc.queues = *queues;
      g.disks.push_back(std::move(dc));
    }
  }
  auto nics = table_array(t, "nic", origin);
  if (!nics) return nics.error();
  if (*nics) {
    for (const toml::node& n : **nics) {
      const toml::table& d = *n.as_table();
      if (auto s = check_keys(d, {"driver", "mac", "queues"}, origin, "nic."); !s) return s.error();
      NicConfig nc;
      auto drv = get_req<std::string>(d, "driver", origin, "nic.");
      if (!drv) return drv.error();
      auto mac = get_req<std::string>(d, "mac", origin, "nic.");
      if (!mac) return mac.error();
      auto m = parse_mac(*mac);
      if (!m) return make_error(origin + ": " + m.error().message);
      nc.driver = *drv;
      nc.mac = *m;
      auto queues = get_queues(d, origin, "nic.", 8);
      if (!queues) return queues.error();
      nc.queues = *queues;
      g.nics.push_back(std::move(nc));
    }
  }
  size_t boot_disks = 0;
  for (const auto& d : g.disks) boot_disks += d.boot;
  if (!g.firmware.empty() && boot_disks != 1)
    return make_error(origin + ": firmware = \"" + g.firmware +
                      "\" needs exactly one [[disk]] with boot = true");
  if (g.firmware.empty() && boot_disks)
    return make_error(origin + ": disk.boot = true needs firmware = \"bios\" or \"uefi\"");
  if (const toml::node* gn = t.get("guest")) {
    const toml::table* gt = gn->as_table();
    if (!gt) return make_error(origin + ": [guest] must be a table");
    if (auto s = check_keys(*gt, {"script"}, origin, "guest."); !s) return s.error();
    auto sc = get_opt<std::string>(*gt, "script", origin, "guest.");
    if (!sc) return sc.error();
    if (sc->has_value()) g.script = resolve(base_dir, **sc);
    if (sc->has_value() && !g.firmware.empty())
      return make_error(origin + ": guest.script does not apply to firmware = \"" + g.firmware +
                        "\" (the OS on the boot disk runs what it runs)");
  }
  if (const toml::node* vn = t.get("vtpm")) {
    const toml::table* vt = vn->as_table();
    if (!vt) return make_error(origin + ": [vtpm] must be a table");
    if (auto s = check_keys(*vt, {"enabled", "command_port"}, origin, "vtpm."); !s)
      return s.error();
    auto en = get_opt<bool>(*vt, "enabled", origin, "vtpm.");
    if (!en) return en.error();
    g.vtpm.enabled = en->value_or(false);
    auto port = get_opt<int64_t>(*vt, "command_port", origin, "vtpm.");
    if (!port) return port.error();
    if (port->has_value()) {
      // The port and port + 1 (control) must both be unprivileged ports.
      if (**port < 1024 || **port > 65534)
        return make_error(origin + ": vtpm.command_port must be between 1024 and 65534");
      if (!g.vtpm.enabled)
        return make_error(origin + ": vtpm.command_port needs vtpm.enabled = true");
      g.vtpm.command_port = uint32_t(**port);
    }
  }
  return g;
}

}  // namespace axl::config
