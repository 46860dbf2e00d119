// What the vTPM needs to know about TPM 2.0 commands beyond their encoding
// (common/tpm2_mu.h, shared with the verifier): which ones may change the
// TPM's volatile state, and which ones can be replayed onto a checkpoint.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "common/tpm2_mu.h"

namespace axl::vtpm::tpm {

using tpm2::Command;
using tpm2::error_response;
using tpm2::header;
using tpm2::Header;
using tpm2::Reader;
using tpm2::response_code;
using namespace tpm2;  // the constants

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

}  // namespace axl::vtpm::tpm
