#include "cli/campaign_config.h"

#include <arpa/inet.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cmath>
#include <iterator>
#include <set>

#include "common/config.h"

namespace axl::campaign {

namespace {

// Faults a campaign injects into a driver domain: every hook that breaks a
// running driver (the attach and escape hooks test other things), the
// SIGKILL from outside, and corrupt-read, which only a build with test
// hooks has (the driver refuses it otherwise).
constexpr const char* kDriverFaults[] = {"kill",
                                         "crash",
                                         "hang",
                                         "cpu-hog",
                                         "hog-memory",
                                         "leak",
                                         "hog-pids",
                                         "wild-write",
                                         "bogus-id",
                                         "bogus-len",
                                         "dup-completion",
                                         "stall",
                                         "drop-completion",
                                         "slow",
                                         "corrupt-read"};
constexpr const char* kVtpmFaults[] = {"crash", "hang", "die-in-command"};

std::string at(const std::string& origin, const toml::node& n) {
  return origin + ":" + std::to_string(n.source().begin.line);
}

Status known_keys(const toml::table& t, std::initializer_list<const char*> keys,
                  const std::string& origin, const std::string& ctx) {
  std::set<std::string> ok(keys.begin(), keys.end());
  for (auto&& [k, v] : t)
    if (!ok.count(std::string(k.str())))
      return make_error(at(origin, v) + ": unknown key '" + ctx + std::string(k.str()) + "'");
  return {};
}

// An integer key within [lo, hi], or `def` when absent.
Result<int64_t> integer(const toml::table& t, const char* key, int64_t def, int64_t lo, int64_t hi,
                        const std::string& origin, const std::string& ctx) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  auto v = n->value_exact<int64_t>();
  if (!v || *v < lo || *v > hi)
    return make_error(at(origin, *n) + ": '" + ctx + key + "' must be an integer from " +
                      std::to_string(lo) + " to " + std::to_string(hi));
  return *v;
}

Result<std::string> text(const toml::table& t, const char* key, const std::string& def,
                         const std::string& origin, const std::string& ctx) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  auto v = n->value_exact<std::string>();
  if (!v) return make_error(at(origin, *n) + ": '" + ctx + key + "' must be a string");
  return *v;
}

bool ipv4(const std::string& s, uint32_t* out) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

Result<Target> target_of(const std::string& s) {
  if (s == "disk") return Target::kDisk;
  if (s == "nic") return Target::kNic;
  if (s == "vtpm") return Target::kVtpm;
  if (s == "supervisor") return Target::kSupervisor;
  if (s == "hv") return Target::kHv;
  return make_error("target must be disk, nic, vtpm, supervisor or hv, not '" + s + "'");
}

