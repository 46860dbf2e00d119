#include "policy/access.h"

#include <fnmatch.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <set>
#include <sstream>

#include "common/log.h"

namespace axl::policy {

namespace {

constexpr std::array<const char*, kPermissions> kNames = {
    "create",      "destroy",      "console", "exec",    "attach_net",
    "attach_blk",  "bind_channel", "kill",    "restart", "inject_fault",
    "vtpm_access", "attest",       "save",    "restore", "migrate"};

// Who may hold a permission on what (docs/policy.md, "Permissions").
struct Applies {
  Kind subject, object;
  Kind also = Kind::kOperator;  // a second kind of object (kOperator: none)
  bool takes(Kind o) const { return o == object || (also != Kind::kOperator && o == also); }
};
Applies applies(Permission p) {
  switch (p) {
    case Permission::kAttachNet:
    case Permission::kAttachBlk:
      return {Kind::kGuest, Kind::kDriver};
    case Permission::kBindChannel:
      return {Kind::kDriver, Kind::kGuest};
    case Permission::kKill:
    case Permission::kRestart:
      return {Kind::kOperator, Kind::kDriver};
    case Permission::kInjectFault:  // a driver's fault hooks, or a vTPM's
      return {Kind::kOperator, Kind::kDriver, Kind::kVtpm};
    case Permission::kVtpmAccess:
      return {Kind::kOperator, Kind::kVtpm};
    default:
      return {Kind::kOperator, Kind::kGuest};
  }
}

const char* noun(Kind k) {
  switch (k) {
    case Kind::kOperator:
      return "operators";
    case Kind::kGuest:
      return "guests";
    case Kind::kDriver:
      return "driver domains";
    case Kind::kVtpm:
      return "vTPM domains";
  }
  return "?";
}

// Every error one line, whatever the input held.
std::string one_line(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

std::string at(const std::string& origin, const toml::source_position& p, size_t extra_col = 0) {
  return origin + ":" + std::to_string(p.line) + ":" + std::to_string(p.column + extra_col);
}

bool valid_label(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// A rule's text split into its tokens, each with its offset in the string.
struct Token {
  std::string text;
  size_t offset;
};
std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == ' ' || s[i] == '\t') {
      ++i;
    } else if (s[i] == ',' || s[i] == ':') {
      out.push_back({std::string(1, s[i]), i});
      ++i;
    } else if (s.substr(i, 2) == "->") {
      out.push_back({"->", i});
      i += 2;
    } else {
      size_t j = i;
      while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != ',' && s[j] != ':' &&
             s.substr(j, 2) != "->")
        ++j;
      out.push_back({std::string(s.substr(i, j - i)), i});
      i = j;
    }
  }
  return out;
}

}  // namespace

const char* to_string(Permission p) { return kNames[size_t(p)]; }

std::optional<Permission> permission_from(std::string_view s) {
  for (size_t i = 0; i < kNames.size(); ++i)
    if (s == kNames[i]) return Permission(i);
  return std::nullopt;
}

const char* to_string(Kind k) {
  switch (k) {
    case Kind::kOperator:
      return "operator";
    case Kind::kGuest:
      return "guest";
    case Kind::kDriver:
      return "driver";
    case Kind::kVtpm:
      return "vtpm";
  }
  return "?";
}

Subject Subject::op(int uid, std::vector<int> gids, std::string via) {
  Subject s;
  s.kind = Kind::kOperator;
  s.uid = uid;
  s.gids = std::move(gids);
  s.via = std::move(via);
  return s;
}

Subject Subject::domain(Kind k, std::string name) {
  Subject s;
  s.kind = k;
  s.name = std::move(name);
  return s;
}

std::string Subject::describe() const {
  if (kind != Kind::kOperator) return std::string(to_string(kind)) + " " + name;
  std::string d = "uid " + std::to_string(uid);
  if (via == "dbus") d += " over D-Bus";
  return d;
}

std::string Object::describe() const { return std::string(to_string(kind)) + " " + name; }

