#include "vtpm/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "common/log.h"
#include "vtpm/tpm_wire.h"

namespace axl::vtpm {

namespace asio = boost::asio;
using Sd = asio::posix::stream_descriptor;

namespace {

constexpr size_t kReadChunk = 4096;
// libtpms' largest buffer; a command claiming more is refused unread.
constexpr uint32_t kMaxCommand = 4096;

std::string errno_text(const std::string& what) { return what + ": " + strerror(errno); }

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

constexpr uint64_t kCaps = ctrl::kCapInit | ctrl::kCapShutdown | ctrl::kCapGetTpmEstablished |
                           ctrl::kCapSetLocality | ctrl::kCapCancelTpmCmd |
                           ctrl::kCapStoreVolatile | ctrl::kCapResetTpmEstablished |
                           ctrl::kCapGetStateBlob | ctrl::kCapSetStateBlob | ctrl::kCapStop |
                           ctrl::kCapGetConfig | ctrl::kCapSetDataFd | ctrl::kCapSetBufferSize;

// What the TCP control port (command port + 1) answers: only what the swtpm
// TCTI of host tools asks and nothing that changes or reveals the TPM's
// state (no state blobs, no power cycle or shutdown, no locality, no data
// fd): any local user can reach 127.0.0.1 (docs/architecture.md, "Least
// privilege on the host").
constexpr uint64_t kRestrictedCaps =
    ctrl::kCapGetTpmEstablished | ctrl::kCapCancelTpmCmd | ctrl::kCapGetConfig;
bool allowed_restricted(ctrl::Cmd c) {
  return c == ctrl::Cmd::kGetCapability || c == ctrl::Cmd::kGetTpmEstablished ||
         c == ctrl::Cmd::kCancelTpmCmd || c == ctrl::Cmd::kGetConfig || c == ctrl::Cmd::kGetInfo;
}

std::optional<StateKind> blob_kind(uint32_t type) {
  if (type == ctrl::kBlobPermanent) return StateKind::kPermanent;
  if (type == ctrl::kBlobVolatile) return StateKind::kVolatile;
  return std::nullopt;  // savestate: TPM 1.2 only, always empty for TPM 2.0
}

}  // namespace

// One connected control channel, on the event loop.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server& s, UniqueFd fd, bool restricted)
      : server_(s), sd_(s.io(), fd.release()), restricted_(restricted) {}
  void start() { arm_read(); }
  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ec;
    sd_.close(ec);
  }

 private:
  void arm_read() {
    if (closed_) return;
    sd_.async_wait(Sd::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->closed_) return;
      self->read_ctrl();
    });
  }

  void finish() {
    close();
    server_.forget(this);
  }

  void read_ctrl() {
    const size_t want = need_ ? need_ - in_.size() : kReadChunk;
    const size_t at = in_.size();
    in_.resize(at + want);
    iovec iov{in_.data() + at, want};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n = ::recvmsg(sd_.native_handle(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      in_.resize(at);
      return arm_read();
    }
    if (n <= 0) return finish();
    in_.resize(at + static_cast<size_t>(n));
    UniqueFd fd;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < nfds; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        if (!fd)
          fd.reset(f);
        else
          ::close(f);  // only one fd is ever expected
      }
    }
    if (fd) pending_fd_ = std::move(fd);
    auto parsed = ctrl::parse(in_);
    if (auto* more = std::get_if<ctrl::NeedMore>(&parsed)) {
      need_ = more->total;
      return arm_read();
    }
    std::vector<uint8_t> rsp;
    if (auto* bad = std::get_if<ctrl::Rejected>(&parsed)) {
      AXL_WARN("control channel: %s", bad->why.c_str());
      rsp = ctrl::rejection(*bad);
      pending_fd_.reset();
    } else {
      rsp =
          server_.handle_ctrl(std::get<ctrl::Request>(parsed), std::move(pending_fd_), restricted_);
    }
    in_.clear();
    need_ = 0;
    send(std::move(rsp), false);
  }

  void send(std::vector<uint8_t> rsp, bool close_after) {
    out_ = std::move(rsp);
    out_off_ = 0;
    close_after_ = close_after;
    flush();
  }

  void flush() {
    while (out_off_ < out_.size()) {
      ssize_t w = ::send(sd_.native_handle(), out_.data() + out_off_, out_.size() - out_off_,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == ENOTSOCK) {
        w = ::write(sd_.native_handle(), out_.data() + out_off_, out_.size() - out_off_);
      }
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        sd_.async_wait(Sd::wait_write,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (!ec && !self->closed_) self->flush();
                       });
        return;
      }
      if (w <= 0) return finish();
      out_off_ += static_cast<size_t>(w);
    }
    out_.clear();
    if (close_after_) return finish();
    if (server_.shutdown_requested()) return;
    arm_read();
  }

  Server& server_;
  Sd sd_;
  bool closed_ = false;
  bool close_after_ = false;
  std::vector<uint8_t> in_;
  size_t need_ = 0;
  UniqueFd pending_fd_;
  bool restricted_;  // the TCP control port (kRestrictedCaps)
  std::vector<uint8_t> out_;
  size_t out_off_ = 0;

  friend class Server;
};

