// Just enough TPM 2.0 marshalling (TCG TPM 2.0 Part 2, big-endian) for the
// commands the vTPM sends itself: Startup, StirRandom and provisioning.
// Responses are parsed with bounds checks; a short or malformed one is an
// error value.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::vtpm::tpm {

inline constexpr uint16_t kStNoSessions = 0x8001;
inline constexpr uint16_t kStSessions = 0x8002;
inline constexpr uint32_t kRsPw = 0x40000009;
inline constexpr uint32_t kRhOwner = 0x40000001;
inline constexpr uint32_t kRhEndorsement = 0x4000000B;
inline constexpr uint32_t kRhPlatform = 0x4000000C;

inline constexpr uint32_t kCcStartup = 0x144;
inline constexpr uint32_t kCcShutdown = 0x145;
inline constexpr uint32_t kCcStirRandom = 0x146;
inline constexpr uint32_t kCcCreatePrimary = 0x131;
inline constexpr uint32_t kCcEvictControl = 0x120;
inline constexpr uint32_t kCcFlushContext = 0x165;
inline constexpr uint32_t kCcNvDefineSpace = 0x12A;
inline constexpr uint32_t kCcNvWrite = 0x137;
inline constexpr uint32_t kCcPcrExtend = 0x182;
inline constexpr uint32_t kCcPcrEvent = 0x13C;
inline constexpr uint32_t kCcPcrReset = 0x13D;
inline constexpr uint32_t kCcGetRandom = 0x17B;
inline constexpr uint32_t kCcQuote = 0x158;

inline constexpr uint32_t kRcSuccess = 0;
inline constexpr uint32_t kRcInitialize = 0x100;
inline constexpr uint32_t kRcCommandSize = 0x142;
inline constexpr uint32_t kRcFailure = 0x101;
inline constexpr uint32_t kRcCanceled = 0x909;

// Builds a command: header, handles, an optional empty-password session for
// each authorised handle, then parameters; the size is fixed up by finish().
class Command {
 public:
  Command(uint32_t code, std::vector<uint32_t> handles, int password_sessions);
  Command& u8(uint8_t v);
  Command& u16(uint16_t v);
  Command& u32(uint32_t v);
  Command& bytes(std::span<const uint8_t> b);
  Command& tpm2b(std::span<const uint8_t> b);
  // Opens a size-prefixed (u16) structure; close() fills its size in.
  Command& open();
  Command& close();
  std::vector<uint8_t> finish();

 private:
  std::vector<uint8_t> b_;
  std::vector<size_t> open_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool u8(uint8_t& v);
  bool u16(uint16_t& v);
  bool u32(uint32_t& v);
  bool tpm2b(std::span<const uint8_t>& v);
  bool skip(size_t n);
  size_t left() const { return b_.size() - pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

// Response code of a response, or an error when it is not a well-formed header.
Result<uint32_t> response_code(std::span<const uint8_t> rsp);

struct Header {
  uint16_t tag;
  uint32_t size;
  uint32_t code;
};
std::optional<Header> header(std::span<const uint8_t> b);

// Does executing this (already size-checked) command possibly change the
// TPM's volatile state?  False only for commands that read, with no session
// other than passwords (whose use changes nothing).
bool may_change_state(std::span<const uint8_t> cmd);

// Is this command's effect on the volatile state a function of that state
// and the command alone, so that replaying it on the state before it gives
// the state after it?  True for PCR_Extend, PCR_Event and PCR_Reset with
// password authorisation only: no session nonce, no random number, no
// clock.  (The engine journals these only when they succeeded and wrote no
// permanent state.)
bool replayable(std::span<const uint8_t> cmd);

// A TPM response carrying only `rc` (for commands we refuse before the TPM).
std::vector<uint8_t> error_response(uint32_t rc);

}  // namespace axl::vtpm::tpm