Result<Policy> Policy::parse(std::string_view text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return make_error(one_line(at(origin, e.source().begin) + ": " + std::string(e.description())));
  }
  Policy p;
  p.origin_ = origin;
  auto err = [&](const toml::node& n, const std::string& what, size_t col = 0) {
    return make_error(one_line(at(origin, n.source().begin, col) + ": " + what));
  };

  static const std::set<std::string> kTop = {"operator", "guest", "driver", "vtpm", "rules"};
  for (auto&& [k, v] : root)
    if (!kTop.count(std::string(k.str())))
      return err(v, "unknown key '" + std::string(k.str()) +
                        "' (want [[operator]], [[guest]], [[driver]], [[vtpm]] or rules)");

  const std::pair<const char*, Kind> kinds[] = {{"operator", Kind::kOperator},
                                                {"guest", Kind::kGuest},
                                                {"driver", Kind::kDriver},
                                                {"vtpm", Kind::kVtpm}};
  for (const auto& [key, kind] : kinds) {
    const toml::node* n = root.get(key);
    if (!n) continue;
    const toml::array* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables())
      return err(*n, std::string("'") + key + "' must be [[" + key + "]] tables");
    for (const toml::node& e : *arr) {
      const toml::table& t = *e.as_table();
      Label l;
      l.kind = kind;
      std::set<std::string> allowed = {"label"};
      if (kind == Kind::kOperator)
        allowed.insert({"uid", "gid", "dbus_name"});
      else
        allowed.insert("names");
      if (kind == Kind::kGuest) allowed.insert({"require_vtpm", "golden"});
      if (kind == Kind::kDriver)
        allowed.insert({"restart_max", "restart_window_s", "backoff_ms", "memory_max_mib",
                        "pids_max", "cpu_percent", "failover"});
      for (auto&& [k, v] : t)
        if (!allowed.count(std::string(k.str())))
          return err(v, "unknown key '" + std::string(k.str()) + "' in [[" + key + "]]" +
                            (k.str() == "rules" ? " (rules = [...] goes before the first [[table]])"
                                                : ""));
      const toml::node* lab = t.get("label");
      if (!lab) return err(e, std::string("[[") + key + "]] without a label");
      auto ls = lab->value_exact<std::string>();
      if (!ls || !valid_label(*ls))
        return err(*lab, "a label is 1 to 64 letters, digits, '_', '-' or '.'");
      if (p.find(*ls)) return err(*lab, "label '" + *ls + "' defined twice");
      l.name = *ls;
      auto get_u32 = [&](const char* k, std::optional<uint32_t>& out) -> Status {
        const toml::node* v = t.get(k);
        if (!v) return {};
        auto x = v->value_exact<int64_t>();
        if (!x || *x < 0 || *x > 0xffffffffLL)
          return err(*v, std::string("'") + k + "' must be an integer 0..4294967295");
        out = uint32_t(*x);
        l.has_settings = true;
        return {};
      };
      if (kind == Kind::kOperator) {
        std::optional<uint32_t> uid, gid;
        if (auto s = get_u32("uid", uid); !s) return s.error();
        if (auto s = get_u32("gid", gid); !s) return s.error();
        l.has_settings = false;
        if (uid) l.uid = int(*uid);
        if (gid) l.gid = int(*gid);
        if (const toml::node* d = t.get("dbus_name")) {
          auto s = d->value_exact<std::string>();
          if (!s || s->empty() || s->size() > 255)
            return err(*d, "'dbus_name' must be a D-Bus name (1 to 255 characters)");
          l.dbus_name = *s;
        }
        if (!l.uid && !l.gid && l.dbus_name.empty())
          return err(e, "operator '" + l.name + "' names nobody: give uid, gid or dbus_name");
      } else {
        const toml::node* names = t.get("names");
        if (!names) return err(e, std::string(key) + " '" + l.name + "' without names");
        const toml::array* na = names->as_array();
        if (!na || na->empty())
          return err(*names, "'names' must be a non-empty array of name patterns");
        for (const toml::node& x : *na) {
          auto s = x.value_exact<std::string>();
          if (!s || s->empty() || s->size() > 64)
            return err(x, "a name pattern is a string of 1 to 64 characters");
          l.patterns.push_back(*s);
        }
      }
      if (kind == Kind::kGuest) {
        if (const toml::node* v = t.get("require_vtpm")) {
          auto b = v->value_exact<bool>();
          if (!b) return err(*v, "'require_vtpm' must be true or false");
          l.guest.require_vtpm = *b;
          l.has_settings = true;
        }
        if (const toml::node* v = t.get("golden")) {
          auto s = v->value_exact<std::string>();
          if (!s || s->empty() || (*s)[0] != '/')
            return err(*v, "'golden' must be an absolute path");
          l.guest.golden = *s;
          l.has_settings = true;
        }
      }
      if (kind == Kind::kDriver) {
        auto& d = l.driver;
        for (auto [k, out] : {std::pair{"restart_max", &d.restart_max},
                              {"restart_window_s", &d.restart_window_s},
                              {"backoff_ms", &d.backoff_ms},
                              {"memory_max_mib", &d.memory_max_mib},
                              {"pids_max", &d.pids_max},
                              {"cpu_percent", &d.cpu_percent}})
          if (auto s = get_u32(k, *out); !s) return s.error();
        if (d.restart_window_s && *d.restart_window_s == 0)
          return err(*t.get("restart_window_s"), "'restart_window_s' must be at least 1");
        if (d.cpu_percent && *d.cpu_percent > 100 * 64)
          return err(*t.get("cpu_percent"), "'cpu_percent' must be at most 6400");
        if (const toml::node* v = t.get("failover")) {
          auto s = v->value_exact<std::string>();
          if (!s || !valid_label(*s)) return err(*v, "'failover' must name a driver domain");
          if (l.patterns.size() != 1 || l.patterns[0].find_first_of("*?[") != std::string::npos)
            return err(*v, "'failover' needs a label that names exactly one driver domain");
          if (*s == l.patterns[0]) return err(*v, "a driver domain cannot fail over to itself");
          d.failover = *s;
          l.has_settings = true;
        }
      }
      p.labels_.push_back(std::move(l));
    }
  }

  if (const toml::node* n = root.get("rules")) {
    const toml::array* arr = n->as_array();
    if (!arr) return err(*n, "'rules' must be an array of strings");
    for (const toml::node& e : *arr) {
      auto text_v = e.value_exact<std::string>();
      if (!text_v) return err(e, "a rule is a string: \"[allow|deny] SUBJECT -> OBJECT : PERMS\"");
      const std::string& s = *text_v;
      // Columns inside the string: one past the opening quote.
      auto bad = [&](size_t off, const std::string& what) { return err(e, what, off + 1); };
      auto toks = tokenize(s);
      Rule r;
      r.where = at(origin, e.source().begin);
      size_t i = 0;
      if (i < toks.size() && (toks[i].text == "allow" || toks[i].text == "deny")) {
        r.allow = toks[i].text == "allow";
        ++i;
      }
      auto expect_label = [&](std::string& out, bool subject) -> Status {
        if (i >= toks.size())
          return bad(s.size(), std::string("rule ends early: expected the ") +
                                   (subject ? "subject" : "object") + " label");
        const Token& t = toks[i++];
        if (t.text != "*") {
          const Label* l = p.find(t.text);
          if (!l) return bad(t.offset, "unknown label '" + t.text + "'");
          if (subject && l->kind == Kind::kVtpm)
            return bad(t.offset, "a vTPM domain cannot be a rule's subject");
          if (!subject && l->kind == Kind::kOperator)
            return bad(t.offset, "an operator cannot be a rule's object");
        }
        out = t.text;
        return {};
      };
      if (auto st = expect_label(r.subject, true); !st) return st.error();
      if (i >= toks.size() || toks[i].text != "->")
        return bad(i < toks.size() ? toks[i].offset : s.size(), "expected '->' after the subject");
      ++i;
      if (auto st = expect_label(r.object, false); !st) return st.error();
      if (i >= toks.size() || toks[i].text != ":")
        return bad(i < toks.size() ? toks[i].offset : s.size(),
                   "expected ':' and permissions after the object");
      ++i;
      const Label* sl = r.subject == "*" ? nullptr : p.find(r.subject);
      const Label* ol = r.object == "*" ? nullptr : p.find(r.object);
      bool any = false;
      for (;;) {
        if (i >= toks.size()) return bad(s.size(), "expected a permission");
        const Token& t = toks[i++];
        if (t.text == "*") {
          r.perms.fill(true);
        } else {
          auto perm = permission_from(t.text);
          if (!perm) return bad(t.offset, "unknown permission '" + t.text + "'");
          Applies a = applies(*perm);
          if (sl && sl->kind != a.subject)
            return bad(t.offset, "'" + t.text + "' is held by " + noun(a.subject) + ", and '" +
                                     sl->name + "' labels " + noun(sl->kind));
          if (ol && !a.takes(ol->kind))
            return bad(t.offset, "'" + t.text + "' applies to " + noun(a.object) +
                                     (a.also != Kind::kOperator ? std::string(" or ") + noun(a.also)
                                                                : std::string()) +
                                     ", and '" + ol->name + "' labels " + noun(ol->kind));
          r.perms[size_t(*perm)] = true;
        }
        any = true;
        if (i >= toks.size()) break;
        if (toks[i].text != ",") return bad(toks[i].offset, "expected ',' between permissions");
        ++i;
      }
      if (!any) return bad(s.size(), "expected a permission");
      p.rules_.push_back(std::move(r));
    }
  }
  return p;
}

