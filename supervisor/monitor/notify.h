// The part of sd_notify(3)'s protocol that axolotl-monitor speaks: one
// datagram of NAME=VALUE lines, possibly with fds (SCM_RIGHTS).
#pragma once
#include <string>

#include "common/result.h"

namespace axl::monitor {

struct Notice {
  bool ready = false;   // READY=1
  bool store = false;   // FDSTORE=1: keep the fds under `name`
  bool remove = false;  // FDSTOREREMOVE=1: drop those under `name`
  std::string name;     // FDNAME=
};

// Unknown variables are ignored (sd_notify(3) defines many); a malformed
// line, a bad FDNAME, or FDSTORE/FDSTOREREMOVE without a name is an Error.
Result<Notice> parse_notice(const std::string& text);

}  // namespace axl::monitor
