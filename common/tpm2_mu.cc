#include "common/tpm2_mu.h"

#include <algorithm>

namespace axl::tpm2 {

bool Reader::u8(uint8_t& v) {
  if (left() < 1) return false;
  v = b_[pos_++];
  return true;
}
bool Reader::u16(uint16_t& v) {
  if (left() < 2) return false;
  v = uint16_t(b_[pos_] << 8 | b_[pos_ + 1]);
  pos_ += 2;
  return true;
}
bool Reader::u32(uint32_t& v) {
  uint16_t hi, lo;
  if (left() < 4 || !u16(hi) || !u16(lo)) return false;
  v = uint32_t{hi} << 16 | lo;
  return true;
}
bool Reader::u64(uint64_t& v) {
  uint32_t hi, lo;
  if (left() < 8 || !u32(hi) || !u32(lo)) return false;
  v = uint64_t{hi} << 32 | lo;
  return true;
}
bool Reader::b2(std::span<const uint8_t>& v) {
  uint16_t n;
  if (!u16(n) || left() < n) return false;
  v = b_.subspan(pos_, n);
  pos_ += n;
  return true;
}
bool Reader::b2(Bytes& v) {
  uint16_t n;
  return u16(n) && raw(v, n);
}
bool Reader::raw(Bytes& v, size_t n) {
  if (left() < n) return false;
  v.assign(b_.begin() + long(pos_), b_.begin() + long(pos_ + n));
  pos_ += n;
  return true;
}
bool Reader::skip(size_t n) {
  if (left() < n) return false;
  pos_ += n;
  return true;
}

Command::Command(uint32_t code, const std::vector<uint32_t>& handles,
                 const std::vector<Session>& sessions) {
  u16(sessions.empty() ? kStNoSessions : kStSessions).u32(0).u32(code);
  for (uint32_t h : handles) u32(h);
  if (sessions.empty()) return;
  Writer a;
  for (const Session& s : sessions) a.u32(s.handle).b2(s.nonce).u8(s.attributes).b2(s.hmac);
  u32(uint32_t(a.bytes().size())).raw(a.bytes());
}

Command::Command(uint32_t code, const std::vector<uint32_t>& handles, int password_sessions)
    : Command(code, handles, std::vector<Session>(size_t(std::max(0, password_sessions)))) {}

Bytes Command::finish() {
  const auto n = uint32_t(b_.size());
  for (int i = 0; i < 4; ++i) b_[2 + i] = uint8_t(n >> (24 - 8 * i));
  return b_;
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

Bytes error_response(uint32_t rc) {
  Bytes v{0x80, 0x01, 0, 0, 0, 10};
  for (int i = 0; i < 4; ++i) v.push_back(uint8_t(rc >> (24 - 8 * i)));
  return v;
}

}  // namespace axl::tpm2
