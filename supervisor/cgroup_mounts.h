// `ip netns exec` gives its command a fresh /sys, without the host's cgroup
// mounts.  A supervisor started that way mounts the hierarchies it is a
// member of (per /proc/self/cgroup) privately under its state dir, so driver
// limits work inside per-host network namespaces too.  The mounts live in
// that private mount namespace only and go with it.
#pragma once
#include <string>

#include "common/result.h"

namespace axl::supervisor {

// Mounts memory, pids and cpu hierarchies (v1) or the unified one (v2)
// under `dir`; returns how many were mounted.
Result<int> mount_cgroups_privately(const std::string& dir);

}  // namespace axl::supervisor
