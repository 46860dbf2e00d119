// When an injected fault fires (`axl inject ... --after N --probability P
// --seed S`, docs/architecture.md "Fault injection"): at once, or at a
// request the faulty domain answers.  Every request a domain answers is one
// tick; the first `after` pass, then each fires the fault with chance
// `probability` (0 meaning the first one does), drawn from a generator
// seeded with `seed`, so one seed picks the same request every time.
#pragma once
#include <cstdint>
#include <string>

#include "common/result.h"

namespace axl {

struct FaultTrigger {
  uint64_t after = 0;
  double probability = 0;
  uint64_t seed = 0;

  // No request to wait for: the fault runs when it arrives.
  bool immediate() const { return after == 0 && probability == 0; }
  // probability within [0, 1] (NaN refused).
  Status check() const;
};

// The countdown and draws of one armed trigger.
class TriggerState {
 public:
  explicit TriggerState(const FaultTrigger& t);
  // One request answered: true when the fault fires at this one.
  bool tick();

 private:
  uint64_t left_;
  double p_;
  uint64_t x_;  // splitmix64 state: the same sequence on every build
};

}  // namespace axl
