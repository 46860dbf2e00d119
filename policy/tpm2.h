// A small TPM 2.0 client for the verifier (`axl attest`): a raw
// command/response transport over a
// unix or TCP stream socket (as swtpm's command port), and the few commands
// attestation needs.  Every response is untrusted input: sizes are checked
// and a malformed one is an error value.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/tpm2_mu.h"
#include "common/unique_fd.h"

namespace axl::policy::tpm2 {

// The encoding is the one shared with the vTPM (common/tpm2_mu.h).
using namespace axl::tpm2;

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
