// A double-quoted string with '"', '\' and the control characters (and DEL)
// escaped, the latter as \uXXXX: valid both as a JSON string (RFC 8259 §7)
// and as a TOML basic string.
#pragma once
#include <cstdio>
#include <string>

namespace axl {

inline std::string quoted(const std::string& s) {
  std::string q = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      q += '\\';
      q += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      q += buf;
    } else {
      q += char(c);
    }
  }
  return q + "\"";
}

}  // namespace axl