std::string_view builtin_policy_text() {
  return R"(# The built-in policy: in force when the host config names no policy file.
rules = [
  "allow root -> * : *",
  "allow any-guest -> any-driver : attach_net, attach_blk",
  "allow any-driver -> any-guest : bind_channel",
]

[[operator]]
label = "root"
uid = 0

[[guest]]
label = "any-guest"
names = ["*"]

[[driver]]
label = "any-driver"
names = ["*"]
)";
}

const Policy& Policy::builtin() {
  static const Policy p = [] {
    auto r = Policy::parse(builtin_policy_text(), "built-in policy");
    if (!r) std::abort();  // the text above is part of this program
    return std::move(r).value();
  }();
  return p;
}

const Policy::Label* Policy::find(const std::string& name) const {
  for (const auto& l : labels_)
    if (l.name == name) return &l;
  return nullptr;
}

bool Policy::matches(const Label& l, const Subject& s) const {
  if (l.kind != s.kind) return false;
  if (s.kind == Kind::kOperator) {
    if (l.uid && *l.uid != s.uid) return false;
    if (l.gid && !contains(s.gids, *l.gid)) return false;
    if (!l.dbus_name.empty() &&
        std::find(s.dbus_names.begin(), s.dbus_names.end(), l.dbus_name) == s.dbus_names.end())
      return false;
    return true;
  }
  return std::any_of(l.patterns.begin(), l.patterns.end(), [&](const std::string& pat) {
    return ::fnmatch(pat.c_str(), s.name.c_str(), 0) == 0;
  });
}

