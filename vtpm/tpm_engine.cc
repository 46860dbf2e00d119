#include "vtpm/tpm_engine.h"

#include <libtpms/tpm_error.h>
#include <libtpms/tpm_library.h>
#include <libtpms/tpm_memory.h>
#include <libtpms/tpm_nvfilename.h>
#include <libtpms/tpm_tis.h>
#include <sys/random.h>

#include <csignal>
#include <utility>

#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "vtpm/tpm_wire.h"

namespace axl::vtpm {
namespace {

// libtpms' callbacks carry no context: this is the one engine of the process.
TpmEngine* g_engine = nullptr;

TPM_RESULT cb_nvram_init() { return TPM_SUCCESS; }
TPM_RESULT cb_load(unsigned char** data, uint32_t* length, uint32_t, const char* name) {
  return g_engine ? g_engine->nv_load(data, length, name) : TPM_FAIL;
}
TPM_RESULT cb_store(const unsigned char* data, uint32_t length, uint32_t, const char* name) {
  return g_engine ? g_engine->nv_store(data, length, name) : TPM_FAIL;
}
// The engine owns the lifetime of its files: libtpms deleting the volatile
// state after loading it must not remove the checkpoint.
TPM_RESULT cb_delete(uint32_t, const char*, TPM_BOOL) { return TPM_SUCCESS; }
TPM_RESULT cb_io_init() { return TPM_SUCCESS; }
TPM_RESULT cb_locality(TPM_MODIFIER_INDICATOR* loc, uint32_t) {
  *loc = g_engine ? g_engine->locality() : 0;
  return TPM_SUCCESS;
}
TPM_RESULT cb_presence(TPM_BOOL* pp, uint32_t) {
  *pp = FALSE;
  return TPM_SUCCESS;
}

std::optional<StateKind> kind_of(const char* name) {
  if (std::strcmp(name, TPM_PERMANENT_ALL_NAME) == 0) return StateKind::kPermanent;
  if (std::strcmp(name, TPM_VOLATILESTATE_NAME) == 0) return StateKind::kVolatile;
  return std::nullopt;
}

}  // namespace

Result<std::unique_ptr<TpmEngine>> TpmEngine::create(StateStore store, bool checkpoint) {
  if (g_engine) return make_error("a TPM engine already exists in this process");
  if (TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2) != TPM_SUCCESS) {
    return make_error("libtpms has no TPM 2.0 support");
  }
  static libtpms_callbacks cbs{};
  cbs.sizeOfStruct = sizeof cbs;
  cbs.tpm_nvram_init = cb_nvram_init;
  cbs.tpm_nvram_loaddata = cb_load;
  cbs.tpm_nvram_storedata = cb_store;
  cbs.tpm_nvram_deletename = cb_delete;
  cbs.tpm_io_init = cb_io_init;
  cbs.tpm_io_getlocality = cb_locality;
  cbs.tpm_io_getphysicalpresence = cb_presence;
  if (TPMLIB_RegisterCallbacks(&cbs) != TPM_SUCCESS) {
    return make_error("libtpms refused the storage callbacks");
  }
  std::unique_ptr<TpmEngine> e(new TpmEngine(std::move(store), checkpoint));
  g_engine = e.get();
  return e;
}

TpmEngine::~TpmEngine() {
  if (running_) TPMLIB_Terminate();
  if (rsp_) TPM_Free(rsp_);
  g_engine = nullptr;
}

uint32_t TpmEngine::nv_load(unsigned char** data, uint32_t* length, const char* name) {
  auto kind = kind_of(name);
  // The volatile state reaches libtpms only through TPMLIB_SetState, when
  // power_on decides to resume; "not found" makes libtpms start fresh.
  if (!kind || *kind == StateKind::kVolatile) return TPM_RETRY;
  auto blob = store_.load(*kind);
  if (!blob) {
    AXL_ERROR("%s", blob.error().message.c_str());
    return TPM_FAIL;
  }
  if (!blob.value()) return TPM_RETRY;
  const auto& b = *blob.value();
  if (TPM_Malloc(data, static_cast<uint32_t>(b.size())) != TPM_SUCCESS) return TPM_FAIL;
  std::memcpy(*data, b.data(), b.size());
  *length = static_cast<uint32_t>(b.size());
  return TPM_SUCCESS;
}

