// What the access policy asks of a domain's config (policy/access.h,
// docs/policy.md): the operator may create it, its label's requirements hold
// (require_vtpm), each of its devices may attach to its driver domain, and
// each of those driver domains may serve it (bind_channel).
#pragma once
#include <functional>

#include "common/config.h"
#include "common/result.h"
#include "policy/access.h"

namespace axl::hv {

using Decide = std::function<policy::Decision(const policy::Subject&, policy::Permission,
                                              const policy::Object&)>;

// `op`: the operator creating it; null checks only the domain's own
// permissions and requirements (a running domain against a policy to be
// reloaded).  The first refusal is the error, one line naming its rule.
Status check_domain(const policy::Policy& policy, const Decide& decide, const policy::Subject* op,
                    const config::GuestConfig& cfg);

}  // namespace axl::hv
