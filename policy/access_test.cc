#include "policy/access.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace axl::policy {
namespace {

constexpr const char* kPolicy = R"(rules = [
  "allow admin -> * : *",
  "allow ops -> web : console, exec, destroy",
  "deny ops -> web : destroy",
  "allow monitor -> nics : restart",
  "allow web -> nics : attach_net",
  "ops -> tpms : vtpm_access",
]

[[operator]]
label = "admin"
uid = 0

[[operator]]
label = "ops"
gid = 1500

[[operator]]
label = "monitor"
dbus_name = "org.example.Monitor"

[[guest]]
label = "web"
names = ["web*", "api"]
require_vtpm = true
golden = "/etc/axolotl/web.toml"

[[driver]]
label = "nics"
names = ["net0"]
restart_max = 3
failover = "net1"

[[vtpm]]
label = "tpms"
names = ["*"]

)";

Policy parsed(const char* text = kPolicy) {
  auto p = Policy::parse(text, "p.toml");
  EXPECT_TRUE(p) << (p ? "" : p.error().message);
  return p ? std::move(p).value() : Policy::builtin();
}

Object guest(const char* n) { return {Kind::kGuest, n}; }
Object driver(const char* n) { return {Kind::kDriver, n}; }

TEST(AccessPolicy, AllowsWhatARuleAllowsAndNamesTheRule) {
  Policy p = parsed();
  auto d = p.decide(Subject::op(1000, {100, 1500}), Permission::kConsole, guest("web1"));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.rule, "p.toml:3:3");
  EXPECT_NE(d.message.find("uid 1000 (ops) may console guest web1"), std::string::npos)
      << d.message;
}

TEST(AccessPolicy, DenyWinsOverAllow) {
  Policy p = parsed();
  auto d = p.decide(Subject::op(1000, {1500}), Permission::kDestroy, guest("api"));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "p.toml:4:3");
  EXPECT_NE(d.message.find("may not destroy guest api (deny at p.toml:4:3)"), std::string::npos)
      << d.message;
}

TEST(AccessPolicy, DefaultDeny) {
  Policy p = parsed();
  // Not in group 1500: no label, no rule.
  auto d = p.decide(Subject::op(1000, {100}), Permission::kConsole, guest("web1"));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "default deny");
  // ops, but a guest outside the label.
  EXPECT_FALSE(p.decide(Subject::op(1000, {1500}), Permission::kConsole, guest("db")).allowed);
  // A permission no rule grants them.
  EXPECT_FALSE(p.decide(Subject::op(1000, {1500}), Permission::kCreate, guest("web1")).allowed);
  EXPECT_TRUE(p.decide(Subject::op(0, {0}), Permission::kCreate, guest("db")).allowed);
}

TEST(AccessPolicy, DbusNamesAndDomainSubjects) {
  Policy p = parsed();
  Subject mon = Subject::op(1000, {}, "dbus");
  EXPECT_FALSE(p.decide(mon, Permission::kRestart, driver("net0")).allowed);
  mon.dbus_names = {"org.example.Monitor"};
  EXPECT_TRUE(p.decide(mon, Permission::kRestart, driver("net0")).allowed);
  EXPECT_FALSE(p.decide(mon, Permission::kKill, driver("net0")).allowed);
  EXPECT_TRUE(
      p.decide(Subject::domain(Kind::kGuest, "web2"), Permission::kAttachNet, driver("net0"))
          .allowed);
  EXPECT_FALSE(p.decide(Subject::domain(Kind::kGuest, "db"), Permission::kAttachNet, driver("net0"))
                   .allowed);
  // A rule without allow/deny allows.
  EXPECT_TRUE(
      p.decide(Subject::op(7, {1500}), Permission::kVtpmAccess, {Kind::kVtpm, "x"}).allowed);
  // A permission asked with the wrong kinds never matches, not even "*".
  EXPECT_FALSE(p.decide(Subject::op(0, {}), Permission::kAttachNet, driver("net0")).allowed);
}

TEST(AccessPolicy, SettingsPerLabel) {
  Policy p = parsed();
  EXPECT_TRUE(p.guest("web7").require_vtpm);
  EXPECT_EQ(p.guest("web7").golden, "/etc/axolotl/web.toml");
  EXPECT_FALSE(p.guest("db").require_vtpm);
  EXPECT_EQ(p.driver("net0").restart_max, 3u);
  EXPECT_EQ(p.driver("net0").failover, "net1");
  EXPECT_FALSE(p.driver("blk0").restart_max.has_value());
}

TEST(AccessPolicy, BuiltinAllowsOnlyRoot) {
  const Policy& p = Policy::builtin();
  EXPECT_TRUE(p.decide(Subject::op(0, {0}), Permission::kInjectFault, driver("x")).allowed);
  // inject_fault applies to vTPM domains too (axl inject --vtpm).
  EXPECT_TRUE(
      p.decide(Subject::op(0, {0}), Permission::kInjectFault, Object{Kind::kVtpm, "g"}).allowed);
  EXPECT_FALSE(
      p.decide(Subject::op(1, {1}), Permission::kInjectFault, Object{Kind::kVtpm, "g"}).allowed);
  EXPECT_FALSE(p.decide(Subject::op(1, {0}), Permission::kConsole, guest("x")).allowed);
  EXPECT_TRUE(
      p.decide(Subject::domain(Kind::kGuest, "g"), Permission::kAttachBlk, driver("b")).allowed);
  EXPECT_TRUE(
      p.decide(Subject::domain(Kind::kDriver, "b"), Permission::kBindChannel, guest("g")).allowed);
}

