// A driver domain keeps only the fds it was meant to have (docs/architecture.md,
// "Confinement"): whatever else leaked across exec from the supervisor is
// closed before the process talks to anyone.
#pragma once
#include <span>

#include "common/result.h"

namespace axl::driverdom {

// Closes every fd >= 3 not listed in `keep`.
Status close_inherited_fds(std::span<const int> keep);

}  // namespace axl::driverdom
