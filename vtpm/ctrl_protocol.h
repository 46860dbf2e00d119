// The swtpm control-channel protocol that QEMU's `-tpmdev emulator` and
// tpm2-tss' swtpm TCTI speak (see the swtpm_ioctls man page).  Every field is
// big-endian; a request is a 32-bit command code followed by that command's
// fixed-size input (CMD_SET_STATEBLOB: a header plus `length` bytes of blob).
// The stream has no framing of its own: like swtpm we take what one read
// returns as one request, since both peers write a request with one write().
//
// This file only parses and serialises; it never touches the TPM.  Everything
// it is handed is untrusted: a request is either a typed value or an error
// that the server answers with a result code, never a crash.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"

namespace axl::vtpm::ctrl {

enum class Cmd : uint32_t {
  kGetCapability = 0x01,
  kInit = 0x02,
  kShutdown = 0x03,
  kGetTpmEstablished = 0x04,
  kSetLocality = 0x05,
  kHashStart = 0x06,
  kHashData = 0x07,
  kHashEnd = 0x08,
  kCancelTpmCmd = 0x09,
  kStoreVolatile = 0x0a,
  kResetTpmEstablished = 0x0b,
  kGetStateBlob = 0x0c,
  kSetStateBlob = 0x0d,
  kStop = 0x0e,
  kGetConfig = 0x0f,
  kSetDataFd = 0x10,
  kSetBufferSize = 0x11,
  kGetInfo = 0x12,
};

// Capability bits (CMD_GET_CAPABILITY), the ones this implementation serves.
inline constexpr uint64_t kCapInit = 1 << 0;
inline constexpr uint64_t kCapShutdown = 1 << 1;
inline constexpr uint64_t kCapGetTpmEstablished = 1 << 2;
inline constexpr uint64_t kCapSetLocality = 1 << 3;
inline constexpr uint64_t kCapCancelTpmCmd = 1 << 5;
inline constexpr uint64_t kCapStoreVolatile = 1 << 6;
inline constexpr uint64_t kCapResetTpmEstablished = 1 << 7;
inline constexpr uint64_t kCapGetStateBlob = 1 << 8;
inline constexpr uint64_t kCapSetStateBlob = 1 << 9;
inline constexpr uint64_t kCapStop = 1 << 10;
inline constexpr uint64_t kCapGetConfig = 1 << 11;
inline constexpr uint64_t kCapSetDataFd = 1 << 12;
inline constexpr uint64_t kCapSetBufferSize = 1 << 13;

// Result codes (TPM 1.2 numbering, as swtpm answers them).
inline constexpr uint32_t kSuccess = 0;
inline constexpr uint32_t kBadParameter = 3;
inline constexpr uint32_t kFail = 9;
inline constexpr uint32_t kBadOrdinal = 10;
inline constexpr uint32_t kInvalidPostInit = 38;

inline constexpr uint32_t kInitFlagDeleteVolatile = 1;

// CMD_GET/SET_STATEBLOB blob types.
inline constexpr uint32_t kBlobPermanent = 1;
inline constexpr uint32_t kBlobVolatile = 2;
inline constexpr uint32_t kBlobSaveState = 3;
// State-blob flags: encrypted blobs are not supported (we encrypt at rest).
inline constexpr uint32_t kBlobFlagEncrypted = 1;

// Largest request accepted on the control channel: a state blob (libtpms
// permanent state is well under this) plus its header.
inline constexpr size_t kMaxBlob = 256 * 1024;
inline constexpr size_t kMaxRequest = 4 + 12 + kMaxBlob;

struct Init {
  uint32_t flags;
};
struct SetLocality {
  uint8_t locality;
};
struct ResetEstablished {
  uint8_t locality;
};
struct GetStateBlob {
  uint32_t flags, type, offset;
};
struct SetStateBlob {
  uint32_t flags, type;
  std::vector<uint8_t> data;
};
struct SetBufferSize {
  uint32_t size;
};
// Commands with no input.
struct Simple {
  Cmd cmd;
};

using Request = std::variant<Simple, Init, SetLocality, ResetEstablished, GetStateBlob,
                             SetStateBlob, SetBufferSize>;

// A request whose command code is known but whose input is malformed, or an
// unknown command: the server answers `result` (and, for an unknown code,
// nothing else, since its response layout is unknown).
struct Rejected {
  uint32_t code;
  uint32_t result;
  std::string why;
};

// CMD_SET_STATEBLOB may be longer than one read: NeedMore says how many bytes
// the whole request has, so the caller reads on until it has them.
struct NeedMore {
  size_t total;
};

using Parsed = std::variant<Request, Rejected, NeedMore>;

Parsed parse(std::span<const uint8_t> msg);

Cmd command_of(const Request& r);
const char* name(uint32_t code);

// Response builders (the exact layouts QEMU reads).
std::vector<uint8_t> result_only(uint32_t result);
std::vector<uint8_t> capability(uint64_t caps);
std::vector<uint8_t> established(uint32_t result, bool bit);
std::vector<uint8_t> state_blob(uint32_t result, uint32_t flags, uint32_t total,
                                std::span<const uint8_t> data);
std::vector<uint8_t> buffer_size(uint32_t result, uint32_t size, uint32_t min, uint32_t max);
std::vector<uint8_t> config(uint32_t result, uint32_t flags);
// The response to a rejected request: its result code, padded to the size the
// command's normal response has, so a peer reading a fixed size never blocks.
std::vector<uint8_t> rejection(const Rejected& r);

// Big-endian helpers shared with the TPM command code.
inline uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}
inline void put_be64(std::vector<uint8_t>& v, uint64_t x) {
  for (int s = 56; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

}  // namespace axl::vtpm::ctrl
