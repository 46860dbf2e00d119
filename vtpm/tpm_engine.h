// The TPM itself: libtpms (TPM 2.0) plus the state store behind it.
//
// libtpms keeps one TPM per process in globals and reaches storage through C
// callbacks without a context pointer, so there is at most one TpmEngine per
// process (the vTPM domain serves exactly one guest).  create() refuses a
// second one.
//
// State handling:
//  - permanent state (seeds, NV, persistent objects): libtpms hands it to the
//    NVRAM store callback whenever it changes; it is sealed and written with
//    Durability::kPowerLoss before the command's response leaves.
//  - volatile state (PCRs, loaded objects, sessions): after every command
//    that may change it (tpm::may_change_state), before its response leaves,
//    it is checkpointed into the mapped file of vtpm/checkpoint.h: a whole
//    snapshot, or for a replayable command (tpm::replayable) that succeeded
//    and wrote no permanent state, just that command in the journal.  The
//    checkpoint exists so that a killed vTPM domain resumes where it was;
//    after a host power loss the guest has lost power too, and a TPM loses
//    volatile state on power loss anyway.
//  - power_on(resume=true) restores the newest snapshot and replays the
//    journal after it, so the next command of the guest or client finds
//    PCRs, objects and sessions as they were; then it starts a new
//    checkpoint file.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "vtpm/checkpoint.h"
#include "vtpm/state_store.h"

namespace axl::vtpm {

// One measurement the hypervisor made for this boot (its event log): the
// SHA-256 digest to extend into `pcr`.
struct BootMeasurement {
  uint32_t pcr = 0;
  std::array<uint8_t, 32> digest{};
};

struct EngineStats {
  uint64_t commands = 0;
  uint64_t checkpoints = 0;
  uint64_t checkpoint_failures = 0;
  std::chrono::nanoseconds checkpoint_time{0};
  uint64_t checkpoint_bytes = 0;  // last checkpoint's plaintext size
  uint64_t journaled = 0;         // commands checkpointed as a journal record
  std::chrono::nanoseconds journal_time{0};
  uint64_t replayed = 0;        // journal records replayed at resume
  uint64_t guest_answered = 0;  // guest commands in flight at a kill, answered at resume
  uint64_t measured_boots = 0;  // Startup(CLEAR)s followed by the boot measurements
};

class TpmEngine {
 public:
  static Result<std::unique_ptr<TpmEngine>> create(StateStore store, bool checkpoint);
  ~TpmEngine();
  TpmEngine(const TpmEngine&) = delete;
  TpmEngine& operator=(const TpmEngine&) = delete;

  // Loads and checks the stored state (refusing a bad file with its reason),
  // then starts libtpms.  resume: restore the volatile checkpoint if any;
  // otherwise it is deleted and the TPM waits for TPM2_Startup.
  Status power_on(bool resume);
  // Stops libtpms; with `orderly` the volatile checkpoint is removed (a
  // powered-off TPM has no volatile state).
  void power_off(bool orderly);
  bool running() const { return running_; }
  // True when power_on found and restored a volatile checkpoint.
  bool resumed() const { return resumed_; }

  // Executes one command (already framed: header size == cmd.size()).
  std::vector<uint8_t> execute(std::span<const uint8_t> cmd);
  // The same for a command of the guest (QEMU's data channel, which outlives
  // this process): the command is recorded before it runs and its response
  // before its checkpoint, and both are cleared before it returns, so that a
  // successor of an instance killed in between can answer it.
  std::vector<uint8_t> execute_guest(std::span<const uint8_t> cmd);
  // After power_on(resume): the answer to the guest command the previous
  // instance was killed in the middle of, to be sent on the guest's channel
  // before anything else.  Re-executed when its checkpoint had not been
  // taken; the recorded response when it had; TPM_RC_CANCELED when it had
  // begun writing permanent state (running it again could apply it twice).
  std::optional<std::vector<uint8_t>> take_guest_reply();

