#include "hypervisor/io/vhost_user/protocol.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <string>

namespace axl::vhost_user {

const char* to_string(Req r) {
  switch (r) {
    case Req::kGetFeatures:
      return "GET_FEATURES";
    case Req::kSetFeatures:
      return "SET_FEATURES";
    case Req::kSetOwner:
      return "SET_OWNER";
    case Req::kResetOwner:
      return "RESET_OWNER";
    case Req::kSetMemTable:
      return "SET_MEM_TABLE";
    case Req::kSetLogBase:
      return "SET_LOG_BASE";
    case Req::kSetLogFd:
      return "SET_LOG_FD";
    case Req::kSetVringNum:
      return "SET_VRING_NUM";
    case Req::kSetVringAddr:
      return "SET_VRING_ADDR";
    case Req::kSetVringBase:
      return "SET_VRING_BASE";
    case Req::kGetVringBase:
      return "GET_VRING_BASE";
    case Req::kSetVringKick:
      return "SET_VRING_KICK";
    case Req::kSetVringCall:
      return "SET_VRING_CALL";
    case Req::kSetVringErr:
      return "SET_VRING_ERR";
    case Req::kGetProtocolFeatures:
      return "GET_PROTOCOL_FEATURES";
    case Req::kSetProtocolFeatures:
      return "SET_PROTOCOL_FEATURES";
    case Req::kGetQueueNum:
      return "GET_QUEUE_NUM";
    case Req::kSetVringEnable:
      return "SET_VRING_ENABLE";
    case Req::kSendRarp:
      return "SEND_RARP";
    case Req::kNetSetMtu:
      return "NET_SET_MTU";
    case Req::kSetBackendReqFd:
      return "SET_BACKEND_REQ_FD";
    case Req::kIotlbMsg:
      return "IOTLB_MSG";
    case Req::kSetVringEndian:
      return "SET_VRING_ENDIAN";
    case Req::kGetConfig:
      return "GET_CONFIG";
    case Req::kSetConfig:
      return "SET_CONFIG";
    case Req::kGetInflightFd:
      return "GET_INFLIGHT_FD";
    case Req::kSetInflightFd:
      return "SET_INFLIGHT_FD";
    case Req::kResetDevice:
      return "RESET_DEVICE";
    case Req::kGetMaxMemSlots:
      return "GET_MAX_MEM_SLOTS";
  }
  return "UNKNOWN";
}

namespace {

std::string sys_error(const char* what) { return std::string(what) + ": " + strerror(errno); }

// Reads exactly n bytes of a message already begun.
Status read_exact(int sock, uint8_t* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(sock, p + got, n - got, 0);
    if (r == 0) return make_error("connection closed mid-message");
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return make_error("timed out mid-message");
      return make_error(sys_error("recv"));
    }
    got += size_t(r);
  }
  return {};
}

Status write_all(int sock, const struct msghdr& first) {
  // A reply is small; sendmsg on a stream socket may still be partial.
  struct msghdr mh = first;
  size_t total = 0;
  for (size_t i = 0; i < mh.msg_iovlen; ++i) total += mh.msg_iov[i].iov_len;
  std::vector<uint8_t> flat;
  flat.reserve(total);
  for (size_t i = 0; i < mh.msg_iovlen; ++i) {
    auto* b = static_cast<uint8_t*>(mh.msg_iov[i].iov_base);
    flat.insert(flat.end(), b, b + mh.msg_iov[i].iov_len);
  }
  size_t sent = 0;
  while (sent < flat.size()) {
    struct iovec iov {
      flat.data() + sent, flat.size() - sent
    };
    struct msghdr m {};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (sent == 0) {
      m.msg_control = mh.msg_control;
      m.msg_controllen = mh.msg_controllen;
    }
    ssize_t r = ::sendmsg(sock, &m, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return make_error(sys_error("sendmsg"));
    }
    sent += size_t(r);
  }
  return {};
}

