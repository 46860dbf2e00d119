// TPM 2.0 marshalling, shared by the vTPM (vtpm/) and the verifier (policy/):
// big-endian integers and TPM2B size-prefixed buffers (TCG TPM 2.0 Library,
// Part 2), and the command framing of Part 1 (header, handles, authorisation
// area, parameters).  Whatever a TPM or a guest sends is untrusted: a Reader
// never reads past its buffer and says so by returning false.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"

namespace axl::tpm2 {

using Bytes = std::vector<uint8_t>;

inline constexpr uint16_t kStNoSessions = 0x8001;
inline constexpr uint16_t kStSessions = 0x8002;
inline constexpr uint32_t kRhOwner = 0x40000001;
inline constexpr uint32_t kRhNull = 0x40000007;
inline constexpr uint32_t kRsPw = 0x40000009;
inline constexpr uint32_t kRhEndorsement = 0x4000000B;
inline constexpr uint32_t kRhPlatform = 0x4000000C;
inline constexpr uint16_t kAlgAes = 0x0006;
inline constexpr uint16_t kAlgSha256 = 0x000B;
inline constexpr uint16_t kAlgNull = 0x0010;
inline constexpr uint16_t kAlgEcdsa = 0x0018;
inline constexpr uint16_t kAlgEcc = 0x0023;
inline constexpr uint16_t kAlgCfb = 0x0043;
inline constexpr uint16_t kCurveP256 = 0x0003;

inline constexpr uint32_t kCcEvictControl = 0x120;
inline constexpr uint32_t kCcNvDefineSpace = 0x12A;
inline constexpr uint32_t kCcCreatePrimary = 0x131;
inline constexpr uint32_t kCcNvWrite = 0x137;
inline constexpr uint32_t kCcPcrEvent = 0x13C;
inline constexpr uint32_t kCcPcrReset = 0x13D;
inline constexpr uint32_t kCcStartup = 0x144;
inline constexpr uint32_t kCcShutdown = 0x145;
inline constexpr uint32_t kCcStirRandom = 0x146;
inline constexpr uint32_t kCcQuote = 0x158;
inline constexpr uint32_t kCcFlushContext = 0x165;
inline constexpr uint32_t kCcGetRandom = 0x17B;
inline constexpr uint32_t kCcPcrExtend = 0x182;

inline constexpr uint32_t kRcSuccess = 0;
inline constexpr uint32_t kRcInitialize = 0x100;
inline constexpr uint32_t kRcFailure = 0x101;
inline constexpr uint32_t kRcCommandSize = 0x142;
inline constexpr uint32_t kRcCanceled = 0x909;

// Appends big-endian fields; chainable.  open()/close() bracket a structure
// whose u16 size (TPM2B) is filled in once its end is known.
template <typename Self>
class BasicWriter {
 public:
  Self& u8(uint8_t v) {
    b_.push_back(v);
    return self();
  }
  Self& u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Self& u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Self& u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
  Self& raw(std::span<const uint8_t> b) {
    b_.insert(b_.end(), b.begin(), b.end());
    return self();
  }
  Self& b2(std::span<const uint8_t> b) { return u16(uint16_t(b.size())).raw(b); }
  Self& open() {
    open_.push_back(b_.size());
    return u16(0);
  }
  Self& close() {
    const size_t at = open_.back();
    open_.pop_back();
    const size_t n = b_.size() - at - 2;
    b_[at] = uint8_t(n >> 8);
    b_[at + 1] = uint8_t(n);
    return self();
  }
  const Bytes& bytes() const { return b_; }

 protected:
  Bytes b_;

 private:
  Self& self() { return static_cast<Self&>(*this); }
  std::vector<size_t> open_;
};

class Writer : public BasicWriter<Writer> {};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool u8(uint8_t& v);
  bool u16(uint16_t& v);
  bool u32(uint32_t& v);
  bool u64(uint64_t& v);
  bool b2(std::span<const uint8_t>& v);  // a view into the buffer
  bool b2(Bytes& v);                     // a copy
  bool raw(Bytes& v, size_t n);
  bool skip(size_t n);
  size_t left() const { return b_.size() - pos_; }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

// One authorisation session in a command's authorisation area.
struct Session {
  uint32_t handle = kRsPw;
  Bytes nonce;
  uint8_t attributes = 0;
  Bytes hmac;
};

// A command: header, handles and the authorisation area (tag
// TPM_ST_SESSIONS when there are sessions); parameters are appended with the
// writer's methods, and finish() fills the size in.
class Command : public BasicWriter<Command> {
 public:
  Command(uint32_t code, const std::vector<uint32_t>& handles,
          const std::vector<Session>& sessions);
  // `password_sessions` empty-password sessions (TPM_RS_PW), one per
  // authorised handle.
  Command(uint32_t code, const std::vector<uint32_t>& handles, int password_sessions);
  Bytes finish();
};

struct Header {
  uint16_t tag;
  uint32_t size;
  uint32_t code;
};
std::optional<Header> header(std::span<const uint8_t> b);
// The response code of a response, or an error when its header is malformed
// or its size field disagrees with its length.
Result<uint32_t> response_code(std::span<const uint8_t> rsp);
// A response carrying only `rc`.
Bytes error_response(uint32_t rc);

}  // namespace axl::tpm2
