// Commands per second through a TPM's TCP command port (swtpm's socket
// interface: raw TPM 2.0 commands), one persistent connection, one command in
// flight, as QEMU drives a vTPM.  Usage: axl-bench-vtpm PORT SECONDS
// Prints "<op> <commands/s>" for PCR_Extend, GetRandom and Quote.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vtpm/tpm_wire.h"

using namespace axl::vtpm::tpm;

namespace {

int g_fd = -1;

bool io_all(bool wr, uint8_t* p, size_t n) {
  while (n) {
    ssize_t r = wr ? ::write(g_fd, p, n) : ::read(g_fd, p, n);
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r);
  }
  return true;
}

std::vector<uint8_t> transact_once(std::vector<uint8_t>& cmd);

std::vector<uint8_t> transact(std::vector<uint8_t> cmd) {
  for (int attempt = 0;; ++attempt) {
    auto rsp = transact_once(cmd);
    // TPM_RC_RETRY: the TPM asks for the command again (libtpms does for an
    // ECDSA signature whose nonce came out unusable); counted as one command.
    if (header(rsp)->code == 0x922 && attempt < 8) continue;
    if (header(rsp)->code != 0) exit((fprintf(stderr, "TPM error 0x%x\n", header(rsp)->code), 1));
    return rsp;
  }
}

std::vector<uint8_t> transact_once(std::vector<uint8_t>& cmd) {
  if (!io_all(true, cmd.data(), cmd.size())) exit((perror("write"), 1));
  std::vector<uint8_t> rsp(10);
  if (!io_all(false, rsp.data(), 10)) exit((perror("read"), 1));
  auto h = header(rsp);
  if (!h || h->size < 10 || h->size > 8192) exit((fprintf(stderr, "bad response\n"), 1));
  rsp.resize(h->size);
  if (!io_all(false, rsp.data() + 10, h->size - 10)) exit((perror("read"), 1));
  return rsp;
}

template <typename F>
double rate(double seconds, F make) {
  using C = std::chrono::steady_clock;
  const auto end = C::now() + std::chrono::duration<double>(seconds);
  const auto t0 = C::now();
  long n = 0;
  while (C::now() < end) {
    for (int i = 0; i < 16; ++i, ++n) transact(make());
  }
  return static_cast<double>(n) / std::chrono::duration<double>(C::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT SECONDS\n", argv[0]);
    return 2;
  }
  g_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(atoi(argv[1])));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(g_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return (perror("connect"), 1);
  int one = 1;
  ::setsockopt(g_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const double secs = atof(argv[2]);

  // The same signing key on both TPMs: a restricted ECDSA P-256 primary in
  // the endorsement hierarchy (the template axolotl-vtpm's AK uses).
  Command cp(kCcCreatePrimary, {kRhEndorsement}, 1);
  cp.open().u16(0).u16(0).close();
  cp.open()
      .u16(0x23)
      .u16(0x0B)
      .u32(0x00050072)
      .u16(0)
      .u16(0x10)
      .u16(0x18)
      .u16(0x0B)
      .u16(0x03)
      .u16(0x10)
      .u16(0)
      .u16(0)
      .close();
  cp.u16(0).u32(0);
  auto rsp = transact(cp.finish());
  Reader r(rsp);
  uint32_t key;
  r.skip(10);
  r.u32(key);

  std::vector<uint8_t> digest(32, 0x5a);
  const double extend = rate(
      secs, [&] { return Command(kCcPcrExtend, {16}, 1).u32(1).u16(0x0B).raw(digest).finish(); });
  const double getrandom = rate(secs, [] { return Command(kCcGetRandom, {}, 0).u16(32).finish(); });
  std::vector<uint8_t> nonce(16, 0x11);
  const double quote = rate(secs, [&] {
    return Command(kCcQuote, {key}, 1)
        .b2(nonce)
        .u16(0x10)  // the key's own scheme
        .u32(1)
        .u16(0x0B)
        .u8(3)
        .u8(0x01)
        .u8(0x00)
        .u8(0x01)  // sha256: PCR 0, 16
        .finish();
  });
  transact(Command(kCcFlushContext, {}, 0).u32(key).finish());
  printf("PCR_Extend %.0f\nGetRandom %.0f\nQuote %.0f\n", extend, getrandom, quote);
  return 0;
}
