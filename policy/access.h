// The host's access policy and its one decision point (docs/policy.md).
//
// A policy is a TOML file: labels for operators (by uid, group or D-Bus
// name), guests, driver domains and vTPM domains (by name patterns), and
// rules `[allow|deny] SUBJECT -> OBJECT : PERMISSION[, PERMISSION...]`.
// Every control operation of the hypervisor and the supervisor asks
// `DecisionPoint::check` first, whichever door it came through (axl's
// control sockets or D-Bus).  Default deny: what no rule allows is refused;
// an explicit deny wins over any allow.  Each decision is audited (one
// structured log line, and journald when the host has it) and counted.
//
// Without a policy file the built-in one applies (`builtin_policy_text()`):
// root may do everything, guests may attach to any driver domain, and driver
// domains may serve any guest; nothing else is allowed.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace axl::policy {

enum class Permission : uint8_t {
  kCreate,
  kDestroy,
  kConsole,
  kExec,
  kAttachNet,
  kAttachBlk,
  kBindChannel,
  kKill,
  kRestart,
  kInjectFault,
  kVtpmAccess,
  kAttest,
  kSave,
  kRestore,
  kMigrate,
};
inline constexpr size_t kPermissions = 15;
inline constexpr size_t kMaxPolicyBytes = 1 << 20;
const char* to_string(Permission p);
std::optional<Permission> permission_from(std::string_view s);

// What a rule's object is: a guest (a domain), a driver domain, or a
// domain's vTPM domain.
enum class Kind : uint8_t { kOperator, kGuest, kDriver, kVtpm };
const char* to_string(Kind k);

// Who asks: an operator (a process on a control socket, or a D-Bus sender),
// or a domain acting on another (a guest attaching to a driver, a driver
// domain bound to serve a guest).
struct Subject {
  Kind kind = Kind::kOperator;
  // kOperator:
  int uid = -1;
  std::vector<int> gids;                // primary and supplementary
  std::vector<std::string> dbus_names;  // the sender's names, when it came over D-Bus
  std::string via = "control";          // control | dbus
  // kGuest / kDriver:
  std::string name;

  static Subject op(int uid, std::vector<int> gids, std::string via = "control");
  static Subject domain(Kind k, std::string name);
  std::string describe() const;
};

struct Object {
  Kind kind = Kind::kGuest;
  std::string name;
  std::string describe() const;
};

// Per driver domain: overrides of the host config's restart settings and
// limits, and the driver its devices fail over to (empty: none).
struct DriverSettings {
  std::optional<uint32_t> restart_max, restart_window_s, backoff_ms;
  std::optional<uint32_t> memory_max_mib, pids_max, cpu_percent;
  std::string failover;
};

// Per guest: what every domain under the label must have.
struct GuestSettings {
  bool require_vtpm = false;
  std::string golden;  // golden values for `axl attest` (TOML), absolute
};

struct Decision {
  bool allowed = false;
  std::string rule;  // "FILE:LINE:COLUMN" of the deciding rule, or "default deny"
  // One line: "policy: uid 1000 (ops) may not destroy guest web (deny at p.toml:9:3)".
  std::string message;
};

// The one-line error of a denial, as every door (axl, D-Bus) reports it;
// D-Bus turns a message that starts so into AccessDenied.
inline std::string denied(const Decision& d) { return "denied by " + d.message; }

class Policy {
 public:
  // Every error names origin:line:column and what is wrong.
  static Result<Policy> parse(std::string_view toml_text, const std::string& origin);
  static const Policy& builtin();

  Decision decide(const Subject& s, Permission p, const Object& o) const;
  // Settings of the first label naming this driver (guest) that has any.
  DriverSettings driver(const std::string& name) const;
  GuestSettings guest(const std::string& name) const;
  const std::string& origin() const { return origin_; }
  // The labels that name this subject, for audit lines.
  std::vector<std::string> labels_of(const Subject& s) const;

 private:
  struct Label {
    std::string name;
    Kind kind = Kind::kOperator;
    // operator selectors (all given must match)
    std::optional<int> uid, gid;
    std::string dbus_name;
    // guest / driver / vtpm: name patterns (fnmatch)
    std::vector<std::string> patterns;
    DriverSettings driver;
    GuestSettings guest;
    bool has_settings = false;
  };
  struct Rule {
    bool allow = true;
    std::string subject, object;  // a label or "*"
    std::array<bool, kPermissions> perms{};
    std::string where;
  };
  bool matches(const Label& l, const Subject& s) const;
  bool matches(const std::string& label, const Subject& s) const;
  bool matches(const std::string& label, const Object& o) const;
  const Label* find(const std::string& name) const;

  std::string origin_;
  std::vector<Label> labels_;
  std::vector<Rule> rules_;
};

// The text of the built-in policy (also shipped as dist/policy/default.toml).
std::string_view builtin_policy_text();

// The policy in force in one daemon, with its audit trail and counters.
class DecisionPoint {
 public:
  explicit DecisionPoint(std::string daemon) : daemon_(std::move(daemon)) {}
  void set(Policy p) { policy_ = std::move(p); }
  const Policy& policy() const { return policy_ ? *policy_ : Policy::builtin(); }
  // Decides, writes the audit line, counts.
  Decision check(const Subject& s, Permission p, const Object& o);
  uint64_t allowed() const { return allowed_; }
  uint64_t denied() const { return denied_; }
  // Called after each decision is counted (the hypervisor reports its counts).
  void on_decided(std::function<void()> f) { on_decided_ = std::move(f); }

 private:
  std::function<void()> on_decided_;
  std::string daemon_;
  std::optional<Policy> policy_;
  uint64_t allowed_ = 0, denied_ = 0;
};

}  // namespace axl::policy
