// The host and guest TOML configs (common/config.h) are user input: any text
// must give either a config that keeps the documented limits or a one-line
// error.  Built twice: fuzz_host_config (parse_host) and fuzz_guest_config
// (parse_guest).
#include <set>
#include <string>

#include "common/config.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace axl::config;

void check_error(const axl::Error& e) {
  AXL_FUZZ_CHECK(!e.message.empty());
  // config.h: "every error is one line".
  AXL_FUZZ_CHECK(e.message.find('\n') == std::string::npos);
  AXL_FUZZ_CHECK(e.message.find('\r') == std::string::npos);
}

#ifdef AXL_FUZZ_HOST_CONFIG
void run(const std::string& text) {
  auto h = parse_host(text, "host.toml");
  if (!h) return check_error(h.error());
  AXL_FUZZ_CHECK(!h->drivers.empty());
  std::set<std::string> names, taps;
  for (const DriverConfig& d : h->drivers) {
    AXL_FUZZ_CHECK(valid_name(d.name));
    AXL_FUZZ_CHECK(names.insert(d.name).second);
    AXL_FUZZ_CHECK(h->find_driver(d.name) == &d);
    if (d.kind == DriverKind::kNet) {
      AXL_FUZZ_CHECK(valid_name(d.tap) && d.tap.size() <= 15);
      AXL_FUZZ_CHECK(taps.insert(d.tap).second);
    } else {
      AXL_FUZZ_CHECK(d.tap.empty());
    }
    AXL_FUZZ_CHECK(d.heartbeat_ms >= 1 && d.heartbeat_ms <= 60000);
    AXL_FUZZ_CHECK(d.heartbeat_misses >= 1 && d.heartbeat_misses <= 1000);
    AXL_FUZZ_CHECK(d.restart_max <= 1000 && d.restart_window_s <= 86400);
    AXL_FUZZ_CHECK(d.cpu_percent <= 6400);
    AXL_FUZZ_CHECK(d.fault_at_start.empty() ||
                   (d.fault_injection && is_fault_name(d.fault_at_start)));
  }
}
#else
void run(const std::string& text) {
  auto g = parse_guest(text, "guest.toml", "/cfg");
  if (!g) return check_error(g.error());
  AXL_FUZZ_CHECK(valid_name(g->name));
  AXL_FUZZ_CHECK(g->memory_mib >= 64 && g->memory_mib <= 65536);
  AXL_FUZZ_CHECK(g->vcpus >= 1 && g->vcpus <= 64);
  AXL_FUZZ_CHECK(g->accel == "auto" || g->accel == "kvm" || g->accel == "tcg");
  AXL_FUZZ_CHECK(g->cmdline.find('\n') == std::string::npos);
  // Relative paths are resolved against the config's directory.
  for (const std::string* p : {&g->kernel, &g->initrd, &g->script})
    AXL_FUZZ_CHECK(p->empty() || (*p)[0] == '/');
  for (const DiskConfig& d : g->disks) AXL_FUZZ_CHECK(d.image.empty() || d.image[0] == '/');
  for (const NicConfig& n : g->nics) {
    AXL_FUZZ_CHECK(!(n.mac[0] & 1));  // never multicast
    auto back = parse_mac(format_mac(n.mac));
    AXL_FUZZ_CHECK(back.ok() && *back == n.mac);
  }
}
#endif

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
