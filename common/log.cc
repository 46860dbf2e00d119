#include "common/log.h"

#include <time.h>

#include <cstdarg>
#include <string>

namespace axl::log {
namespace {
// Process-wide logging configuration is set once by main() before threads start.
std::string g_component = "axl";
Level g_level = Level::kInfo;
const char* name(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "?";
}
}  // namespace

void set_component(std::string_view n) { g_component = std::string(n); }
void set_level(Level l) { g_level = l; }

void write(Level l, const char* fmt, ...) {
  if (l < g_level) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%lld.%06ld %s %s: %s\n", static_cast<long long>(ts.tv_sec), ts.tv_nsec / 1000,
          g_component.c_str(), name(l), buf);
}

}  // namespace axl::log