bool Policy::matches(const std::string& label, const Subject& s) const {
  if (label == "*") return true;
  const Label* l = find(label);
  return l && matches(*l, s);
}

bool Policy::matches(const std::string& label, const Object& o) const {
  if (label == "*") return true;
  const Label* l = find(label);
  if (!l || l->kind != o.kind) return false;
  return std::any_of(l->patterns.begin(), l->patterns.end(), [&](const std::string& pat) {
    return ::fnmatch(pat.c_str(), o.name.c_str(), 0) == 0;
  });
}

std::vector<std::string> Policy::labels_of(const Subject& s) const {
  std::vector<std::string> out;
  for (const auto& l : labels_)
    if (matches(l, s)) out.push_back(l.name);
  return out;
}

Decision Policy::decide(const Subject& s, Permission p, const Object& o) const {
  const Rule* allow = nullptr;
  const Rule* deny = nullptr;
  Applies a = applies(p);
  if (s.kind == a.subject && a.takes(o.kind)) {
    for (const Rule& r : rules_) {
      if (!r.perms[size_t(p)] || !matches(r.subject, s) || !matches(r.object, o)) continue;
      if (r.allow && !allow) allow = &r;
      if (!r.allow && !deny) deny = &r;
      if (deny) break;
    }
  }
  Decision d;
  const Rule* by = deny ? deny : allow;
  d.allowed = by == allow && allow;
  d.rule = by ? by->where : "default deny";
  std::string who = s.describe();
  auto labels = labels_of(s);
  if (!labels.empty()) {
    who += " (";
    for (size_t i = 0; i < labels.size(); ++i) who += (i ? ", " : "") + labels[i];
    who += ")";
  }
  d.message = "policy: " + who + (d.allowed ? " may " : " may not ") + to_string(p) + " " +
              o.describe() + " (" +
              (by ? std::string(by->allow ? "allow" : "deny") + " at " + by->where
                  : std::string("no rule allows it: default deny")) +
              ")";
  d.message = one_line(d.message);
  return d;
}

DriverSettings Policy::driver(const std::string& name) const {
  for (const auto& l : labels_)
    if (l.kind == Kind::kDriver && l.has_settings && matches(l.name, Object{Kind::kDriver, name}))
      return l.driver;
  return {};
}

GuestSettings Policy::guest(const std::string& name) const {
  for (const auto& l : labels_)
    if (l.kind == Kind::kGuest && l.has_settings && matches(l.name, Object{Kind::kGuest, name}))
      return l.guest;
  return {};
}

Decision DecisionPoint::check(const Subject& s, Permission p, const Object& o) {
  Decision d = policy().decide(s, p, o);
  ++(d.allowed ? allowed_ : denied_);
  // The audit line: structured, one per decision.
  std::ostringstream line;
  line << "audit daemon=" << daemon_ << " subject=\"" << s.describe() << "\" object=\""
       << o.describe() << "\" permission=" << to_string(p)
       << " verdict=" << (d.allowed ? "allow" : "deny") << " rule=\"" << d.rule << "\"";
  const std::string text = one_line(line.str());
  AXL_INFO("%s", text.c_str());
  if (::access("/run/systemd/journal/socket", W_OK) == 0)
    sd_journal_send("MESSAGE=%s", text.c_str(), "SYSLOG_IDENTIFIER=axolotl-%s", daemon_.c_str(),
                    "AXL_POLICY_SUBJECT=%s", s.describe().c_str(), "AXL_POLICY_OBJECT=%s",
                    o.describe().c_str(), "AXL_POLICY_PERMISSION=%s", to_string(p),
                    "AXL_POLICY_VERDICT=%s", d.allowed ? "allow" : "deny", "AXL_POLICY_RULE=%s",
                    d.rule.c_str(), "PRIORITY=%d", d.allowed ? 6 : 4, nullptr);
  if (on_decided_) on_decided_();
  return d;
}

}  // namespace axl::policy
