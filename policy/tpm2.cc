#include "policy/tpm2.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace axl::policy::tpm2 {
namespace {

// Far above any response attestation asks for (TPM_BUFFER_MAX is 4096).
constexpr uint32_t kMaxResponse = 8192;
constexpr int kIoTimeoutS = 10;

std::string errno_text() { return strerror(errno); }

}  // namespace

Result<Client> Client::connect(const std::string& spec) {
  UniqueFd fd;
  if (spec.rfind("unix:", 0) == 0) {
    const std::string path = spec.substr(5);
    sockaddr_un a{};
    if (path.empty() || path.size() >= sizeof(a.sun_path))
      return make_error("bad TPM socket path '" + path + "'");
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path.c_str(), path.size());
    fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
      return make_error("cannot connect to the vTPM at " + path + ": " + errno_text());
  } else if (spec.rfind("tcp:", 0) == 0) {
    const std::string hp = spec.substr(4);
    const auto colon = hp.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    unsigned port = 0;
    char tail = 0;
    if (colon == std::string::npos ||
        inet_pton(AF_INET, hp.substr(0, colon).c_str(), &a.sin_addr) != 1 ||
        sscanf(hp.c_str() + colon + 1, "%u%c", &port, &tail) != 1 || port == 0 || port > 65535)
      return make_error("bad TPM address '" + spec + "' (want tcp:IPV4:PORT)");
    a.sin_port = htons(uint16_t(port));
    fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
      return make_error("cannot connect to the vTPM at " + hp + ": " + errno_text());
  } else if (spec.rfind("fd:", 0) == 0) {
    // A connection already made (the supervisor hands `axl attest` one, after
    // the access policy allowed it): this process's fd N, shared by every
    // client made from it (each uses its own duplicate, one at a time).
    int n = -1;
    char tail = 0;
    if (sscanf(spec.c_str() + 3, "%d%c", &n, &tail) != 1 || n < 3)
      return make_error("bad TPM address '" + spec + "' (want fd:N, N >= 3)");
    fd.reset(::fcntl(n, F_DUPFD_CLOEXEC, 3));
    if (!fd) return make_error("bad TPM address '" + spec + "': " + errno_text());
  } else {
    return make_error("bad TPM address '" + spec + "' (want unix:PATH or tcp:IPV4:PORT)");
  }
  timeval tv{kIoTimeoutS, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return Client(std::move(fd));
}

Result<Bytes> Client::transact(const Bytes& cmd) {
  for (size_t off = 0; off < cmd.size();) {
    const ssize_t n = send(fd_.get(), cmd.data() + off, cmd.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return make_error("vTPM connection: send failed: " + errno_text());
    off += size_t(n);
  }
  Bytes rsp(10);
  size_t have = 0, want = 10;
  while (have < want) {
    const ssize_t n = recv(fd_.get(), rsp.data() + have, want - have, 0);
    if (n == 0) return make_error("vTPM closed the connection");
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error("vTPM connection: no response: " + errno_text());
    }
    have += size_t(n);
    if (have == 10 && want == 10) {
      const uint32_t size =
          uint32_t(rsp[2]) << 24 | uint32_t(rsp[3]) << 16 | uint32_t(rsp[4]) << 8 | rsp[5];
      if (size < 10 || size > kMaxResponse)
        return make_error("vTPM sent a response of impossible size " + std::to_string(size));
      want = size;
      rsp.resize(size);
    }
  }
  return rsp;
}

Result<Bytes> Client::call(const char* what, uint32_t cc, const std::vector<uint32_t>& handles,
                           const std::vector<Session>& sessions, const Bytes& params,
                           size_t n_out_handles, std::vector<uint32_t>* out_handles) {
  const Bytes cmd = Command(cc, handles, sessions).raw(params).finish();

  Result<Bytes> rsp = make_error("");
  uint16_t tag;
  uint32_t size, rc;
  Reader r{std::span<const uint8_t>{}};
  for (int attempt = 0;; ++attempt) {
    rsp = transact(cmd);
    if (!rsp) return rsp.error();
    r = Reader(*rsp);
    if (!r.u16(tag) || !r.u32(size) || !r.u32(rc))
      return make_error(std::string(what) + ": short response");
    // TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: send it again (as TSS2 does).
    if ((rc != 0x922 && rc != 0x908 && rc != 0x90A) || attempt == 4) break;
  }
  if (rc != 0) {
    char buf[16];
    snprintf(buf, sizeof(buf), "0x%03x", rc);
    return make_error(std::string(what) + " failed: TPM_RC " + buf);
  }
  const std::string bad = std::string(what) + ": malformed response";
  if (tag != (sessions.empty() ? kStNoSessions : kStSessions)) return make_error(bad);
  for (size_t i = 0; i < n_out_handles; ++i) {
    uint32_t h;
    if (!r.u32(h)) return make_error(bad);
    if (out_handles) out_handles->push_back(h);
  }
  Bytes p;
  if (sessions.empty()) {
    if (!r.raw(p, r.left())) return make_error(bad);
  } else {
    uint32_t psize;
    if (!r.u32(psize) || !r.raw(p, psize)) return make_error(bad);
    // The response auth area follows: one entry per session; not needed by
    // a verifier that trusts nothing the TPM says without a signature.
  }
  return p;
}

}  // namespace axl::policy::tpm2
