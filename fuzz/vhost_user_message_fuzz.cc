// vhost-user framing and payload parsing (hypervisor/io/vhost_user/protocol.h)
// on bytes a front-end sends.  The input is a byte stream played into a real
// Unix stream socket, with eventfds attached to the first chunk as SCM_RIGHTS
// when the first input byte asks for them (more than the 8 a message may
// carry, too).  Every message read is run through every payload parser; what
// a parser accepts must re-encode to the bytes it came from.
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz/fuzz_support.h"
#include "hypervisor/io/vhost_user/protocol.h"

namespace {

using namespace axl::vhost_user;
using axl::UniqueFd;

bool same(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) { return a == b; }

void parse_all(Message& m) {
  if (auto v = parse_u64(m)) AXL_FUZZ_CHECK(same(encode_u64(*v), m.payload));
  if (auto s = parse_vring_state(m)) AXL_FUZZ_CHECK(same(encode_vring_state(*s), m.payload));
  if (auto a = parse_vring_addr(m)) AXL_FUZZ_CHECK(same(encode_vring_addr(*a), m.payload));
  if (auto c = parse_config(m)) {
    AXL_FUZZ_CHECK(c->size <= kMaxConfigSize && c->data.size() == c->size);
    AXL_FUZZ_CHECK(same(encode_config(*c), m.payload));
  }
  if (auto t = parse_mem_table(m)) {
    AXL_FUZZ_CHECK(!t->empty() && t->size() <= kMaxFds && t->size() == m.fds.size());
    auto again = encode_mem_table(*t);
    // Bytes 4..7 are padding: encode writes zero, a front-end may not.
    AXL_FUZZ_CHECK(again.size() == m.payload.size());
    AXL_FUZZ_CHECK(memcmp(again.data(), m.payload.data(), 4) == 0);
    AXL_FUZZ_CHECK(memcmp(again.data() + 8, m.payload.data() + 8, again.size() - 8) == 0);
  }
  (void)expect_empty(m);
  size_t fds_before = m.fds.size();
  if (auto f = parse_vring_fd(m)) {
    AXL_FUZZ_CHECK(f->index <= kVringIdxMask);
    // The fd moved out of the message, or there was none (NOFD).
    AXL_FUZZ_CHECK(f->fd ? (fds_before == 1 && m.fds.empty() && f->fd->get() >= 0)
                         : fds_before == 0);
  } else {
    AXL_FUZZ_CHECK(m.fds.size() == fds_before);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  axl::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  axl::fuzz::Input in(data, size);
  unsigned nfds = in.byte() % 12;
  auto stream = in.rest();

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) abort();
  UniqueFd tx(sv[0]), rx(sv[1]);
  int sndbuf = 1 << 20;
  ::setsockopt(tx.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  // The whole stream goes in before the reader starts; the first chunk
  // carries the fds (the kernel delivers them with its first byte).
  std::vector<UniqueFd> evs;
  std::vector<int> raw;
  for (unsigned i = 0; i < nfds; ++i) {
    evs.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    raw.push_back(evs.back().get());
  }
  size_t first = stream.size() < 12 ? stream.size() : 12;
  if (first > 0) {
    alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 12)];
    struct iovec iov {
      const_cast<uint8_t*>(stream.data()), first
    };
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds) {
      mh.msg_control = cbuf;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), raw.data(), sizeof(int) * nfds);
    }
    if (::sendmsg(tx.get(), &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != ssize_t(first)) abort();
    size_t off = first;
    while (off < stream.size()) {
      ssize_t n =
          ::send(tx.get(), stream.data() + off, stream.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) break;  // socket buffer full: the rest of the input is ignored
      off += size_t(n);
    }
  }
  tx.reset();  // the reader then sees EOF instead of blocking

  for (int i = 0; i < 64; ++i) {
    auto r = recv_message(rx.get());
    if (!r) {
      AXL_FUZZ_CHECK(!r.error().message.empty());
      break;
    }
    if (!r->has_value()) break;
    Message& m = **r;
    AXL_FUZZ_CHECK((m.hdr.flags & kFlagVersionMask) == kVersion);
    AXL_FUZZ_CHECK(m.hdr.size <= kMaxPayload && m.payload.size() == m.hdr.size);
    AXL_FUZZ_CHECK(m.fds.size() <= kMaxFds);
    parse_all(m);
    (void)to_string(m.req());
  }
  return 0;
}