uint32_t TpmEngine::nv_store(const unsigned char* data, uint32_t length, const char* name) {
  auto kind = kind_of(name);
  if (!kind) return TPM_SUCCESS;  // savestate: TPM 1.2 only
  if (*kind == StateKind::kPermanent) {
    ++perm_stores_;
    if (guest_cmd_ && ckpt_) ckpt_->mark_permanent_write();
  }
  // Volatile state handed over while running goes into the current
  // checkpoint file, not a new one beside it.
  auto st = *kind == StateKind::kVolatile && running_
                ? store_volatile({data, length})
                : store_.save(*kind, {data, length},
                              *kind == StateKind::kPermanent ? Durability::kPowerLoss
                                                             : Durability::kProcessCrash);
  if (!st) {
    AXL_ERROR("storing %s state: %s", kind_name(*kind), st.error().message.c_str());
    return TPM_FAIL;
  }
  return TPM_SUCCESS;
}

Status TpmEngine::power_on(bool resume) {
  if (running_) return make_error("TPM is already running");
  resumed_ = false;
  // Check both before libtpms sees either: a bad file is refused here, with
  // its reason, and nothing is written.
  auto perm = store_.load(StateKind::kPermanent);
  if (!perm) return perm.error();
  auto vol = CheckpointFile::read(store_.dirfd(), store_.dir(), store_.key());
  if (!vol) return vol.error();
  if (perm.value() && TPMLIB_SetState(TPMLIB_STATE_PERMANENT, perm.value()->data(),
                                      static_cast<uint32_t>(perm.value()->size())) != TPM_SUCCESS) {
    return make_error("libtpms refused the permanent state in " +
                      store_.path(StateKind::kPermanent));
  }
  const bool resuming = vol.value() && resume;
  if (resuming) {
    if (!perm.value()) {
      return make_error("volatile state " + store_.path(StateKind::kVolatile) +
                        " without permanent state");
    }
    const auto& snap = vol.value()->snapshot;
    if (TPMLIB_SetState(TPMLIB_STATE_VOLATILE, snap.data(), static_cast<uint32_t>(snap.size())) !=
        TPM_SUCCESS) {
      return make_error("libtpms refused the volatile state in " +
                        store_.path(StateKind::kVolatile));
    }
  } else if (vol.value()) {
    if (auto s = store_.remove(StateKind::kVolatile); !s) return s;
  }
  if (TPM_RESULT rc = TPMLIB_MainInit(); rc != TPM_SUCCESS) {
    return make_error("libtpms failed to start (rc " + std::to_string(rc) + ") with the state in " +
                      store_.dir());
  }
  running_ = true;
  if (!resuming) {
    // The checkpoint file exists from power-on, so that the guest's very
    // first command (TPM2_Startup) is recorded as pending like any other.
    if (checkpoint_) return checkpoint_now();
    return {};
  }
  // The journal's commands, replayed in order at the locality each ran at.
  const uint8_t saved = locality_;
  size_t n = 0;
  for (const auto& rec : vol.value()->journal) {
    locality_ = rec.locality;
    uint32_t len = 0;
    TPM_RESULT rc = TPMLIB_Process(&rsp_, &len, &rsp_cap_, const_cast<uint8_t*>(rec.command.data()),
                                   static_cast<uint32_t>(rec.command.size()));
    auto code = rc == TPM_SUCCESS && len >= 10 && len <= rsp_cap_
                    ? tpm::response_code({rsp_, len})
                    : Result<uint32_t>(make_error("libtpms failed"));
    if (!code || code.value() != tpm::kRcSuccess || !tpm::replayable(rec.command)) {
      locality_ = saved;
      power_off(false);
      return make_error("volatile checkpoint " + store_.path(StateKind::kVolatile) +
                        ": replaying journal record " + std::to_string(n + 1) + " of " +
                        std::to_string(vol.value()->journal.size()) + " failed");
    }
    ++n;
  }
  locality_ = saved;
  stats_.replayed += n;
  resumed_ = true;
  // The restored random generator state was used before the crash: stir
  // fresh entropy in so that no random number is ever handed out twice.
  uint8_t seed[32];
  if (getrandom(seed, sizeof seed, 0) == sizeof seed) {
    auto cmd = tpm::Command(tpm::kCcStirRandom, {}, 0).b2(seed).finish();
    (void)execute(cmd);
  }
  // A new checkpoint file from here on: the old one is only ever read.
  if (checkpoint_ && !ckpt_) {
    if (auto s = checkpoint_now(); !s) return s;
  }
  if (vol.value()->pending) answer_pending(*vol.value()->pending, vol.value()->seq);
  return {};
}

