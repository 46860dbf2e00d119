#include "common/daemon_fault.h"

#include <cstdlib>
#include <memory>

#include "common/log.h"

namespace axl {

Status crash_on_request(boost::asio::io_context& io, const std::string& daemon,
                        const std::string& fault, bool enabled, const wire::PeerCred& peer) {
  if (!enabled)
    return make_error(
        "fault injection is disabled for the host daemons (set "
        "daemon_fault_injection = true in the host config)");
  if (peer.uid != 0) return make_error("only root may crash a host daemon");
  if (fault != "crash") return make_error("unknown daemon fault '" + fault + "' (crash)");
  AXL_WARN("fault hook: crash (asked by pid %d): aborting in 50 ms", peer.pid);
  // The reply goes out first: the caller learns the request was taken.
  auto t = std::make_shared<boost::asio::steady_timer>(io, std::chrono::milliseconds(50));
  t->async_wait([t](const boost::system::error_code&) { std::abort(); });
  (void)daemon;
  return {};
}

}  // namespace axl
