// The access policy (policy/access.h) is operator input that decides every
// control operation: any text must give either a policy whose decisions keep
// their documented shape, or a one-line error that names file:line:column.
#include <string>

#include "fuzz/fuzz_support.h"
#include "policy/access.h"

namespace {

using namespace axl::policy;

void run(const std::string& text) {
  auto p = Policy::parse(text, "p.toml");
  if (!p) {
    const std::string& m = p.error().message;
    AXL_FUZZ_CHECK(m.rfind("p.toml:", 0) == 0);
    AXL_FUZZ_CHECK(m.find('\n') == std::string::npos);
    AXL_FUZZ_CHECK(m.find('\r') == std::string::npos);
    return;
  }
  // Decisions on a few subjects and objects: each names its rule, and a
  // permission asked with the wrong kinds is never allowed.
  const Subject subjects[] = {Subject::op(0, {0}), Subject::op(1000, {1000, 1500}),
                              Subject::domain(Kind::kGuest, "web1"),
                              Subject::domain(Kind::kDriver, "net0")};
  const Object objects[] = {{Kind::kGuest, "web1"}, {Kind::kDriver, "net0"}, {Kind::kVtpm, "web1"}};
  for (const auto& s : subjects)
    for (const auto& o : objects)
      for (size_t i = 0; i < kPermissions; ++i) {
        const auto perm = Permission(i);
        Decision d = p->decide(s, perm, o);
        AXL_FUZZ_CHECK(!d.rule.empty());
        AXL_FUZZ_CHECK(d.message.find('\n') == std::string::npos);
        AXL_FUZZ_CHECK(d.allowed == (d.rule.rfind("p.toml:", 0) == 0 &&
                                     d.message.find(" may ") != std::string::npos &&
                                     d.message.find(" may not ") == std::string::npos));
        // Only these pairs can ever be allowed (docs/policy.md, "Permissions").
        const bool op_guest = s.kind == Kind::kOperator && o.kind == Kind::kGuest;
        if (d.allowed) {
          switch (perm) {
            case Permission::kAttachNet:
            case Permission::kAttachBlk:
              AXL_FUZZ_CHECK(s.kind == Kind::kGuest && o.kind == Kind::kDriver);
              break;
            case Permission::kBindChannel:
              AXL_FUZZ_CHECK(s.kind == Kind::kDriver && o.kind == Kind::kGuest);
              break;
            case Permission::kKill:
            case Permission::kRestart:
              AXL_FUZZ_CHECK(s.kind == Kind::kOperator && o.kind == Kind::kDriver);
              break;
            case Permission::kInjectFault:  // a driver's fault hooks, or a vTPM's
              AXL_FUZZ_CHECK(s.kind == Kind::kOperator &&
                             (o.kind == Kind::kDriver || o.kind == Kind::kVtpm));
              break;
            case Permission::kVtpmAccess:
              AXL_FUZZ_CHECK(s.kind == Kind::kOperator && o.kind == Kind::kVtpm);
              break;
            default:
              AXL_FUZZ_CHECK(op_guest);
          }
        }
      }
  const DriverSettings ds = p->driver("net0");
  AXL_FUZZ_CHECK(ds.failover != "net0");
  AXL_FUZZ_CHECK(!ds.restart_window_s || *ds.restart_window_s >= 1);
  const GuestSettings gs = p->guest("web1");
  AXL_FUZZ_CHECK(gs.golden.empty() || gs.golden[0] == '/');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (axl::fuzz::quiet_logs(), true);
  (void)quiet;
  if (size > axl::policy::kMaxPolicyBytes) return 0;
  run(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