// One TPM command stream (QEMU's data channel, a TCP or Unix client), served
// on a thread of its own with blocking I/O: per command one read() and one
// write(), no event-loop round trip.  The engine is shared with the control
// channel and other streams under Server::engine_mu_.
class DataConnection {
 public:
  // guest: QEMU's data channel (commands recorded as pending, engine.h);
  // inherited: handed to this instance at start, so a predecessor may have
  // left a command of it unanswered.
  DataConnection(Server& s, UniqueFd fd, uint64_t id, bool guest, bool inherited)
      : server_(s), fd_(std::move(fd)), id_(id), guest_(guest), inherited_(inherited) {}
  ~DataConnection() {
    close();
    if (thread_.joinable()) thread_.join();
  }
  void start() {
    thread_ = std::thread([this] { run(); });
  }
  // Wakes a blocked read; the thread then ends and the server reaps it.
  void close() { ::shutdown(fd_.get(), SHUT_RDWR); }
  uint64_t id() const { return id_; }

 private:
  void run() {
    std::vector<uint8_t> in;
    in.reserve(kReadChunk);
    uint8_t buf[kReadChunk];
    bool open = true;
    if (inherited_) {
      if (auto reply = server_.take_guest_reply()) open = send(*reply);
    }
    while (open) {
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      in.insert(in.end(), buf, buf + n);
      while (open) {
        auto h = tpm::header(in);
        if (!h) break;
        if (h->size < 10 || h->size > kMaxCommand) {
          AXL_WARN("command channel: TPM command claims %u bytes (10..%u allowed); closing",
                   h->size, kMaxCommand);
          send(tpm::error_response(tpm::kRcCommandSize));
          open = false;
          break;
        }
        if (in.size() < h->size) break;
        auto rsp = server_.handle_command({in.data(), h->size}, guest_);
        in.erase(in.begin(), in.begin() + h->size);
        open = send(rsp) && !server_.shutdown_requested();
      }
    }
    server_.reap_later(id_);
  }

