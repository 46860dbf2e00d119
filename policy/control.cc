#include "policy/control.h"

#include <fcntl.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"

namespace axl::policy {

Subject subject_of(const ControlServer::Context& ctx, schema::ControlRequest::Reader req) {
  const auto& peer = ctx.peer();
  if (peer.uid == 0 && req.hasCaller() && req.getCaller().getPresent()) {
    auto c = req.getCaller();
    std::vector<int> gids;
    for (int g : c.getGids()) gids.push_back(g);
    Subject s = Subject::op(c.getUid(), std::move(gids), "dbus");
    for (auto n : c.getDbusNames()) s.dbus_names.emplace_back(n.cStr());
    return s;
  }
  return Subject::op(peer.uid, peer.gids);
}

bool authorize(DecisionPoint& dp, const ControlServer::Context& ctx,
               schema::ControlRequest::Reader req, Permission p, const Object& object,
               schema::ControlReply::Builder rep) {
  auto d = dp.check(subject_of(ctx, req), p, object);
  if (!d.allowed) {
    rep.setOk(false);
    rep.setError(denied(d));
  }
  return d.allowed;
}

void set_caller(schema::ControlRequest::Builder req, const Subject& s) {
  auto c = req.initCaller();
  c.setPresent(true);
  c.setUid(s.uid);
  auto g = c.initGids(unsigned(s.gids.size()));
  for (unsigned i = 0; i < s.gids.size(); ++i) g.set(i, s.gids[i]);
  auto n = c.initDbusNames(unsigned(s.dbus_names.size()));
  for (unsigned i = 0; i < s.dbus_names.size(); ++i) n.set(i, s.dbus_names[i]);
}

std::string policy_path(const std::string& state_dir) { return state_dir + "/policy.toml"; }

Status load_policy(DecisionPoint& dp, const std::string& state_dir) {
  const std::string path = policy_path(state_dir);
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) {
    if (errno == ENOENT) {
      AXL_INFO("policy: the built-in policy (root only)");
      return {};
    }
    return make_error("cannot open " + path + ": " + strerror(errno));
  }
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(f.get(), buf, sizeof buf)) > 0;) {
    text.append(buf, size_t(n));
    if (text.size() > kMaxPolicyBytes) return make_error(path + ": a policy is at most 1 MiB");
  }
  // Errors and audit lines name the file the operator wrote (recorded
  // beside the copy), not the copy.
  std::string origin = path;
  if (auto src = config::read_file(state_dir + "/policy.source"); src && !src->empty()) {
    std::string first = src->substr(0, src->find('\n'));
    if (!first.empty() && first.size() < 4096) origin = first;
  }
  auto p = Policy::parse(text, origin);
  if (!p) return p.error();
  AXL_INFO("policy: %s in force", origin.c_str());
  dp.set(std::move(p).value());
  return {};
}

void answer_reload(DecisionPoint& dp, const ControlServer::Context& ctx,
                   schema::ReloadPolicy::Reader r, schema::ControlReply::Builder rep,
                   const Fits& fits) {
  rep.setPolicyAllowed(dp.allowed());
  rep.setPolicyDenied(dp.denied());
  if (ctx.peer().uid != 0 && ctx.peer().uid != int(::geteuid())) {
    rep.setOk(false);
    rep.setError("reloadPolicy: root only");
    return;
  }
  if (r.getText().size() > kMaxPolicyBytes) {
    rep.setOk(false);
    rep.setError("reloadPolicy: a policy is at most 1 MiB");
    return;
  }
  std::string origin = r.getOrigin();
  if (origin.empty() || origin.size() > 4096 || origin.find('\n') != std::string::npos)
    origin = "policy";
  auto p = Policy::parse(std::string(r.getText().cStr()), origin);
  Status st = p ? Status() : Status(p.error());
  if (st && fits) st = fits(*p);
  if (!st) {
    rep.setOk(false);
    rep.setError(st.error().message);
    return;
  }
  if (r.getDryRun()) return;
  dp.set(std::move(p).value());
  AXL_INFO("policy: %s in force (reloaded)", origin.c_str());
}

}  // namespace axl::policy
