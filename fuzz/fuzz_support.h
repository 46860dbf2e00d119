// Shared pieces of the fuzz targets: a reader over the fuzz input, the
// oracle (a broken invariant aborts, so libFuzzer records a crash), and
// quiet logging (a rejected input is logged by the code under test on every
// iteration; AXL_FUZZ_LOG=1 turns the log back on to triage a crash).
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/log.h"
#include "common/result.h"

namespace axl::fuzz {

// Consumes the input front to back; past the end every read yields zeros,
// so a short input is still a complete (if dull) test case.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), left_(size) {}
  bool empty() const { return left_ == 0; }
  size_t left() const { return left_; }
  template <typename T>
  T take() {
    T v{};
    size_t n = sizeof(T) < left_ ? sizeof(T) : left_;
    memcpy(&v, p_, n);
    p_ += n;
    left_ -= n;
    return v;
  }
  uint8_t byte() { return take<uint8_t>(); }
  std::span<const uint8_t> bytes(size_t n) {
    if (n > left_) n = left_;
    std::span<const uint8_t> s(p_, n);
    p_ += n;
    left_ -= n;
    return s;
  }
  std::span<const uint8_t> rest() { return bytes(left_); }

 private:
  const uint8_t* p_;
  size_t left_;
};

[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line) {
  fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
  abort();
}

inline void quiet_logs() {
  const char* v = getenv("AXL_FUZZ_LOG");
  if (v && *v && strcmp(v, "0") != 0) {
    log::set_level(log::Level::kDebug);
    return;
  }
  // One past the highest level: nothing is written.
  log::set_level(static_cast<log::Level>(static_cast<int>(log::Level::kError) + 1));
}

}  // namespace axl::fuzz

#define AXL_FUZZ_CHECK(cond) \
  ((cond) ? (void)0 : ::axl::fuzz::invariant_failed(#cond, __FILE__, __LINE__))

namespace axl::fuzz {

// The project's rule for an Error (common/result.h): one non-empty line.
inline void check_error(const Error& e) {
  AXL_FUZZ_CHECK(!e.message.empty());
  AXL_FUZZ_CHECK(e.message.find('\n') == std::string::npos);
}

}  // namespace axl::fuzz
