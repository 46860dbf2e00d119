// Structured logging: "axl[component] level: message key=value ..." to stderr.
// Daemons started by `axl host up` have stderr pointed at their log file.
#pragma once
#include <cstdio>
#include <string_view>

namespace axl::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void set_component(std::string_view name);
void set_level(Level l);
void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace axl::log

#define AXL_DEBUG(...) ::axl::log::write(::axl::log::Level::kDebug, __VA_ARGS__)
#define AXL_INFO(...) ::axl::log::write(::axl::log::Level::kInfo, __VA_ARGS__)
#define AXL_WARN(...) ::axl::log::write(::axl::log::Level::kWarn, __VA_ARGS__)
#define AXL_ERROR(...) ::axl::log::write(::axl::log::Level::kError, __VA_ARGS__)
