// Structured logging: "axl[component] level: message key=value ..." to stderr.
// Daemons started by `axl host up` have stderr pointed at their log file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string_view>

namespace axl::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void set_component(std::string_view name);
void set_level(Level l);
void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Whether the nth occurrence (1-based) of an event an untrusted peer can
// repeat at will (a guest's malformed chain, QEMU's rejected message) is
// logged: the first 8, then only the 16th, 32nd, 64th, ...  The exact number
// is in a counter (and in each line logged), so no guest or driver can flood
// the log, and none goes unnoticed.
inline bool worth_logging(uint64_t n) { return n <= 8 || (n & (n - 1)) == 0; }

}  // namespace axl::log

#define AXL_DEBUG(...) ::axl::log::write(::axl::log::Level::kDebug, __VA_ARGS__)
#define AXL_INFO(...) ::axl::log::write(::axl::log::Level::kInfo, __VA_ARGS__)
#define AXL_WARN(...) ::axl::log::write(::axl::log::Level::kWarn, __VA_ARGS__)
#define AXL_ERROR(...) ::axl::log::write(::axl::log::Level::kError, __VA_ARGS__)
