// Encrypted, atomic storage of the TPM's state blobs.
//
// The permanent state lives in `permanent.state`: a 48-byte header followed
// by the blob sealed with AES-256-GCM:
//
//   0  magic "AXLVTPMS"      8  version (u16, 2)   10 kind (u16)
//   12 generation (u32)      16 plaintext length (u32)
//   20 nonce (12 bytes, fresh per write)           32 GCM tag (16 bytes)
//   48 ciphertext (plaintext length bytes)
//
// Bytes 0..31 are the AEAD's associated data, so a changed kind, length or
// version fails authentication just like a changed ciphertext.  The key is
// bound to one vTPM: HKDF-SHA256 of the host key (a file that must not live
// under the state directory) with the vTPM's id in its info (see VtpmKey),
// so one vTPM's file copied into another's state dir fails authentication
// there instead of handing that guest this one's EK and seeds.  Version 1
// files, sealed under the host key itself and so valid in every vTPM of the
// host, are refused.
// Writes go to a temporary file that is renamed into place, so a crash
// leaves either the old or the new state, never a torn one; with
// Durability::kPowerLoss the data and the directory are also fsync'd.
//
// The volatile state, checkpointed after nearly every command, lives in
// `volatile.ckpt` (vtpm/checkpoint.h): a preallocated file mapped shared, so
// that a checkpoint is memory writes.  load/save/remove of kVolatile use it;
// save(kVolatile) starts a new such file holding just that state.
// A file that fails any check is refused with an error naming what was wrong
// and is left exactly as found.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vtpm/kdf.h"

namespace axl::vtpm {

enum class StateKind : uint16_t { kPermanent = 1, kVolatile = 2 };

// kProcessCrash: atomic against the vTPM process dying (write + rename).
// kPowerLoss: also against the host losing power (fsync file, rename, fsync dir).
enum class Durability { kProcessCrash, kPowerLoss };

inline constexpr size_t kStateHeaderSize = 48;

// Reads a key file: exactly 32 raw bytes, or 64 hex digits (a trailing
// newline allowed).  Refuses a key file inside `state_dir`.
Result<Key> load_key_file(const std::string& path, const std::string& state_dir);
// The same from an open key file or pipe (`what` names it in errors), read
// to its end; the caller closes it.
Result<Key> load_key_fd(int fd, const std::string& what);

// Pure sealing/opening, exposed for tests.
// `generation`: header bytes 12..15 (authenticated), what rollback
// protection compares (StateStore::generation).
std::vector<uint8_t> seal(const VtpmKey& key, StateKind kind, std::span<const uint8_t> plain,
                          uint32_t generation = 0);
Result<std::vector<uint8_t>> open_sealed(const VtpmKey& key, StateKind kind,
                                         std::span<const uint8_t> file, const std::string& what);

class StateStore {
 public:
  static Result<StateStore> open(const std::string& dir, const VtpmKey& key);

  Status save(StateKind kind, std::span<const uint8_t> plain, Durability d);
  // nullopt when the file does not exist; an error when it exists but is bad.
  Result<std::optional<std::vector<uint8_t>>> load(StateKind kind) const;
  Status remove(StateKind kind);
  std::string path(StateKind kind) const;
  const std::string& dir() const { return dir_; }
  int dirfd() const { return dirfd_.get(); }
  const VtpmKey& key() const { return key_; }
  // Rollback protection (docs/architecture.md, "vTPM state"): every save of
  // the permanent state is one generation newer (sealed into its header);
  // the supervisor keeps the newest it was told of outside the state dir
  // and refuses, through the vTPM, a state older than that.
  // The permanent state's generation as found at open (0: none, or older
  // files), then as saved.
  uint32_t generation() const { return generation_; }
  // Called with the new generation after each permanent save is in place.
  void on_saved(std::function<void(uint32_t)> f) { on_saved_ = std::move(f); }

 private:
  StateStore(std::string dir, UniqueFd dirfd, VtpmKey key)
      : dir_(std::move(dir)), dirfd_(std::move(dirfd)), key_(std::move(key)) {}
  std::string dir_;
  UniqueFd dirfd_;
  VtpmKey key_;
  uint32_t generation_ = 0;
  std::function<void(uint32_t)> on_saved_;
};

const char* kind_name(StateKind k);

}  // namespace axl::vtpm
