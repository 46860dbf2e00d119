#include "common/fault_trigger.h"

#include <cmath>

namespace axl {

Status FaultTrigger::check() const {
  if (!(probability >= 0 && probability <= 1))  // NaN fails both
    return make_error("probability must be between 0 and 1");
  return {};
}

TriggerState::TriggerState(const FaultTrigger& t) : left_(t.after), p_(t.probability), x_(t.seed) {}

bool TriggerState::tick() {
  if (left_ > 0) {
    --left_;
    return false;
  }
  if (p_ <= 0 || p_ >= 1) return true;
  // splitmix64 (Steele, Lea, Flood 2014), then 53 bits as a double in [0, 1).
  uint64_t z = (x_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53 < p_;
}

}  // namespace axl
