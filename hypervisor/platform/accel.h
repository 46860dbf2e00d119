// Which accelerator QEMU runs guests with. A /dev/kvm that opens is not proof
// that KVM works: on some hosts it only emulates guest code (about 1 M
// instructions/s, and wrong results in long mode), so "auto" runs a short guest
// program under KVM and picks it only if it ran fast and computed the right answer.
#pragma once
#include <string>
#include <string_view>

#include "common/result.h"

namespace axl::hv {

enum class Accel { kTcg, kKvm };

struct ProbeReport {
  bool usable = false;
  std::string reason;    // one line: why KVM is (not) usable
  double seconds = 0.0;  // time the guest program ran, or ran before it was stopped
};

inline constexpr const char* kKvmDevice = "/dev/kvm";

// Runs the probe in a forked child under a timer, so that a hung or crawling
// KVM cannot hang the caller. Takes under a second in the worst case.
ProbeReport probe_kvm(const std::string& device = kKvmDevice);

// The probe of the default device, run once per process and remembered:
// KVM's usability does not change while the hypervisor runs, and a create
// must not spend half a second on the hypervisor's loop each time.
const ProbeReport& probe_kvm_once();

// setting: "auto" (KVM if the probe passes, else TCG), "kvm" (error unless the
// probe passes) or "tcg". Uses probe_kvm_once().
Result<Accel> choose_accel(std::string_view setting);

// The value for QEMU's -accel option.
const char* accel_qemu_arg(Accel accel);

}  // namespace axl::hv