  bool send(std::span<const uint8_t> rsp) {
    size_t off = 0;
    while (off < rsp.size()) {
      ssize_t w = ::send(fd_.get(), rsp.data() + off, rsp.size() - off, MSG_NOSIGNAL);
      if (w < 0 && errno == ENOTSOCK) w = ::write(fd_.get(), rsp.data() + off, rsp.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  }

  Server& server_;
  UniqueFd fd_;
  uint64_t id_;
  bool guest_, inherited_;
  std::thread thread_;
};

struct Server::Listener {
  Listener(asio::io_context& io, int fd, bool c, bool h, bool r)
      : sd(io, fd), ctrl(c), hand_over(h), restricted(r) {}
  Sd sd;
  bool ctrl;
  bool hand_over;   // QEMU's control socket: its connections are handed over
  bool restricted;  // the TCP control port: kRestrictedCaps only
};

namespace {
int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

class Server::EngineUse {
 public:
  explicit EngineUse(Server& s) : s_(s), lock_(s.engine_mu_) { s_.busy_since_ns_ = mono_ns(); }
  ~EngineUse() { s_.busy_since_ns_ = 0; }

 private:
  Server& s_;
  std::lock_guard<std::mutex> lock_;
};

bool Server::stuck(std::chrono::nanoseconds limit) const {
  const int64_t since = busy_since_ns_.load();
  return since != 0 && mono_ns() - since > limit.count();
}

Server::Server(asio::io_context& io, TpmEngine& engine) : io_(io), engine_(engine) {}

Server::~Server() {
  stop();
  if (!ctrl_path_.empty()) ::unlink(ctrl_path_.c_str());
  if (!cmd_path_.empty()) ::unlink(cmd_path_.c_str());
}

void Server::stop() {
  for (auto& l : listeners_) {
    boost::system::error_code ec;
    l->sd.close(ec);
  }
  listeners_.clear();
  for (auto& c : conns_) c->close();
  conns_.clear();
  std::vector<std::unique_ptr<DataConnection>> data;
  {
    std::lock_guard lock(data_mu_);
    data.swap(data_conns_);
  }
  data.clear();  // each closes its stream and joins its thread
}

void Server::reap_later(uint64_t id) {
  asio::post(io_, [this, id] { drop_data(id); });
}

void Server::drop_data(uint64_t id) {
  std::unique_ptr<DataConnection> gone;
  {
    std::lock_guard lock(data_mu_);
    auto it = std::find_if(data_conns_.begin(), data_conns_.end(),
                           [id](const auto& c) { return c->id() == id; });
    if (it == data_conns_.end()) return;
    gone = std::move(*it);
    data_conns_.erase(it);
  }
  gone.reset();  // joins its (finished or finishing) thread
}

void Server::forget(Connection* c) {
  std::erase_if(conns_, [c](const auto& p) { return p.get() == c; });
}

uint64_t Server::add_connection(UniqueFd fd, bool ctrl, bool guest, bool inherited,
                                bool restricted) {
  if (!ctrl) {
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    std::lock_guard lock(data_mu_);
    // The guest's channel always; host tools' streams up to a bound (each
    // has a thread, and threads count against the vTPM's pids limit).
    if (!guest && data_conns_.size() >= kMaxStreams + 1) {
      AXL_WARN("refused a command connection: %zu streams open already", data_conns_.size());
      return 0;
    }
    const uint64_t id = ++next_data_id_;
    data_conns_.push_back(
        std::make_unique<DataConnection>(*this, std::move(fd), id, guest, inherited));
    try {
      data_conns_.back()->start();
    } catch (const std::system_error& e) {
      AXL_WARN("no thread for a command connection (%s); closed it", e.what());
      data_conns_.pop_back();
      return 0;
    }
    return id;
  }
  set_nonblocking(fd.get());
  auto c = std::make_shared<Connection>(*this, std::move(fd), restricted);
  conns_.push_back(c);
  c->start();
  return 0;
}

void Server::listen_on(UniqueFd fd, bool ctrl, bool hand_over, bool restricted) {
  listeners_.push_back(std::make_unique<Listener>(io_, fd.release(), ctrl, hand_over, restricted));
  accept_loop(listeners_.back().get());
}

void Server::accept_loop(Listener* l) {
  l->sd.async_wait(Sd::wait_read, [this, l](const boost::system::error_code& ec) {
    if (ec) return;
    int fd = ::accept4(l->sd.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      if (!l->ctrl) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      }
      // QEMU connects once; that connection is the one a successor must
      // inherit.  Any later one (root's tools on vtpm.ctrl) is served, not
      // handed over: it must not take QEMU's place.
      if (l->hand_over && !ctrl_handed_over_) {
        hand_over('C', fd);
        ctrl_handed_over_ = true;
      }
      add_connection(UniqueFd(fd), l->ctrl, false, false, l->restricted);
    } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      AXL_WARN("accept: %s", strerror(errno));
    }
    accept_loop(l);
  });
}

namespace {
Result<UniqueFd> tcp_listen(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return make_error(errno_text("socket"));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return make_error(errno_text("bind 127.0.0.1:" + std::to_string(port)));
  }
  if (::listen(fd.get(), 16) != 0) return make_error(errno_text("listen"));
  return fd;
}

Result<UniqueFd> unix_listen(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return make_error("control socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return make_error(errno_text("socket"));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(path + " exists and is not a socket");
    ::unlink(path.c_str());  // a stale socket of an earlier (crashed) instance
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return make_error(errno_text("bind " + path));
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), 4) != 0) return make_error(errno_text("listen " + path));
  return fd;
}
}  // namespace

Status check_listening_fds(int ctrl_listen, int command_listen, int port_command, int port_ctrl) {
  const std::pair<int, const char*> listening[] = {{ctrl_listen, "--ctrl-listen-fd"},
                                                   {command_listen, "--command-listen-fd"},
                                                   {port_command, "--command-port-fds"},
                                                   {port_ctrl, "--command-port-fds"}};
  for (const auto& [fd, flag] : listening) {
    if (fd < 0) continue;
    int type = 0, accepting = 0;
    socklen_t len = sizeof type, alen = sizeof accepting;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &alen) != 0 || !accepting) {
      return make_error(std::string(flag) + " " + std::to_string(fd) +
                        " is not a listening stream socket");
    }
  }
  return {};
}

