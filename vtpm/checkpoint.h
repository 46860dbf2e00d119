// The volatile checkpoint: one preallocated file, `volatile.ckpt`, in the
// vTPM's state directory, mapped shared.  Checkpointing after a command is
// then memory writes into the page cache, no system call: what a killed
// process wrote there is what its successor reads.  (A host power loss
// takes the guest down too, and a TPM loses volatile state on power loss.)
//
// Layout (sizes in bytes):
//   0      file header (4096): magic "AXLVTPMC", version (2), slot size,
//          journal geometry, a random 32-byte salt; at 64 the (unsealed)
//          sequence number of a pending command that began a permanent write
//   4096   the pending guest command (8192)
//   12288  its response (8192)
//   20480  snapshot slot A, then snapshot slot B (slot size each)
//   ...    journal: kJournalRecords records of kRecordSize
//
// Every slot and record is an entry: a 48-byte header (sequence number, length,
// type, locality, the sequence number of the entry it follows, GCM tag) and
// its AES-256-GCM ciphertext.  The key is
// HKDF-SHA256(host key, salt, "axolotl-vtpm volatile" || 0x00 || vTPM id)
// (derive_key in state_store.h): bound to this vTPM, so that another one's
// checkpoint copied here fails authentication, and fresh for every file, so
// the nonce can be the entry's type and sequence number, which only ever
// grow within one file.  Version 1 files (no id in the key) are refused.  A resumed instance starts
// a new file (new salt) and never reuses the old one's nonces, even those of an entry it was killed
// while writing.
//
//  - A snapshot is libtpms' whole volatile state (about 9 KB), written into
//    the slot that does not hold the newest one.
//  - A journal record is one replayable command (tpm::replayable: PCR_Extend,
//    PCR_Event, PCR_Reset with password authorisation only), which is
//    deterministic, so the state after it is the state before it plus the
//    command replayed.  Journaling costs a ~100-byte seal instead of a ~9 KB
//    one.  A snapshot is taken instead when the journal is full.
//
//  - The pending command: the guest's command in progress (QEMU's data
//    channel), written before it runs, and its response, written before its
//    checkpoint; both are cleared ("settled") before the response is sent.
//    A successor finds a command its predecessor was killed in the middle
//    of, and whether its checkpoint was taken (an entry newer than the
//    response), so it can answer it (TpmEngine::take_guest_reply).
//
// Torn writes: an entry's sequence number is set to 0 before anything else
// of it is written and to its value after everything else, so an entry cut
// short by a kill reads as empty.  The state is the newest snapshot plus the
// records that follow it, each naming the one before it.  An entry that claims a sequence number
// and fails authentication, or a gap in the journal, can only be tampering and is refused with a
// reason; nothing is changed then.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "vtpm/state_store.h"

namespace axl::vtpm {

struct JournalEntry {
  uint8_t locality = 0;
  std::vector<uint8_t> command;
};

// A guest command that was in progress when its instance went away.
struct PendingCommand {
  uint64_t seq = 0;
  JournalEntry command;
  std::optional<std::vector<uint8_t>> response;  // recorded after it ran
  uint64_t response_seq = 0;
  bool permanent_write = false;  // it began writing permanent state
};

struct VolatileImage {
  std::vector<uint8_t> snapshot;
  std::vector<JournalEntry> journal;  // to replay on top of it, in order
  uint64_t seq = 0;                   // the newest snapshot or record's sequence number
  std::optional<PendingCommand> pending;
};

class CheckpointFile {
 public:
  static constexpr const char* kName = "volatile.ckpt";
  static constexpr size_t kEntryHeader = 48;
  static constexpr size_t kJournalRecords = 256;
  static constexpr size_t kRecordSize = 512;
  static constexpr size_t kMaxJournalCommand = kRecordSize - kEntryHeader;

  // Reads `dir`'s checkpoint: nullopt when there is none, an error naming
  // what is wrong when it is not exactly as this code writes it.
  static Result<std::optional<VolatileImage>> read(int dirfd, const std::string& dir,
                                                   const VtpmKey& key);
  // Starts a new file holding `snapshot` and atomically puts it in place of
  // any earlier one (write a temporary file, rename).
  static Result<std::unique_ptr<CheckpointFile>> create(int dirfd, const std::string& dir,
                                                        const VtpmKey& key,
                                                        std::span<const uint8_t> snapshot);
  // Removes the checkpoint; absent is fine.
  static Status remove(int dirfd, const std::string& dir);

  ~CheckpointFile();
  CheckpointFile(const CheckpointFile&) = delete;
  CheckpointFile& operator=(const CheckpointFile&) = delete;

  // false: it does not fit its slot; create() a new file for it.
  bool snapshot(std::span<const uint8_t> plain);
  // false: the journal is full or the command too long; take a snapshot.
  bool journal(uint8_t locality, std::span<const uint8_t> command);
  size_t journaled_since_snapshot() const { return since_snapshot_; }

  // The pending guest command (see above); false: too long to record.
  bool begin(uint8_t locality, std::span<const uint8_t> command);
  bool answer(std::span<const uint8_t> response);
  void mark_permanent_write();
  void settle();

 private:
  struct Impl;
  explicit CheckpointFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  size_t since_snapshot_ = 0;
};

}  // namespace axl::vtpm
