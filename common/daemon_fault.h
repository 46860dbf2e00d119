// Fault injection into the host daemons themselves (`axl inject --daemon
// supervisor|hv crash`): the daemon aborts, as a bug would make it, and its
// monitor restarts it (docs/architecture.md, "No single point of failure").
// Reachable only with the host config's daemon_fault_injection = true, and
// only for root whatever the access policy says (the policy's objects are
// domains, not the daemons that enforce it).
#pragma once
#include <string>

#include "common/asio.h"
#include "common/result.h"
#include "common/wire.h"

namespace axl {

// Checks the request and, when it stands, aborts this process shortly
// after (once the reply is on its way); the error otherwise.  `daemon` names
// this process in messages.
Status crash_on_request(boost::asio::io_context& io, const std::string& daemon,
                        const std::string& fault, bool enabled, const wire::PeerCred& peer);

}  // namespace axl