Status Server::start(const ServerOptions& o) {
  if (o.command_port) {
    if (o.command_port < 1 || o.command_port > 65534) {
      return make_error("command port " + std::to_string(o.command_port) +
                        " out of range 1..65534");
    }
    auto cmd = tcp_listen(o.command_port);
    if (!cmd) return cmd.error();
    auto ctl = tcp_listen(o.command_port + 1);
    if (!ctl) return ctl.error();
    listen_on(std::move(cmd.value()), false, false);
    listen_on(std::move(ctl.value()), true, false, true);
  }
  auto inherited = [](int fd, const char* flag) -> Status {
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
      return make_error(std::string(flag) + " " + std::to_string(fd) + " is not a stream socket");
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return {};
  };
  if (o.handover_fd >= 0) {
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(o.handover_fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
        type != SOCK_SEQPACKET) {
      return make_error("--handover-fd " + std::to_string(o.handover_fd) +
                        " is not a seqpacket socket");
    }
    ::fcntl(o.handover_fd, F_SETFD, FD_CLOEXEC);
    handover_.reset(o.handover_fd);
  }
  if (!o.ctrl_socket.empty()) {
    auto l = unix_listen(o.ctrl_socket);
    if (!l) return l.error();
    ctrl_path_ = o.ctrl_socket;
    listen_on(std::move(l.value()), true, true);
  }
  if (!o.command_socket.empty()) {
    auto l = unix_listen(o.command_socket);
    if (!l) return l.error();
    cmd_path_ = o.command_socket;
    listen_on(std::move(l.value()), false, false);
  }
  if (auto s = check_listening_fds(o.ctrl_listen_fd, o.command_listen_fd, o.port_command_fd,
                                   o.port_ctrl_fd);
      !s)
    return s;
  auto listen_inherited = [this](int fd, bool ctrl, bool hand_over, bool restricted = false) {
    if (fd < 0) return;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    set_nonblocking(fd);
    listen_on(UniqueFd(fd), ctrl, hand_over, restricted);
  };
  listen_inherited(o.port_command_fd, false, false);
  listen_inherited(o.port_ctrl_fd, true, false, true);
  listen_inherited(o.ctrl_listen_fd, true, true);
  listen_inherited(o.command_listen_fd, false, false);
  if (o.ctrl_fd >= 0) {
    ctrl_handed_over_ = true;  // QEMU's, inherited: handed over already
    if (auto s = inherited(o.ctrl_fd, "--ctrl-fd"); !s) return s;
    add_connection(UniqueFd(o.ctrl_fd), true);
  }
  if (o.data_fd >= 0) {
    if (auto s = inherited(o.data_fd, "--data-fd"); !s) return s;
    datafd_conn_ = add_connection(UniqueFd(o.data_fd), false, true, true);
  }
  return {};
}