uint32_t get32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
void put32(std::vector<uint8_t>& o, uint32_t v) {
  uint8_t b[4];
  memcpy(b, &v, 4);
  o.insert(o.end(), b, b + 4);
}
void put64(std::vector<uint8_t>& o, uint64_t v) {
  uint8_t b[8];
  memcpy(b, &v, 8);
  o.insert(o.end(), b, b + 8);
}

Status expect_size(const Message& m, size_t n) {
  if (m.payload.size() != n)
    return make_error(std::string(to_string(m.req())) + ": payload " +
                      std::to_string(m.payload.size()) + " bytes, expected " + std::to_string(n));
  return {};
}
Status expect_fds(const Message& m, size_t n) {
  if (m.fds.size() != n)
    return make_error(std::string(to_string(m.req())) + ": " + std::to_string(m.fds.size()) +
                      " fds, expected " + std::to_string(n));
  return {};
}

}  // namespace

Result<std::optional<Message>> recv_message(int sock) {
  Message m;
  uint8_t hdr[kHeaderSize];
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct iovec iov {
    hdr, sizeof hdr
  };
  struct msghdr mh {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::optional<Message>{};
  if (r < 0) return make_error(sys_error("recvmsg"));
  // Take ownership of every fd that arrived, even if we then reject the message.
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      m.fds.emplace_back(fd);
    }
  }
  if (mh.msg_flags & MSG_CTRUNC) return make_error("too many fds in one message");
  if (size_t(r) < sizeof hdr) {
    if (auto st = read_exact(sock, hdr + r, sizeof hdr - size_t(r)); !st) return st.error();
  }
  m.hdr.request = get32(hdr);
  m.hdr.flags = get32(hdr + 4);
  m.hdr.size = get32(hdr + 8);
  if ((m.hdr.flags & kFlagVersionMask) != kVersion)
    return make_error("bad protocol version in flags " + std::to_string(m.hdr.flags));
  if (m.hdr.size > kMaxPayload)
    return make_error("payload size " + std::to_string(m.hdr.size) + " exceeds limit");
  m.payload.resize(m.hdr.size);
  if (m.hdr.size) {
    if (auto st = read_exact(sock, m.payload.data(), m.hdr.size); !st) return st.error();
  }
  return std::optional<Message>(std::move(m));
}

