// What a driver domain sends the hypervisor on its control connection
// (hypervisor/daemon/driver_messages.h): the decoders of its hello and of
// its answers to attach run on any packet.  Input:
//   bytes 0..3  the device id the hypervisor asked for (u32, little endian)
//   the rest    one SEQPACKET packet as wire::recv gets it: kept only when
//               wire would (word aligned, at most kMaxMessageBytes), then
//               read with wire's reader limits (wire::Received)
// Oracle: nothing throws; a decoded hello has a valid name, a known kind and
// a pid in [1, kMaxPid]; a decoded answer names the device asked for and a
// refusal's reason is short and printable; a rejection is Errc::kMalformed
// with a one-line reason.
#include <capnp/message.h>
#include <kj/exception.h>

#include <cstring>
#include <optional>

#include "fuzz/fuzz_support.h"
#include "hypervisor/daemon/driver_messages.h"

namespace {

using namespace axl;

void check_rejection(const Error& e) {
  AXL_FUZZ_CHECK(e.code == Errc::kMalformed);
  AXL_FUZZ_CHECK(!e.message.empty());
  AXL_FUZZ_CHECK(e.message.find('\n') == std::string::npos);
  AXL_FUZZ_CHECK(e.message.find('\r') == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool init = (fuzz::quiet_logs(), true);
  (void)init;
  fuzz::Input in(data, size);
  const uint32_t expected = in.take<uint32_t>();
  auto packet = in.rest();
  // wire::recv refuses these before any decoder sees them.
  if (packet.empty() || packet.size() % sizeof(capnp::word) != 0 ||
      packet.size() > wire::kMaxMessageBytes)
    return 0;
  auto words = kj::heapArray<capnp::word>(packet.size() / sizeof(capnp::word));
  memcpy(words.asBytes().begin(), packet.data(), packet.size());
  std::optional<wire::Received> msg;
  try {
    msg.emplace(kj::mv(words), std::vector<UniqueFd>{});
  } catch (const kj::Exception&) {
    return 0;  // a bad segment table: wire::recv answers Errc::kMalformed
  }

  auto h = hv::decode_hello(*msg);
  if (h) {
    AXL_FUZZ_CHECK(config::valid_name(h->name));
    AXL_FUZZ_CHECK(h->kind == config::DriverKind::kNet || h->kind == config::DriverKind::kBlk);
    AXL_FUZZ_CHECK(h->pid >= 1 && h->pid <= hv::kMaxPid);
  } else {
    check_rejection(h.error());
  }

  auto a = hv::decode_attached(*msg, expected);
  if (a) {
    AXL_FUZZ_CHECK(a->device_id == expected);
    AXL_FUZZ_CHECK(a->ok ? a->error.empty() : !a->error.empty());
    AXL_FUZZ_CHECK(a->error.size() <= hv::kMaxAttachErrorBytes);
    for (unsigned char c : a->error) AXL_FUZZ_CHECK(c >= 0x20 && c < 0x7f);
  } else {
    check_rejection(a.error());
  }
  // A message can be a hello or an answer, never both.
  AXL_FUZZ_CHECK(!(h.ok() && a.ok()));

  std::string what = hv::describe(*msg);
  AXL_FUZZ_CHECK(!what.empty() && what.find('\n') == std::string::npos);
  return 0;
}
