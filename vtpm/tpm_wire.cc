#include "vtpm/tpm_wire.h"

namespace axl::vtpm::tpm {

namespace {
// Commands that only read state, with the number of handles each takes (the
// authorisation area follows the handles).  TCG TPM 2.0 Part 3.
struct ReadOnly {
  uint32_t code;
  int handles;
};
constexpr ReadOnly kReadOnly[] = {
    {0x17B, 0},  // GetRandom
    {0x17E, 0},  // PCR_Read
    {0x17A, 0},  // GetCapability
    {0x173, 1},  // ReadPublic
    {0x181, 0},  // ReadClock
    {0x17C, 0},  // GetTestResult
    {0x169, 1},  // NV_ReadPublic
    {0x17D, 0},  // Hash
    {0x177, 1},  // VerifySignature
    {0x18A, 0},  // TestParms
    {0x158, 1},  // Quote
    {0x15D, 1},  // Sign
    {0x14E, 2},  // NV_Read
};
}  // namespace

namespace {
// True when the authorisation area after `handles` handles holds password
// sessions (TPM_RS_PW) only, which leave no session state behind.
bool only_password_sessions(std::span<const uint8_t> cmd, int handles) {
  Reader r(cmd);
  uint32_t auth_size;
  if (!r.skip(10 + 4 * static_cast<size_t>(handles)) || !r.u32(auth_size) || r.left() < auth_size) {
    return false;
  }
  Reader a(cmd.subspan(cmd.size() - r.left(), auth_size));
  while (a.left() > 0) {
    uint32_t handle;
    uint8_t attrs;
    std::span<const uint8_t> nonce, hmac;
    if (!a.u32(handle) || !a.b2(nonce) || !a.u8(attrs) || !a.b2(hmac)) return false;
    if (handle != kRsPw) return false;
  }
  return true;
}
}  // namespace

bool may_change_state(std::span<const uint8_t> cmd) {
  auto h = header(cmd);
  if (!h) return true;
  const ReadOnly* ro = nullptr;
  for (const auto& r : kReadOnly) {
    if (r.code == h->code) ro = &r;
  }
  if (!ro) return true;
  if (h->tag == kStNoSessions) return false;
  if (h->tag != kStSessions) return true;
  return !only_password_sessions(cmd, ro->handles);
}

bool replayable(std::span<const uint8_t> cmd) {
  auto h = header(cmd);
  if (!h || h->size != cmd.size() || h->tag != kStSessions) return false;
  if (h->code != kCcPcrExtend && h->code != kCcPcrEvent && h->code != kCcPcrReset) return false;
  return only_password_sessions(cmd, 1);  // each takes one handle, the PCR
}

}  // namespace axl::vtpm::tpm