  // Test hooks (AXL_VTPM_FAULT), at a guest command with this code: the
  // process kills itself (SIGKILL) after the command ran but before its
  // response and checkpoint were recorded, or after its checkpoint; or it
  // allocates memory without end before running it (the supervisor's memory
  // limit ends it).
  // kAnyCommand: the next guest command, whatever its code.  Set from any
  // thread (the health channel's fault hook arms die-in-command).
  enum class Fault { kNone, kDieInCommand, kDieAfterCheckpoint, kHogMemory };
  static constexpr uint32_t kAnyCommand = 0;  // no TPM command has code 0
  void set_fault(Fault f, uint32_t code) {
    fault_code_.store(code, std::memory_order_relaxed);
    fault_.store(f, std::memory_order_release);
  }

  // Convenience for the vTPM's own commands: execute and return the response
  // code, or an error for a malformed response.
  Result<std::vector<uint8_t>> call(std::span<const uint8_t> cmd);

  // Measured boot: after every successful TPM2_Startup(TPM_SU_CLEAR) these
  // are extended (sha256 bank, locality 0) before the Startup response
  // leaves and before the checkpoint of that command is taken.  So every
  // checkpoint taken after a Startup(CLEAR) already holds the extended PCRs,
  // and an instance resumed from it never extends a second time in one boot;
  // a killed instance that had not yet checkpointed resumes from before the
  // Startup.  A guest reboot (a new Startup(CLEAR)) extends again.
  void set_boot_measurements(std::vector<BootMeasurement> m) { boot_ = std::move(m); }

  Status checkpoint_now();
  void set_locality(uint8_t l) { locality_ = l; }
  uint8_t locality() const { return locality_; }
  Result<bool> established() const;
  Status reset_established();
  void cancel();
  uint32_t set_buffer_size(uint32_t wanted, uint32_t* min, uint32_t* max);
  uint32_t buffer_size() const { return buffer_size_; }

  // CMD_GET_STATEBLOB / CMD_SET_STATEBLOB.
  Result<std::vector<uint8_t>> get_state(StateKind kind);
  Status set_state(StateKind kind, std::span<const uint8_t> blob);

  StateStore& store() { return store_; }
  const EngineStats& stats() const { return stats_; }

  // libtpms callbacks land here.
  uint32_t nv_load(unsigned char** data, uint32_t* length, const char* name);
  uint32_t nv_store(const unsigned char* data, uint32_t length, const char* name);

 private:
  TpmEngine(StateStore store, bool checkpoint)
      : store_(std::move(store)), checkpoint_(checkpoint) {}
  void checkpoint();
  // A snapshot into the current checkpoint file, or a new file.
  Status store_volatile(std::span<const uint8_t> state);
  // execute()'s two halves: run it, then checkpoint what it changed.
  std::vector<uint8_t> process(std::span<const uint8_t> cmd);
  void commit(std::span<const uint8_t> cmd, std::span<const uint8_t> rsp, uint64_t perm_before);
  std::vector<uint8_t> run_guest(std::span<const uint8_t> cmd, bool settle);
  void answer_pending(const PendingCommand& p, uint64_t committed);
  void extend_boot_measurements();
  static bool is_startup_clear(std::span<const uint8_t> cmd);

  StateStore store_;
  bool checkpoint_;
  std::unique_ptr<CheckpointFile> ckpt_;  // the current volatile checkpoint file
  uint64_t perm_stores_ = 0;              // permanent-state writes so far
  bool guest_cmd_ = false;                // a guest command is running
  std::optional<std::vector<uint8_t>> guest_reply_;
  // The armed fault fires at a guest command of this code.
  bool fault_at(Fault f, uint32_t code) const {
    if (fault_.load(std::memory_order_acquire) != f) return false;
    const uint32_t want = fault_code_.load(std::memory_order_relaxed);
    return want == kAnyCommand || want == code;
  }
  std::atomic<Fault> fault_{Fault::kNone};
  std::atomic<uint32_t> fault_code_{0};
  bool running_ = false;
  bool resumed_ = false;
  uint8_t locality_ = 0;
  uint32_t buffer_size_ = 4096;
  unsigned char* rsp_ = nullptr;  // libtpms' response buffer, reused
  uint32_t rsp_cap_ = 0;
  EngineStats stats_;
  std::vector<BootMeasurement> boot_;
};

}  // namespace axl::vtpm