std::string resolve_path(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/' || base.empty()) return p;
  return base + "/" + p;
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

const char* to_string(Target t) {
  switch (t) {
    case Target::kDisk:
      return "disk";
    case Target::kNic:
      return "nic";
    case Target::kVtpm:
      return "vtpm";
    case Target::kSupervisor:
      return "supervisor";
    case Target::kHv:
      return "hv";
  }
  return "?";
}

bool driver_fault(const std::string& kind) {
  return std::find(std::begin(kDriverFaults), std::end(kDriverFaults), kind) !=
         std::end(kDriverFaults);
}

bool vtpm_fault(const std::string& kind) {
  return std::find(std::begin(kVtpmFaults), std::end(kVtpmFaults), kind) != std::end(kVtpmFaults);
}

bool expects_restart(const Fault& f) { return f.kind != "slow" && f.kind != "corrupt-read"; }

Result<Config> parse(const std::string& text_in, const std::string& origin,
                     const std::string& base_dir) {
  toml::table root;
  try {
    root = toml::parse(text_in, origin);
  } catch (const toml::parse_error& e) {
    return make_error(origin + ":" + std::to_string(e.source().begin.line) + ": " +
                      std::string(e.description()));
  }
  if (auto s = known_keys(root,
                          {"seed", "injections", "report", "timeout_ms", "settle_ms", "quiet_ms",
                           "workload", "fault"},
                          origin, "");
      !s)
    return s.error();
  Config c;
  const toml::node* seed = root.get("seed");
  if (seed) {
    auto v = seed->value_exact<int64_t>();
    if (!v || *v < 0) return make_error(at(origin, *seed) + ": 'seed' must be an integer >= 0");
    c.seed = uint64_t(*v);
  }
  auto n = integer(root, "injections", -1, 1, 1000000, origin, "");
  if (!n) return n.error();
  if (*n < 0) return make_error(origin + ": missing required key 'injections'");
  c.injections = uint32_t(*n);
  auto timeout = integer(root, "timeout_ms", c.timeout_ms, 1000, 600000, origin, "");
  auto settle = integer(root, "settle_ms", c.settle_ms, 0, 600000, origin, "");
  auto slow = integer(root, "quiet_ms", c.quiet_ms, 100, 600000, origin, "");
  for (auto* r : {&timeout, &settle, &slow})
    if (!*r) return r->error();
  c.timeout_ms = uint32_t(*timeout);
  c.settle_ms = uint32_t(*settle);
  c.quiet_ms = uint32_t(*slow);
  auto report = text(root, "report", "campaign-report", origin, "");
  if (!report) return report.error();
  c.report_dir = resolve_path(base_dir, *report);

  const toml::table* w = root.get_as<toml::table>("workload");
  if (!w) return make_error(origin + ": missing [workload]");
  if (auto s = known_keys(
          *w,
          {"name", "disk", "image", "nic", "mac", "host", "guest", "port", "vtpm", "memory_mib"},
          origin, "workload.");
      !s)
    return s.error();
  struct Str {
    const char* key;
    std::string* out;
    bool required;
  };
  for (const Str& s :
       {Str{"name", &c.name, false}, Str{"disk", &c.disk_driver, true},
        Str{"image", &c.image, true}, Str{"nic", &c.nic_driver, true}, Str{"mac", &c.mac, false},
        Str{"host", &c.host_addr, true}, Str{"guest", &c.guest_addr, true}}) {
    auto v = text(*w, s.key, *s.out, origin, "workload.");
    if (!v) return v.error();
    if (s.required && v->empty())
      return make_error(origin + ": missing required key 'workload." + s.key + "'");
    *s.out = *v;
  }
  if (!config::valid_name(c.name))
    return make_error(origin + ": workload.name '" + c.name +
                      "' is not a domain name (letters, digits, - and _, up to 32)");
  if (auto m = config::parse_mac(c.mac); !m)
    return make_error(origin + ": workload.mac: " + m.error().message);
  c.image = resolve_path(base_dir, c.image);
  uint32_t h = 0, g = 0;
  if (!ipv4(c.host_addr, &h))
    return make_error(origin + ": workload.host '" + c.host_addr + "' is not an IPv4 address");
  if (!ipv4(c.guest_addr, &g))
    return make_error(origin + ": workload.guest '" + c.guest_addr + "' is not an IPv4 address");
  if ((h >> 8) != (g >> 8) || h == g || (g & 0xff) == 0 || (g & 0xff) == 255)
    return make_error(origin + ": workload.host and workload.guest must be two hosts of one /24");
  auto port = integer(*w, "port", c.port, 1, 65533, origin, "workload.");
  if (!port) return port.error();
  c.port = uint16_t(*port);
  auto mem = integer(*w, "memory_mib", c.memory_mib, 256, 65536, origin, "workload.");
  if (!mem) return mem.error();
  c.memory_mib = uint32_t(*mem);
  if (const toml::node* v = w->get("vtpm")) {
    auto b = v->value_exact<bool>();
    if (!b) return make_error(at(origin, *v) + ": 'workload.vtpm' must be a boolean");
    c.vtpm = *b;
  }

  const toml::array* faults = root.get_as<toml::array>("fault");
  if (!faults || faults->empty())
    return make_error(origin + ": no [[fault]] defined (the mix to draw from)");
  std::set<std::string> seen;
  for (const toml::node& fn : *faults) {
    const toml::table* f = fn.as_table();
    if (!f) return make_error(at(origin, fn) + ": [[fault]] must be a table");
    if (auto s = known_keys(*f, {"target", "kind", "weight"}, origin, "fault."); !s)
      return s.error();
    auto tgt = text(*f, "target", "", origin, "fault.");
    auto kind = text(*f, "kind", "", origin, "fault.");
    if (!tgt) return tgt.error();
    if (!kind) return kind.error();
    auto t = target_of(*tgt);
    if (!t) return make_error(at(origin, fn) + ": " + t.error().message);
    Fault x{*t, *kind, 1.0, *tgt + ":" + *kind};
    if (const toml::node* wn = f->get("weight")) {
      auto d = wn->value<double>();
      if (!d || !std::isfinite(*d) || *d <= 0 || *d > 1e6)
        return make_error(at(origin, *wn) + ": 'fault.weight' must be a number above 0");
      x.weight = *d;
    }
    const bool ok = (x.target == Target::kDisk || x.target == Target::kNic) ? driver_fault(x.kind)
                    : x.target == Target::kVtpm                             ? vtpm_fault(x.kind)
                                                                            : x.kind == "crash";
    if (!ok)
      return make_error(at(origin, fn) + ": '" + x.kind + "' is not a campaign fault for target " +
                        *tgt + " (docs/campaigns.md lists them)");
    if (x.target == Target::kVtpm && !c.vtpm)
      return make_error(at(origin, fn) + ": a vtpm fault needs workload.vtpm = true");
    if (!seen.insert(x.label).second)
      return make_error(at(origin, fn) + ": fault " + x.label + " is listed twice");
    c.mix.push_back(std::move(x));
  }
  return c;
}

std::vector<size_t> plan(const Config& cfg) {
  std::vector<size_t> out;
  if (cfg.mix.empty()) return out;
  uint64_t x = cfg.seed;
  // Every fault of the mix once when there are injections enough (so a
  // campaign covers its mix), the rest drawn by weight, then all shuffled.
  if (cfg.injections >= cfg.mix.size())
    for (size_t k = 0; k < cfg.mix.size(); ++k) out.push_back(k);
  double total = 0;
  for (const Fault& f : cfg.mix) total += f.weight;
  while (out.size() < cfg.injections) {
    // 53 random bits: a uniform double in [0, 1).
    const double u = double(splitmix64(x) >> 11) * 0x1.0p-53 * total;
    double acc = 0;
    size_t pick = cfg.mix.size() - 1;
    for (size_t k = 0; k < cfg.mix.size(); ++k) {
      acc += cfg.mix[k].weight;
      if (u < acc) {
        pick = k;
        break;
      }
    }
    out.push_back(pick);
  }
  // Fisher-Yates, from the same generator.
  for (size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[splitmix64(x) % i]);
  return out;
}

}  // namespace axl::campaign
