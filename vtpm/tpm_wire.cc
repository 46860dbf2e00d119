#include "vtpm/tpm_wire.h"

namespace axl::vtpm::tpm {

Command::Command(uint32_t code, std::vector<uint32_t> handles, int password_sessions) {
  u16(password_sessions > 0 ? kStSessions : kStNoSessions).u32(0).u32(code);
  for (uint32_t h : handles) u32(h);
  if (password_sessions > 0) {
    // Each password session: handle, empty nonce, attributes 0, empty hmac.
    u32(static_cast<uint32_t>(password_sessions) * 9);
    for (int i = 0; i < password_sessions; ++i) u32(kRsPw).u16(0).u8(0).u16(0);
  }
}
Command& Command::u8(uint8_t v) {
  b_.push_back(v);
  return *this;
}
Command& Command::u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(v & 0xff); }
Command& Command::u32(uint32_t v) {
  return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v & 0xffff));
}
Command& Command::bytes(std::span<const uint8_t> b) {
  b_.insert(b_.end(), b.begin(), b.end());
  return *this;
}
Command& Command::tpm2b(std::span<const uint8_t> b) {
  return u16(static_cast<uint16_t>(b.size())).bytes(b);
}
Command& Command::open() {
  open_.push_back(b_.size());
  return u16(0);
}
Command& Command::close() {
  const size_t at = open_.back();
  open_.pop_back();
  const size_t n = b_.size() - at - 2;
  b_[at] = static_cast<uint8_t>(n >> 8);
  b_[at + 1] = static_cast<uint8_t>(n);
  return *this;
}
std::vector<uint8_t> Command::finish() {
  const auto n = static_cast<uint32_t>(b_.size());
  for (int i = 0; i < 4; ++i) b_[2 + i] = static_cast<uint8_t>(n >> (24 - 8 * i));
  return b_;
}

bool Reader::u8(uint8_t& v) {
  if (left() < 1) return false;
  v = b_[pos_++];
  return true;
}
bool Reader::u16(uint16_t& v) {
  if (left() < 2) return false;
  v = static_cast<uint16_t>(b_[pos_] << 8 | b_[pos_ + 1]);
  pos_ += 2;
  return true;
}
bool Reader::u32(uint32_t& v) {
  uint16_t hi, lo;
  if (left() < 4 || !u16(hi) || !u16(lo)) return false;
  v = uint32_t{hi} << 16 | lo;
  return true;
}
bool Reader::tpm2b(std::span<const uint8_t>& v) {
  uint16_t n;
  if (!u16(n) || left() < n) return false;
  v = b_.subspan(pos_, n);
  pos_ += n;
  return true;
}
bool Reader::skip(size_t n) {
  if (left() < n) return false;
  pos_ += n;
  return true;
}

std::optional<Header> header(std::span<const uint8_t> b) {
  Reader r(b);
  Header h{};
  if (!r.u16(h.tag) || !r.u32(h.size) || !r.u32(h.code)) return std::nullopt;
  return h;
}

Result<uint32_t> response_code(std::span<const uint8_t> rsp) {
  auto h = header(rsp);
  if (!h || h->size != rsp.size()) return make_error("malformed TPM response");
  return h->code;
}

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
    if (!a.u32(handle) || !a.tpm2b(nonce) || !a.u8(attrs) || !a.tpm2b(hmac)) return false;
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

std::vector<uint8_t> error_response(uint32_t rc) {
  std::vector<uint8_t> v{0x80, 0x01, 0, 0, 0, 10};
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(rc >> (24 - 8 * i)));
  return v;
}

}  // namespace axl::vtpm::tpm
