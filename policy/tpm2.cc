#include "policy/tpm2.h"

#include <arpa/inet.h>
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

constexpr uint16_t kStNoSessions = 0x8001;
constexpr uint16_t kStSessions = 0x8002;
// Far above any response attestation asks for (TPM_BUFFER_MAX is 4096).
constexpr uint32_t kMaxResponse = 8192;
constexpr int kIoTimeoutS = 10;

std::string errno_text() { return strerror(errno); }

}  // namespace

Writer& Writer::u8(uint8_t v) {
  b_.push_back(v);
  return *this;
}
Writer& Writer::u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
Writer& Writer::u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
Writer& Writer::u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
Writer& Writer::raw(std::span<const uint8_t> b) {
  b_.insert(b_.end(), b.begin(), b.end());
  return *this;
}
Writer& Writer::b2(std::span<const uint8_t> b) { return u16(uint16_t(b.size())).raw(b); }

bool Reader::u8(uint8_t& v) {
  if (left() < 1) return false;
  v = b_[pos_++];
  return true;
}
bool Reader::u16(uint16_t& v) {
  if (left() < 2) return false;
  v = uint16_t(b_[pos_] << 8 | b_[pos_ + 1]);
  pos_ += 2;
  return true;
}
bool Reader::u32(uint32_t& v) {
  uint16_t hi, lo;
  if (left() < 4 || !u16(hi) || !u16(lo)) return false;
  v = uint32_t{hi} << 16 | lo;
  return true;
}
bool Reader::u64(uint64_t& v) {
  uint32_t hi, lo;
  if (left() < 8 || !u32(hi) || !u32(lo)) return false;
  v = uint64_t{hi} << 32 | lo;
  return true;
}
bool Reader::raw(Bytes& v, size_t n) {
  if (left() < n) return false;
  v.assign(b_.begin() + long(pos_), b_.begin() + long(pos_ + n));
  pos_ += n;
  return true;
}
bool Reader::b2(Bytes& v) {
  uint16_t n;
  return u16(n) && raw(v, n);
}

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
  Writer w;
  w.u16(sessions.empty() ? kStNoSessions : kStSessions).u32(0).u32(cc);
  for (uint32_t h : handles) w.u32(h);
  if (!sessions.empty()) {
    Writer a;
    for (const auto& s : sessions) a.u32(s.handle).b2(s.nonce).u8(s.attributes).b2(s.hmac);
    w.u32(uint32_t(a.bytes().size())).raw(a.bytes());
  }
  w.raw(params);
  Bytes cmd = w.bytes();
  const auto n = uint32_t(cmd.size());
  for (int i = 0; i < 4; ++i) cmd[2 + i] = uint8_t(n >> (24 - 8 * i));

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
