// The bundled guest's init reports its script's exit status on the serial
// console ("AXL-GUEST-EXIT N", guest/init).  The console is the guest's
// output: a status that is not a number from 0 to 255 is an error, never a
// crash or a made-up status.
#pragma once
#include <charconv>
#include <string>

#include "common/result.h"

namespace axl::cli {

// The last status the console text reports.
inline Result<int> parse_guest_exit(const std::string& console) {
  static const std::string kTag = "AXL-GUEST-EXIT ";
  const size_t at = console.rfind(kTag);
  if (at == std::string::npos) return make_error("no script status on the console");
  const size_t from = at + kTag.size();
  size_t to = from;
  while (to < console.size() && console[to] != '\r' && console[to] != '\n') ++to;
  int v = -1;
  auto [end, ec] = std::from_chars(console.data() + from, console.data() + to, v);
  if (ec != std::errc() || end != console.data() + to || v < 0 || v > 255)
    return make_error("the console reports a script status that is not 0..255");
  return v;
}

}  // namespace axl::cli
