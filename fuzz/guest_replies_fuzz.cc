// What a guest sends back through its agent is untrusted input to the
// hypervisor and to `axl attest` (hypervisor/daemon/guest_agent.h,
// policy/attest.h).  Input: byte 0 picks the parser, the rest is its input:
//   0  a guest-exec-status reply     1  a guest-exec reply
//   2  a sync reply (id 1)           3  a QMP reply
//   4  a firmware event log, then checked against itself as the reference
//      and against an all-zero quote
// Oracle: nothing crashes; every error is one non-empty line; a decoded
// status has a sane exit code; a log that parsed matches itself as its own
// reference on every PCR its replay covers.
#include "fuzz/fuzz_support.h"
#include "hypervisor/daemon/guest_agent.h"
#include "policy/attest.h"

namespace {

using namespace axl;

using fuzz::check_error;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  axl::fuzz::quiet_logs();
  if (size == 0) return 0;
  const std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto r = hv::qga::parse_exec_status(in);
      if (!r) {
        check_error(r.error());
      } else if (r->has_value()) {
        AXL_FUZZ_CHECK((*r)->exit_code >= -1 && (*r)->exit_code <= 65535);
      }
      break;
    }
    case 1:
      if (auto r = hv::qga::parse_exec(in); !r) check_error(r.error());
      break;
    case 2:
      if (auto r = hv::qga::parse_sync(in, 1); !r) check_error(r.error());
      break;
    case 3:
      if (auto r = hv::qga::parse_qmp_return(in); !r) check_error(r.error());
      break;
    default: {
      auto log = policy::parse_event_log(in);
      if (!log) {
        check_error(log.error());
        break;
      }
      auto replayed = policy::replay(*log);
      for (const auto& row : policy::check_firmware_boot(*log, replayed, &*log)) {
        AXL_FUZZ_CHECK(row.detail.find('\n') == std::string::npos);
        AXL_FUZZ_CHECK(row.verdict == policy::Verdict::kPass);
      }
      for (const auto& row : policy::check_firmware_boot(*log, {}, nullptr))
        AXL_FUZZ_CHECK(row.verdict == policy::Verdict::kFail);
    }
  }
  return 0;
}