void TpmEngine::power_off(bool orderly) {
  guest_reply_.reset();  // an answer for before a power cycle is no answer
  if (running_) {
    // A stopped TPM's volatile state is one whole snapshot (CMD_GET_STATEBLOB
    // reads it), not a snapshot and a journal.
    if (!orderly && checkpoint_ && ckpt_ && ckpt_->journaled_since_snapshot() > 0) checkpoint();
    TPMLIB_Terminate();
    running_ = false;
  }
  ckpt_.reset();
  if (orderly) {
    if (auto s = store_.remove(StateKind::kVolatile); !s) AXL_WARN("%s", s.error().message.c_str());
  }
}

std::vector<uint8_t> TpmEngine::execute(std::span<const uint8_t> cmd) {
  if (!running_) return tpm::error_response(tpm::kRcFailure);
  const uint64_t perm_before = perm_stores_;
  auto rsp = process(cmd);
  commit(cmd, rsp, perm_before);
  return rsp;
}

std::vector<uint8_t> TpmEngine::execute_guest(std::span<const uint8_t> cmd) {
  return run_guest(cmd, true);
}

std::vector<uint8_t> TpmEngine::run_guest(std::span<const uint8_t> cmd, bool settle) {
  if (!running_) return tpm::error_response(tpm::kRcFailure);
  if (!checkpoint_ || !ckpt_ || !ckpt_->begin(locality_, cmd)) return execute(cmd);
  const uint64_t perm_before = perm_stores_;
  const uint32_t code = tpm::header(cmd) ? tpm::header(cmd)->code : 0;
  if (fault_at(Fault::kHogMemory, code)) {
    AXL_WARN("fault injection: allocating memory without end");
    for (;;) {
      constexpr size_t kChunk = 16 << 20;
      auto* p = static_cast<char*>(std::malloc(kChunk));
      if (!p) std::abort();  // the address-space limit, where no memory limit is
      std::memset(p, 0x5a, kChunk);
    }
  }
  guest_cmd_ = true;
  auto rsp = process(cmd);
  guest_cmd_ = false;
  if (fault_at(Fault::kDieInCommand, code)) {
    AXL_WARN("fault injection: dying in the middle of command 0x%x", code);
    ::raise(SIGKILL);
  }
  CheckpointFile* recorded = ckpt_.get();
  recorded->answer(rsp);
  commit(cmd, rsp, perm_before);
  if (fault_at(Fault::kDieAfterCheckpoint, code)) ::raise(SIGKILL);
  // A checkpoint too large for its slot started a new file, which never
  // held this command: nothing to settle there.
  if (settle && ckpt_.get() == recorded) ckpt_->settle();
  return rsp;
}

std::optional<std::vector<uint8_t>> TpmEngine::take_guest_reply() {
  if (!guest_reply_) return std::nullopt;
  if (ckpt_) ckpt_->settle();
  return std::exchange(guest_reply_, std::nullopt);
}