std::optional<Message> peek_iotlb_message(int sock) {
  uint8_t buf[kHeaderSize + kIotlbMsgSize];
  ssize_t r;
  do {
    r = ::recv(sock, buf, kHeaderSize, MSG_PEEK | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r != ssize_t(kHeaderSize)) return std::nullopt;
  Message m;
  m.hdr.request = get32(buf);
  m.hdr.flags = get32(buf + 4);
  m.hdr.size = get32(buf + 8);
  if (m.req() != Req::kIotlbMsg || m.hdr.size != kIotlbMsgSize ||
      (m.hdr.flags & kFlagVersionMask) != kVersion)
    return std::nullopt;
  do {
    r = ::recv(sock, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r != ssize_t(sizeof buf)) return std::nullopt;
  m.payload.assign(buf + kHeaderSize, buf + sizeof buf);
  return m;
}

Status consume_peeked(int sock) {
  uint8_t buf[kHeaderSize + kIotlbMsgSize];
  return read_exact(sock, buf, sizeof buf);
}

static Status send_raw(int sock, const Header& h, std::span<const uint8_t> payload,
                       std::span<const int> fds) {
  if (fds.size() > kMaxFds) return make_error("too many fds");
  uint8_t hdr[kHeaderSize];
  memcpy(hdr, &h.request, 4);
  memcpy(hdr + 4, &h.flags, 4);
  uint32_t size = uint32_t(payload.size());
  memcpy(hdr + 8, &size, 4);
  struct iovec iov[2] = {{hdr, sizeof hdr}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct msghdr mh {};
  mh.msg_iov = iov;
  mh.msg_iovlen = payload.empty() ? 1 : 2;
  if (!fds.empty()) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return write_all(sock, mh);
}

Status send_reply(int sock, const Header& req, std::span<const uint8_t> payload,
                  std::span<const int> fds) {
  Header h{req.request, kVersion | kFlagReply, 0};
  return send_raw(sock, h, payload, fds);
}

Status send_request(int sock, Req r, uint32_t flags, std::span<const uint8_t> payload,
                    std::span<const int> fds) {
  Header h{uint32_t(r), kVersion | flags, 0};
  return send_raw(sock, h, payload, fds);
}

Status expect_empty(const Message& m) {
  if (auto st = expect_size(m, 0); !st) return st;
  return expect_fds(m, 0);
}

Result<uint64_t> parse_u64(const Message& m) {
  if (auto st = expect_size(m, 8); !st) return st.error();
  if (auto st = expect_fds(m, 0); !st) return st.error();
  return get64(m.payload.data());
}

Result<VringState> parse_vring_state(const Message& m) {
  if (auto st = expect_size(m, 8); !st) return st.error();
  if (auto st = expect_fds(m, 0); !st) return st.error();
  return VringState{get32(m.payload.data()), get32(m.payload.data() + 4)};
}

Result<VringAddr> parse_vring_addr(const Message& m) {
  if (auto st = expect_size(m, 40); !st) return st.error();
  if (auto st = expect_fds(m, 0); !st) return st.error();
  const uint8_t* p = m.payload.data();
  return VringAddr{get32(p),      get32(p + 4),  get64(p + 8),
                   get64(p + 16), get64(p + 24), get64(p + 32)};
}

Result<std::vector<MemRegion>> parse_mem_table(const Message& m) {
  if (m.payload.size() < 8) return make_error("SET_MEM_TABLE: payload too short");
  uint32_t n = get32(m.payload.data());
  if (n == 0 || n > kMaxFds) return make_error("SET_MEM_TABLE: " + std::to_string(n) + " regions");
  if (auto st = expect_size(m, 8 + 32ull * n); !st) return st.error();
  if (auto st = expect_fds(m, n); !st) return st.error();
  std::vector<MemRegion> out;
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* p = m.payload.data() + 8 + 32 * i;
    out.push_back(MemRegion{get64(p), get64(p + 8), get64(p + 16), get64(p + 24)});
  }
  return out;
}

Result<VringFd> parse_vring_fd(Message& m) {
  if (m.payload.size() != 8) return make_error(std::string(to_string(m.req())) + ": bad size");
  uint64_t u = get64(m.payload.data());
  VringFd out;
  out.index = uint32_t(u & kVringIdxMask);
  if (u & ~(kVringIdxMask | kVringNoFd))
    return make_error(std::string(to_string(m.req())) + ": reserved bits set");
  if (u & kVringNoFd) {
    if (auto st = expect_fds(m, 0); !st) return st.error();
  } else {
    if (auto st = expect_fds(m, 1); !st) return st.error();
    out.fd = std::move(m.fds[0]);
    m.fds.clear();
  }
  return out;
}

Result<Config> parse_config(const Message& m) {
  if (m.payload.size() < 12) return make_error("CONFIG: payload too short");
  if (auto st = expect_fds(m, 0); !st) return st.error();
  Config c;
  c.offset = get32(m.payload.data());
  c.size = get32(m.payload.data() + 4);
  c.flags = get32(m.payload.data() + 8);
  if (c.size > kMaxConfigSize) return make_error("CONFIG: size beyond 256 bytes");
  if (auto st = expect_size(m, 12 + size_t(c.size)); !st) return st.error();
  c.data.assign(m.payload.begin() + 12, m.payload.end());
  return c;
}

Result<IotlbMsg> parse_iotlb(const Message& m) {
  if (auto st = expect_size(m, kIotlbMsgSize); !st) return st.error();
  if (auto st = expect_fds(m, 0); !st) return st.error();
  const uint8_t* p = m.payload.data();
  IotlbMsg out{get64(p), get64(p + 8), get64(p + 16), p[24], IotlbType(p[25])};
  switch (out.type) {
    case IotlbType::kUpdate:
      if (out.perm < 1 || out.perm > 3)
        return make_error("IOTLB_MSG: update with bad permission " + std::to_string(out.perm));
      if (out.size == 0) return make_error("IOTLB_MSG: update of size 0");
      break;
    case IotlbType::kInvalidate:
    case IotlbType::kAccessFail:
      break;
    case IotlbType::kMiss:
      return make_error("IOTLB_MSG: a miss comes from the back-end, not the front-end");
    default:
      return make_error("IOTLB_MSG: bad type " + std::to_string(p[25]));
  }
  return out;
}

Result<uint64_t> parse_backend_ack(const Message& m, BackendReq req) {
  if (!(m.hdr.flags & kFlagReply)) return make_error("back-end channel: request, not a reply");
  if (m.hdr.request != uint32_t(req))
    return make_error("back-end channel: reply to request " + std::to_string(m.hdr.request));
  if (m.payload.size() != 8) return make_error("back-end channel: reply of wrong size");
  if (!m.fds.empty()) return make_error("back-end channel: fds in a reply");
  return get64(m.payload.data());
}

std::vector<uint8_t> encode_iotlb(const IotlbMsg& m) {
  std::vector<uint8_t> o;
  put64(o, m.iova);
  put64(o, m.size);
  put64(o, m.uaddr);
  o.push_back(m.perm);
  o.push_back(uint8_t(m.type));
  o.resize(kIotlbMsgSize, 0);
  return o;
}

Status send_backend_request(int sock, BackendReq r, bool need_reply,
                            std::span<const uint8_t> payload) {
  Header h{uint32_t(r), kVersion | (need_reply ? kFlagNeedReply : 0), 0};
  return send_raw(sock, h, payload, {});
}

std::vector<uint8_t> encode_u64(uint64_t v) {
  std::vector<uint8_t> o;
  put64(o, v);
  return o;
}
Result<InflightInfo> parse_inflight(const Message& m, size_t fds) {
  if (auto st = expect_size(m, kInflightInfoSize); !st) return st.error();
  if (auto st = expect_fds(m, fds); !st) return st.error();
  const uint8_t* p = m.payload.data();
  InflightInfo i;
  i.mmap_size = get64(p);
  i.mmap_offset = get64(p + 8);
  memcpy(&i.num_queues, p + 16, 2);
  memcpy(&i.queue_size, p + 18, 2);
  return i;
}

std::vector<uint8_t> encode_inflight(const InflightInfo& i) {
  std::vector<uint8_t> o;
  put64(o, i.mmap_size);
  put64(o, i.mmap_offset);
  put32(o, uint32_t(i.num_queues) | uint32_t(i.queue_size) << 16);
  put32(o, 0);
  return o;
}

std::vector<uint8_t> encode_vring_state(VringState s) {
  std::vector<uint8_t> o;
  put32(o, s.index);
  put32(o, s.num);
  return o;
}
std::vector<uint8_t> encode_config(const Config& c) {
  std::vector<uint8_t> o;
  put32(o, c.offset);
  put32(o, uint32_t(c.data.size()));
  put32(o, c.flags);
  o.insert(o.end(), c.data.begin(), c.data.end());
  return o;
}
std::vector<uint8_t> encode_vring_addr(const VringAddr& a) {
  std::vector<uint8_t> o;
  put32(o, a.index);
  put32(o, a.flags);
  put64(o, a.desc);
  put64(o, a.used);
  put64(o, a.avail);
  put64(o, a.log);
  return o;
}
std::vector<uint8_t> encode_mem_table(std::span<const MemRegion> regions) {
  std::vector<uint8_t> o;
  put32(o, uint32_t(regions.size()));
  put32(o, 0);
  for (auto& r : regions) {
    put64(o, r.guest_phys_addr);
    put64(o, r.memory_size);
    put64(o, r.userspace_addr);
    put64(o, r.mmap_offset);
  }
  return o;
}

}  // namespace axl::vhost_user
