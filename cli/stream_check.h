// Checks a byte stream against `axl-tool gen SEED` (guest/tools/axl_tool.c):
// xorshift64* words, little-endian, from a state mixed out of the seed.
#pragma once
#include <cstddef>
#include <cstdint>

namespace axl::campaign {

class StreamChecker {
 public:
  explicit StreamChecker(uint64_t seed) {
    x_ = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (x_ == 0) x_ = 1;
  }
  // The next n bytes received; counts those that differ from the generator.
  void feed(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (pos_ % 8 == 0) next_word();
      if (p[i] != uint8_t(word_ >> (8 * (pos_ % 8)))) ++corrupted_;
      ++pos_;
    }
  }
  uint64_t bytes() const { return pos_; }
  uint64_t corrupted() const { return corrupted_; }

 private:
  void next_word() {
    x_ ^= x_ >> 12;
    x_ ^= x_ << 25;
    x_ ^= x_ >> 27;
    word_ = x_ * 0x2545F4914F6CDD1Dull;
  }
  uint64_t x_;
  uint64_t word_ = 0;
  uint64_t pos_ = 0;
  uint64_t corrupted_ = 0;
};

}  // namespace axl::campaign