struct Bad {
  const char* text;
  const char* where_what;
};

TEST(AccessPolicy, ErrorsNameLineAndColumn) {
#define HDR "[[operator]]\nlabel = \"a\"\nuid = 0\n"
  const Bad cases[] = {
      {"rules = [\"allow a -> * : kil\"]\n" HDR, "p.toml:1:26: unknown permission 'kil'"},
      {"rules = [\"allow b -> * : kill\"]\n" HDR, "p.toml:1:17: unknown label 'b'"},
      {"rules = [\"allow a -> g : kill\"]\n" HDR "[[guest]]\nlabel = \"g\"\nnames = [\"*\"]\n",
       "p.toml:1:26: 'kill' applies to driver domains, and 'g' labels guests"},
      {"rules = [\"allow a -> g : inject_fault\"]\n" HDR
       "[[guest]]\nlabel = \"g\"\nnames = [\"*\"]\n",
       "p.toml:1:26: 'inject_fault' applies to driver domains or vTPM domains, and 'g' labels "
       "guests"},
      {"rules = [\"allow a g : kill\"]\n" HDR, "p.toml:1:19: expected '->' after the subject"},
      {"rules = [\"allow a -> *\"]\n" HDR, "p.toml:1:23: expected ':' and permissions"},
      {"rules = [\"a -> * : kill kill\"]\n" HDR, "p.toml:1:25: expected ',' between permissions"},
      {"[[operator]]\nlabel = \"a\"\nuid = 0\nrules = [\"x\"]\n",
       "p.toml:4:9: unknown key 'rules' in [[operator]] (rules = [...] goes before"},
      {"[[operator]]\nlabel = \"a\"\n", "p.toml:1:1: operator 'a' names nobody"},
      {"[[operator]]\nlabel = \"a\"\nuid = -1\n", "p.toml:3:7: 'uid' must be an integer"},
      {"[[guest]]\nlabel = \"a\"\nnames = [\"x\"]\n[[driver]]\nlabel = \"a\"\nnames = [\"y\"]\n",
       "p.toml:5:9: label 'a' defined twice"},
      {"[[guest]]\nlabel = \"a\"\nnames = [\"x\"]\nfoo = 1\n", "p.toml:4:7: unknown key 'foo'"},
      {"[[driver]]\nlabel = \"d\"\nnames = [\"n*\"]\nfailover = \"n2\"\n",
       "p.toml:4:12: 'failover' needs a label that names exactly one"},
      {"rules = [\"allow * -> * : *\"\n", "p.toml:1:29:"},
      {"[[guest]]\nlabel = \"g\"\nnames = [\"x\"]\ngolden = \"rel.toml\"\n",
       "p.toml:4:10: 'golden' must be an absolute path"},
      {"bogus = 1\n", "p.toml:1:9: unknown key 'bogus'"},
  };
  for (const auto& c : cases) {
    auto p = Policy::parse(c.text, "p.toml");
    ASSERT_FALSE(p) << c.text;
    EXPECT_EQ(p.error().message.rfind(c.where_what, 0), 0u)
        << "got: " << p.error().message << "\nwant prefix: " << c.where_what;
    EXPECT_EQ(p.error().message.find('\n'), std::string::npos);
  }
#undef HDR
}

TEST(AccessPolicy, DecisionPointCounts) {
  DecisionPoint dp("test");
  EXPECT_TRUE(dp.check(Subject::op(0, {}), Permission::kCreate, guest("g")).allowed);
  EXPECT_FALSE(dp.check(Subject::op(5, {}), Permission::kCreate, guest("g")).allowed);
  EXPECT_EQ(dp.allowed(), 1u);
  EXPECT_EQ(dp.denied(), 1u);
  dp.set(parsed());
  EXPECT_FALSE(dp.check(Subject::op(5, {}), Permission::kConsole, guest("web")).allowed);
  EXPECT_TRUE(dp.check(Subject::op(5, {1500}), Permission::kConsole, guest("web")).allowed);
  EXPECT_EQ(dp.denied(), 2u);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(AccessPolicy, ShippedExamplesParseAndTheDefaultIsTheBuiltIn) {
  const std::string dir = std::string(AXL_SOURCE_DIR) + "/dist/policy/";
  EXPECT_EQ(slurp(dir + "default.toml"), builtin_policy_text());
  for (const char* f : {"default.toml", "ha-host.toml", "fault-lab.toml", "locked-down.toml"}) {
    auto p = Policy::parse(slurp(dir + f), f);
    ASSERT_TRUE(p) << p.error().message;
  }
  auto ha = Policy::parse(slurp(dir + "ha-host.toml"), "ha");
  EXPECT_EQ(ha->driver("net0").failover, "net1");
  EXPECT_FALSE(ha->decide(Subject::op(0, {0}), Permission::kInjectFault, driver("net0")).allowed);
  EXPECT_TRUE(ha->decide(Subject::op(5, {1000}), Permission::kConsole, guest("g")).allowed);
  auto locked = Policy::parse(slurp(dir + "locked-down.toml"), "locked");
  EXPECT_TRUE(locked->guest("g").require_vtpm);
  EXPECT_FALSE(locked->decide(Subject::op(0, {0}), Permission::kInjectFault, driver("d")).allowed);
  EXPECT_FALSE(locked->decide(Subject::op(0, {0}), Permission::kExec, guest("g")).allowed);
  auto lab = Policy::parse(slurp(dir + "fault-lab.toml"), "lab");
  EXPECT_TRUE(lab->decide(Subject::op(9, {1001}), Permission::kInjectFault, driver("d")).allowed);
}

}  // namespace
}  // namespace axl::policy