// Called by power_on(resume) with the new checkpoint file in place.
void TpmEngine::answer_pending(const PendingCommand& p, uint64_t committed) {
  const uint8_t saved = locality_;
  if (p.seq > committed && !p.permanent_write) {
    // Killed before its checkpoint: the restored state is from before it,
    // and the guest never saw an answer.  Run it now.
    locality_ = p.command.locality;
    guest_reply_ = run_guest(p.command.command, false);
    AXL_INFO("answered the guest's command in flight at the kill: ran it again");
  } else {
    std::vector<uint8_t> reply;
    if (p.seq > committed) {
      reply = tpm::error_response(tpm::kRcCanceled);
      AXL_WARN(
          "the guest's command in flight at the kill had begun writing permanent state: "
          "answered TPM_RC_CANCELED");
    } else if (p.response) {
      reply = *p.response;
      AXL_INFO("answered the guest's command in flight at the kill: its recorded response");
    } else {
      AXL_WARN("a pending guest command with a checkpoint but no response; not answered");
      return;
    }
    // Recorded in the new file as answered and checkpointed, so that a kill
    // before it is sent repeats this answer rather than the command.
    if (ckpt_ && ckpt_->begin(p.command.locality, p.command.command) && ckpt_->answer(reply)) {
      (void)checkpoint_now();
    }
    guest_reply_ = std::move(reply);
  }
  locality_ = saved;
  ++stats_.guest_answered;
}

std::vector<uint8_t> TpmEngine::process(std::span<const uint8_t> cmd) {
  uint32_t len = 0;
  TPM_RESULT rc = TPMLIB_Process(&rsp_, &len, &rsp_cap_, const_cast<unsigned char*>(cmd.data()),
                                 static_cast<uint32_t>(cmd.size()));
  ++stats_.commands;
  std::vector<uint8_t> rsp;
  if (rc != TPM_SUCCESS || len < 10 || len > rsp_cap_) {
    rsp = tpm::error_response(tpm::kRcFailure);
  } else {
    rsp.assign(rsp_, rsp_ + len);
  }
  if (!boot_.empty() && is_startup_clear(cmd)) {
    auto code = tpm::response_code(rsp);
    if (code && code.value() == tpm::kRcSuccess) extend_boot_measurements();
  }
  return rsp;
}

void TpmEngine::commit(std::span<const uint8_t> cmd, std::span<const uint8_t> rsp,
                       uint64_t perm_before) {
  if (!checkpoint_ || !tpm::may_change_state(cmd)) return;
  const auto t0 = std::chrono::steady_clock::now();
  auto code = tpm::response_code(rsp);
  if (ckpt_ && perm_stores_ == perm_before && code && code.value() == tpm::kRcSuccess &&
      tpm::replayable(cmd) && ckpt_->journal(locality_, cmd)) {
    ++stats_.journaled;
    stats_.journal_time += std::chrono::steady_clock::now() - t0;
  } else {
    checkpoint();
  }
}

bool TpmEngine::is_startup_clear(std::span<const uint8_t> cmd) {
  auto h = tpm::header(cmd);
  // TPM2_Startup: header (10 bytes) + TPM_SU startupType; TPM_SU_CLEAR = 0.
  return h && h->code == tpm::kCcStartup && cmd.size() == 12 && cmd[10] == 0 && cmd[11] == 0;
}

void TpmEngine::extend_boot_measurements() {
  // The hypervisor, as the guest's boot loader, extends at locality 0
  // (TCG PC Client Platform Firmware Profile: PCRs 8 and 9 belong to the OS
  // loader, which runs there).
  const uint8_t saved = locality_;
  locality_ = 0;
  size_t done = 0;
  for (const auto& m : boot_) {
    auto cmd = tpm::Command(tpm::kCcPcrExtend, {m.pcr}, 1)
                   .u32(1)       // TPML_DIGEST_VALUES.count
                   .u16(0x000B)  // TPM_ALG_SHA256
                   .raw(m.digest)
                   .finish();
    uint32_t len = 0;
    TPM_RESULT rc =
        TPMLIB_Process(&rsp_, &len, &rsp_cap_, cmd.data(), static_cast<uint32_t>(cmd.size()));
    auto code = rc == TPM_SUCCESS && len >= 10 && len <= rsp_cap_
                    ? tpm::response_code({rsp_, len})
                    : Result<uint32_t>(make_error("libtpms failed"));
    if (!code || code.value() != tpm::kRcSuccess) {
      AXL_ERROR(
          "measured boot: extending PCR %u failed (%s)", m.pcr,
          code ? ("rc " + std::to_string(code.value())).c_str() : code.error().message.c_str());
      break;
    }
    ++done;
  }
  locality_ = saved;
  ++stats_.measured_boots;
  AXL_INFO("measured boot: extended %zu of %zu events after TPM2_Startup(CLEAR)", done,
           boot_.size());
}