// Best effort and never blocking: without a handover the vTPM still serves,
// only a restart would then lose the guest's TPM.
void Server::hand_over(char tag, int fd) {
  if (!handover_) return;
  iovec iov{&tag, 1};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))]{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (::sendmsg(handover_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
    AXL_WARN("handing the %s channel to the supervisor failed: %s", tag == 'C' ? "control" : "data",
             strerror(errno));
  }
}

std::vector<uint8_t> Server::handle_command(std::span<const uint8_t> cmd, bool guest) {
  EngineUse use(*this);
  return guest ? engine_.execute_guest(cmd) : engine_.execute(cmd);
}

std::optional<std::vector<uint8_t>> Server::take_guest_reply() {
  EngineUse use(*this);
  return engine_.take_guest_reply();
}

std::vector<uint8_t> Server::handle_ctrl(const ctrl::Request& req, UniqueFd fd, bool restricted) {
  using namespace ctrl;
  const Cmd cmd = command_of(req);
  // The swtpm TCTI sets locality 0 as it connects: allowed there while it
  // changes nothing (the locality is the TPM's, shared with the guest).
  const bool no_op_locality =
      cmd == Cmd::kSetLocality && std::get<SetLocality>(req).locality == engine_.locality();
  if (restricted && no_op_locality) return result_only(kSuccess);
  if (restricted && !allowed_restricted(cmd)) {
    const uint64_t n = ++restricted_refusals_;
    if (log::worth_logging(n))
      AXL_WARN("TCP control port: CMD_%s refused (host tools get TPM commands only; %llu so far)",
               name(uint32_t(cmd)), static_cast<unsigned long long>(n));
    return rejection(Rejected{uint32_t(cmd), kBadOrdinal, "refused on the TCP control port"});
  }
  if (restricted && cmd == Cmd::kGetCapability) return capability(kRestrictedCaps);
  // Cancelling is meant for a command in progress: it must not wait for it.
  if (cmd == Cmd::kCancelTpmCmd) {
    engine_.cancel();
    return result_only(kSuccess);
  }
  EngineUse use(*this);
  if (fd && cmd != Cmd::kSetDataFd) {
    AXL_WARN("control channel: CMD_%s came with a file descriptor; closed it", name(uint32_t(cmd)));
    fd.reset();
  }
  auto fail = [&](const std::string& why, uint32_t rc = kFail) {
    AXL_WARN("control channel: CMD_%s: %s", name(uint32_t(cmd)), why.c_str());
    Rejected r{uint32_t(cmd), rc, why};
    return rejection(r);
  };
  switch (cmd) {
    case Cmd::kGetCapability:
      return capability(kCaps);
    case Cmd::kInit: {
      // A power cycle: the TPM restarts from its permanent state, resuming
      // volatile state only when it was explicitly stored or set (swtpm's
      // rule; QEMU resuming a migrated guest relies on it).
      const bool resume = pending_volatile_;
      pending_volatile_ = false;
      engine_.power_off(!resume);
      if (auto s = engine_.power_on(resume); !s) return fail(s.error().message);
      return result_only(kSuccess);
    }
    case Cmd::kShutdown:
      engine_.power_off(true);
      shutdown_requested_ = true;
      // Answer first; the event loop stops once the reply is out.
      asio::post(io_, [this] { io_.stop(); });
      return result_only(kSuccess);
    case Cmd::kGetTpmEstablished: {
      auto bit = engine_.established();
      if (!bit) return fail(bit.error().message);
      return established(kSuccess, bit.value());
    }
    case Cmd::kSetLocality:
      engine_.set_locality(std::get<SetLocality>(req).locality);
      return result_only(kSuccess);
    case Cmd::kStoreVolatile:
      if (!engine_.running()) return fail("TPM is not running", kInvalidPostInit);
      if (auto s = engine_.checkpoint_now(); !s) return fail(s.error().message);
      pending_volatile_ = true;
      return result_only(kSuccess);
    case Cmd::kResetTpmEstablished: {
      const uint8_t old = engine_.locality();
      engine_.set_locality(std::get<ResetEstablished>(req).locality);
      auto s = engine_.reset_established();
      engine_.set_locality(old);
      if (!s) return fail(s.error().message);
      return result_only(kSuccess);
    }
    case Cmd::kGetStateBlob: {
      const auto& g = std::get<GetStateBlob>(req);
      std::vector<uint8_t> blob;
      if (auto k = blob_kind(g.type)) {
        auto b = engine_.get_state(*k);
        if (!b) return fail(b.error().message);
        blob = std::move(b.value());
      }
      if (g.offset > blob.size()) return fail("offset beyond the blob", kBadParameter);
      return state_blob(kSuccess, 0, static_cast<uint32_t>(blob.size()),
                        std::span<const uint8_t>(blob).subspan(g.offset));
    }
    case Cmd::kSetStateBlob: {
      const auto& s = std::get<SetStateBlob>(req);
      if (engine_.running()) return fail("the TPM must be stopped first", kInvalidPostInit);
      auto k = blob_kind(s.type);
      if (!k) return result_only(kSuccess);
      if (auto st = engine_.set_state(*k, s.data); !st) return fail(st.error().message);
      if (*k == StateKind::kVolatile) pending_volatile_ = true;
      return result_only(kSuccess);
    }
    case Cmd::kStop:
      engine_.power_off(false);
      return result_only(kSuccess);
    case Cmd::kGetConfig:
      return config(kSuccess, 0);
    case Cmd::kSetDataFd: {
      if (!fd) return fail("no file descriptor came with it", kBadParameter);
      int type = 0;
      socklen_t len = sizeof type;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
        return fail("the descriptor is not a stream socket", kBadParameter);
      }
      if (datafd_conn_) {
        // The old channel's thread may be waiting for the engine lock held
        // here: wake it (it ends on its own) and let the loop reap it later.
        std::lock_guard lock(data_mu_);
        for (auto& c : data_conns_)
          if (c->id() == datafd_conn_) c->close();
      }
      hand_over('D', fd.get());
      datafd_conn_ = add_connection(std::move(fd), false, true, false);
      return result_only(kSuccess);
    }
    case Cmd::kSetBufferSize: {
      const uint32_t want = std::get<SetBufferSize>(req).size;
      uint32_t mn = 0, mx = 0;
      if (engine_.running() && want != 0) {
        return fail("the buffer size can only change while the TPM is stopped", kInvalidPostInit);
      }
      const uint32_t got = engine_.set_buffer_size(want, &mn, &mx);
      return buffer_size(kSuccess, got, mn, mx);
    }
    default:
      return fail("not supported", kBadOrdinal);
  }
}

}  // namespace axl::vtpm
