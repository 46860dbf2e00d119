// TAP devices for net driver domains.  The supervisor holds the TAP fd and
// hands a copy to the driver, so a restarted driver gets the same interface.
#pragma once
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::supervisor {

// Opens (creating if missing, in the caller's network namespace) TAP `name`
// with IFF_VNET_HDR and a 12-byte virtio_net_hdr_v1, and sets the link up.
Result<UniqueFd> open_tap(const std::string& name);

}  // namespace axl::supervisor