Result<std::vector<uint8_t>> TpmEngine::call(std::span<const uint8_t> cmd) {
  auto rsp = execute(cmd);
  auto rc = tpm::response_code(rsp);
  if (!rc) return rc.error();
  if (rc.value() != tpm::kRcSuccess) {
    char buf[64];
    snprintf(buf, sizeof buf, "TPM command 0x%x failed: rc 0x%x", tpm::header(cmd)->code,
             rc.value());
    return make_error(buf);
  }
  return rsp;
}

void TpmEngine::checkpoint() {
  if (auto s = checkpoint_now(); !s) {
    ++stats_.checkpoint_failures;
    AXL_ERROR("volatile checkpoint failed: %s", s.error().message.c_str());
  }
}

Status TpmEngine::checkpoint_now() {
  if (!running_) return {};
  const auto t0 = std::chrono::steady_clock::now();
  unsigned char* buf = nullptr;
  uint32_t len = 0;
  if (TPMLIB_VolatileAll_Store(&buf, &len) != TPM_SUCCESS || !buf) {
    return make_error("libtpms could not serialise its volatile state");
  }
  Status st = store_volatile({buf, len});
  TPM_Free(buf);
  ++stats_.checkpoints;
  stats_.checkpoint_bytes = len;
  stats_.checkpoint_time += std::chrono::steady_clock::now() - t0;
  return st;
}

Status TpmEngine::store_volatile(std::span<const uint8_t> state) {
  if (ckpt_ && ckpt_->snapshot(state)) return {};
  // The first checkpoint of this power cycle, or one too large for its slot.
  auto f = CheckpointFile::create(store_.dirfd(), store_.dir(), store_.key(), state);
  if (!f) return f.error();
  ckpt_ = std::move(f.value());
  return {};
}

Result<bool> TpmEngine::established() const {
  TPM_BOOL bit = FALSE;
  if (!running_) return make_error("TPM is not running");
  if (TPM_IO_TpmEstablished_Get(&bit) != TPM_SUCCESS) return make_error("libtpms refused");
  return bit != FALSE;
}

Status TpmEngine::reset_established() {
  if (!running_) return make_error("TPM is not running");
  if (TPM_IO_TpmEstablished_Reset() != TPM_SUCCESS) return make_error("libtpms refused");
  return {};
}

void TpmEngine::cancel() { TPMLIB_CancelCommand(); }

uint32_t TpmEngine::set_buffer_size(uint32_t wanted, uint32_t* min, uint32_t* max) {
  buffer_size_ = TPMLIB_SetBufferSize(wanted, min, max);
  return buffer_size_;
}

Result<std::vector<uint8_t>> TpmEngine::get_state(StateKind kind) {
  if (running_) {
    unsigned char* buf = nullptr;
    uint32_t len = 0;
    TPM_RESULT rc = kind == StateKind::kVolatile
                        ? TPMLIB_VolatileAll_Store(&buf, &len)
                        : TPMLIB_GetState(TPMLIB_STATE_PERMANENT, &buf, &len);
    if (rc != TPM_SUCCESS || !buf) return make_error("libtpms could not serialise its state");
    std::vector<uint8_t> v(buf, buf + len);
    TPM_Free(buf);
    return v;
  }
  auto blob = store_.load(kind);
  if (!blob) return blob.error();
  if (!blob.value()) return std::vector<uint8_t>{};
  return std::move(*blob.value());
}

Status TpmEngine::set_state(StateKind kind, std::span<const uint8_t> blob) {
  if (running_) return make_error("state can only be set while the TPM is stopped");
  return store_.save(kind, blob, Durability::kPowerLoss);
}

}  // namespace axl::vtpm
