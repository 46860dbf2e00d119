#include "supervisor/monitor/notify.h"

#include <sstream>

#include "common/fd_store.h"

namespace axl::monitor {

Result<Notice> parse_notice(const std::string& text) {
  Notice n;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) return make_error("notice line without NAME=: " + line);
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "READY") {
      n.ready = v == "1";
    } else if (k == "FDSTORE") {
      n.store = v == "1";
    } else if (k == "FDSTOREREMOVE") {
      n.remove = v == "1";
    } else if (k == "FDNAME") {
      if (!valid_fd_name(v)) return make_error("invalid FDNAME '" + v + "'");
      n.name = v;
    }
  }
  if ((n.store || n.remove) && n.name.empty()) return make_error("FDSTORE without FDNAME");
  if (n.store && n.remove) return make_error("FDSTORE and FDSTOREREMOVE in one notice");
  return n;
}

}  // namespace axl::monitor
