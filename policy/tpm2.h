// A small TPM 2.0 client for the verifier (`axl attest`): marshalling
// (TCG TPM 2.0 Part 2, big-endian), a raw command/response transport over a
// unix or TCP stream socket (as swtpm's command port), and the few commands
// attestation needs.  Every response is untrusted input: sizes are checked
// and a malformed one is an error value.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::policy::tpm2 {

using Bytes = std::vector<uint8_t>;

inline constexpr uint32_t kRhOwner = 0x40000001;
inline constexpr uint32_t kRhNull = 0x40000007;
inline constexpr uint32_t kRsPw = 0x40000009;
inline constexpr uint32_t kRhEndorsement = 0x4000000B;
inline constexpr uint16_t kAlgSha256 = 0x000B;
inline constexpr uint16_t kAlgNull = 0x0010;
inline constexpr uint16_t kAlgEcdsa = 0x0018;
inline constexpr uint16_t kAlgEcc = 0x0023;
inline constexpr uint16_t kCurveP256 = 0x0003;

class Writer {
 public:
  Writer& u8(uint8_t v);
  Writer& u16(uint16_t v);
  Writer& u32(uint32_t v);
  Writer& u64(uint64_t v);
  Writer& raw(std::span<const uint8_t> b);
  Writer& b2(std::span<const uint8_t> b);  // TPM2B: u16 size, then the bytes
  const Bytes& bytes() const { return b_; }

 private:
  Bytes b_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool u8(uint8_t& v);
  bool u16(uint16_t& v);
  bool u32(uint32_t& v);
  bool u64(uint64_t& v);
  bool b2(Bytes& v);
  bool raw(Bytes& v, size_t n);
  size_t left() const { return b_.size() - pos_; }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

// One authorisation session in a command's auth area.
struct Session {
  uint32_t handle = kRsPw;
  Bytes nonce;
  uint8_t attributes = 0;
  Bytes hmac;
};

// A connected TPM: "unix:PATH" or "tcp:HOST:PORT" (HOST a numeric IPv4 address).
class Client {
 public:
  static Result<Client> connect(const std::string& spec);

  // Sends one command; returns its parameter area (after any response
  // handles, which go to *out_handles).  A non-zero response code is an
  // error naming the command.
  Result<Bytes> call(const char* what, uint32_t cc, const std::vector<uint32_t>& handles,
                     const std::vector<Session>& sessions, const Bytes& params,
                     size_t n_out_handles = 0, std::vector<uint32_t>* out_handles = nullptr);

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<Bytes> transact(const Bytes& cmd);
  UniqueFd fd_;
};

}  // namespace axl::policy::tpm2
