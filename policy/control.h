// The access policy at the host daemons' control sockets (policy/access.h):
// who a request's subject is, loading the policy in force, and the
// reloadPolicy request both daemons answer alike.
#pragma once
#include <functional>
#include <string>

#include "common/control_server.h"
#include "common/result.h"
#include "common/schema/control.capnp.h"
#include "policy/access.h"

namespace axl::policy {

// The operator behind a control request: its sender (SO_PEERCRED), or,
// when the sender runs as root (a host daemon forwarding a D-Bus call), the
// caller the request names.  Anyone else naming a caller is ignored: a
// caller field never widens what the sender itself may do.
Subject subject_of(const ControlServer::Context& ctx, schema::ControlRequest::Reader req);
// Decides `p` on `object` for the request's subject (subject_of).  Denied:
// `rep` says so (not ok, the error naming the rule, policy::denied) and the
// caller answers nothing else.  Both daemons gate every operation on it.
bool authorize(DecisionPoint& dp, const ControlServer::Context& ctx,
               schema::ControlRequest::Reader req, Permission p, const Object& object,
               schema::ControlReply::Builder rep);
// Fills a request's caller field from a subject (D-Bus forwarding).
void set_caller(schema::ControlRequest::Builder req, const Subject& s);

// Where `axl host up` and `axl policy reload` put the policy in force, for a
// daemon that starts (or restarts) to load: STATE/policy.toml, with the path
// of the file it came from in STATE/policy.source.
std::string policy_path(const std::string& state_dir);
// Puts STATE/policy.toml (if there is one) into `dp`; the built-in policy
// stays in force without one.  A policy file that does not parse is an error:
// a daemon refuses to start rather than run under another policy.
Status load_policy(DecisionPoint& dp, const std::string& state_dir);

// Answers reloadPolicy: root only; the text must parse and `fits` (what runs
// now must be allowed by it) or nothing changes; dryRun only checks.
using Fits = std::function<Status(const Policy&)>;
void answer_reload(DecisionPoint& dp, const ControlServer::Context& ctx,
                   schema::ReloadPolicy::Reader r, schema::ControlReply::Builder rep,
                   const Fits& fits = {});

}  // namespace axl::policy
