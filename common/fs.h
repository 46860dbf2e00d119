// Filesystem helpers.
#pragma once
#include <string>

#include "common/result.h"

namespace axl {

// Removes `path` and everything below it; a missing path is no error.
// Another process may be removing entries in it at the same time (the
// supervisor unlinking a vTPM's sockets in a domain dir the hypervisor
// removes): std::filesystem::remove_all gives up, with the rest still there,
// when an entry vanishes under it. Here an entry that is already gone counts
// as removed, and entries created during the walk are caught by walking
// again. Symlinks are removed, never followed.
Status remove_tree(const std::string& path);

// The host's state dir: created 0700 if missing; an existing one must be a
// directory (not a symlink) owned by root or this process's user and
// writable by no one else, or it is refused (an Error naming why): another
// user who could write there could plant what the daemons then trust.
Status check_state_dir(const std::string& path);

}  // namespace axl
