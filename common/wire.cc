#include "common/wire.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace axl::wire {

Received::Received(kj::Array<capnp::word> words, std::vector<UniqueFd> fds)
    : words_(kj::mv(words)), fds_(std::move(fds)) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = kMaxMessageBytes / sizeof(capnp::word);
  opts.nestingLimit = 32;
  reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words_.asPtr(), opts);
}

Status send(int sock, capnp::MessageBuilder& msg, const std::vector<int>& fds) {
  if (fds.size() > kMaxFds) return make_error("too many fds for one message");
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(msg);
  auto bytes = flat.asBytes();
  if (bytes.size() > kMaxMessageBytes) return make_error("control message too large");
  iovec iov{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return make_error(Errc::kWouldBlock, "send: the peer is not reading (socket buffer full)");
  if (n < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN))
    return make_error(Errc::kClosed, std::string("send: ") + strerror(errno));
  if (n < 0) return make_error(Errc::kIo, std::string("send: ") + strerror(errno));
  return {};
}

Result<Received> recv(int sock, int flags) {
  auto words = kj::heapArray<capnp::word>(kMaxMessageBytes / sizeof(capnp::word));
  iovec iov{words.begin(), words.size() * sizeof(capnp::word)};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  do n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
  while (n < 0 && errno == EINTR);
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return make_error(Errc::kWouldBlock, kWouldBlock);
  if (n < 0) return make_error(Errc::kIo, std::string("recv: ") + strerror(errno));
  if (n == 0) return make_error(Errc::kClosed, kClosed);
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
    return make_error(Errc::kMalformed, "message truncated");
  if (n % sizeof(capnp::word) != 0) return make_error(Errc::kMalformed, "message not word aligned");
  size_t nw = static_cast<size_t>(n) / sizeof(capnp::word);
  auto exact = kj::heapArray<capnp::word>(nw);
  memcpy(exact.begin(), words.begin(), static_cast<size_t>(n));
  try {
    Received r(kj::mv(exact), std::move(fds));
    return r;
  } catch (const kj::Exception& e) {
    return make_error(Errc::kMalformed,
                      std::string("malformed message: ") + e.getDescription().cStr());
  }
}

Result<Received> recv_timeout(int sock, int timeout_ms) {
  pollfd p{sock, POLLIN, 0};
  int r;
  do r = ::poll(&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  if (r == 0) return make_error(Errc::kTimeout, "timed out waiting for a reply");
  if (r < 0) return make_error(Errc::kIo, std::string("poll: ") + strerror(errno));
  return recv(sock, MSG_DONTWAIT);
}

static Result<sockaddr_un> addr_of(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return make_error("socket path too long: " + path);
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

Result<UniqueFd> connect(const std::string& path) {
  auto a = addr_of(path);
  if (!a) return a.error();
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a.value()), sizeof(sockaddr_un)) < 0)
    return make_error(Errc::kIo, "cannot connect to " + path + ": " + strerror(errno));
  return s;
}

Status bind_private(int sock, const std::string& path) {
  auto a = addr_of(path);
  if (!a) return a.error();
  // A stale socket from an earlier run is replaced; anything else at that
  // path is not ours to remove.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error("refusing to replace " + path + ": not a socket");
    ::unlink(path.c_str());
  }
  if (::bind(sock, reinterpret_cast<sockaddr*>(&a.value()), sizeof(sockaddr_un)) < 0)
    return make_error("cannot bind " + path + ": " + strerror(errno));
  // The mode is set before anyone can connect (a socket that does not
  // listen yet refuses every connect), whatever the caller's umask was.
  if (::chmod(path.c_str(), 0600) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error("cannot chmod " + path + ": " + strerror(e));
  }
  return {};
}

Result<UniqueFd> listen(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  if (auto b = bind_private(s.get(), path); !b) return b.error();
  if (::listen(s.get(), 16) < 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error("cannot listen on " + path + ": " + strerror(e));
  }
  return s;
}

namespace {
bool peer_ucred(int sock, struct ucred* cred) {
  socklen_t len = sizeof *cred;
  return ::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0;
}
}  // namespace

bool peer_trusted(int sock, int* uid, int* pid) {
  struct ucred cred {};
  if (!peer_ucred(sock, &cred)) return false;
  if (uid) *uid = int(cred.uid);
  if (pid) *pid = int(cred.pid);
  return cred.uid == 0 || cred.uid == ::geteuid();
}

Result<UniqueFd> stream_connect(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return make_error("socket path too long: " + path);
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return make_error("cannot connect to " + path + ": " + strerror(errno));
  return s;
}

PeerCred peer_cred(int sock) {
  PeerCred p;
  struct ucred cred {};
  if (!peer_ucred(sock, &cred)) return p;
  p.uid = int(cred.uid);
  p.gid = int(cred.gid);
  p.pid = int(cred.pid);
  p.gids.push_back(p.gid);
  std::vector<gid_t> groups(64);
  socklen_t len = socklen_t(groups.size() * sizeof(gid_t));
  int r = ::getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (r != 0 && errno == ERANGE) {  // len now says how much it needs
    groups.resize(len / sizeof(gid_t));
    r = ::getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (r != 0) len = 0;
  for (size_t i = 0; i < len / sizeof(gid_t); ++i)
    if (int(groups[i]) != p.gid) p.gids.push_back(int(groups[i]));
  return p;
}

}  // namespace axl::wire
