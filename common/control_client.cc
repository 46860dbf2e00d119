#include "common/control_client.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <atomic>

namespace axl::control {

namespace {

uint64_t next_request_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void build(capnp::MallocMessageBuilder& mb, uint64_t id, const Request& fill) {
  auto q = mb.initRoot<schema::ControlRequest>();
  fill(q);
  q.setId(id);
}

// The reply's id, or why it has none.
Result<uint64_t> reply_id(wire::Received& r) {
  try {
    return r.root<schema::ControlReply>().getId();
  } catch (const kj::Exception& e) {
    return make_error(Errc::kMalformed,
                      std::string("malformed reply: ") + e.getDescription().cStr());
  }
}

// A reply with ok=false is the daemon's error.
Result<ControlReply> check(wire::Received r) {
  ControlReply reply(std::move(r));
  try {
    auto rr = reply.get();
    if (!rr.getOk()) return make_error(rr.getError());
  } catch (const kj::Exception& e) {
    return make_error(Errc::kMalformed,
                      std::string("malformed reply: ") + e.getDescription().cStr());
  }
  return reply;
}

}  // namespace

Result<ControlReply> call(const std::string& socket, const Request& fill, int timeout_ms,
                          const std::vector<int>& fds) {
  auto s = wire::connect(socket);
  if (!s) return s.error();
  const uint64_t id = next_request_id();
  capnp::MallocMessageBuilder mb;
  build(mb, id, fill);
  if (auto st = wire::send(s->get(), mb, fds); !st) return st.error();
  auto r = wire::recv_timeout(s->get(), timeout_ms);
  if (!r) return r.error();
  auto got = reply_id(*r);
  if (!got) return got.error();
  if (*got != id)
    return make_error(Errc::kMalformed, "reply names request " + std::to_string(*got) + ", not " +
                                            std::to_string(id));
  return check(std::move(r).value());
}

class Channel::Handle final : public PendingCall {
 public:
  Handle(std::weak_ptr<Channel> ch, uint64_t id) : ch_(std::move(ch)), id_(id) {}
  void cancel() override {
    auto ch = ch_.lock();
    if (!ch) return;
    auto it = ch->pending_.find(id_);
    if (it == ch->pending_.end()) return;
    it->second.timer->cancel();
    ch->pending_.erase(it);
    if (ch->pending_.empty() && ch->conn_) {
      boost::system::error_code ec;
      ch->conn_->cancel(ec);  // stop reading; the read handler lets go of the channel
    }
  }

 private:
  std::weak_ptr<Channel> ch_;
  uint64_t id_;
};

std::shared_ptr<Channel> Channel::open(boost::asio::io_context& io, std::string socket) {
  return std::shared_ptr<Channel>(new Channel(io, std::move(socket)));
}

Channel::Channel(boost::asio::io_context& io, std::string socket)
    : io_(io), socket_(std::move(socket)) {}

Channel::~Channel() = default;

Status Channel::connect() {
  auto s = wire::connect(socket_);
  if (!s) return s.error();
  const int fd = s->get();
  // Sends must never wait on the daemon: a full buffer is an error.
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
    return make_error(Errc::kIo, "cannot make the connection to " + socket_ + " non-blocking");
  conn_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, s->release());
  reading_ = false;
  ++conn_gen_;
  return {};
}

Status Channel::send(uint64_t id, const Request& fill, const std::vector<int>& fds) {
  capnp::MallocMessageBuilder mb;
  build(mb, id, fill);
  // A connection the daemon closed while it was idle (it restarted) tells
  // so only now: its requests in flight fail, and this one goes out on a new
  // connection, since the old one never delivered it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool fresh = !conn_;
    if (fresh)
      if (auto s = connect(); !s) return s;
    auto s = wire::send(conn_->native_handle(), mb, fds);
    if (s) return s;
    if (s.error().code == Errc::kWouldBlock) return s;
    lose_connection(s.error());
    if (fresh || s.error().code != Errc::kClosed) return s;
  }
  return make_error(Errc::kClosed, "cannot send to " + socket_);
}

std::shared_ptr<PendingCall> Channel::call(const Request& fill, int timeout_ms, Done done,
                                           const std::vector<int>& fds) {
  const uint64_t id = next_request_id();
  auto status = send(id, fill, fds);
  Pending p;
  p.done = std::move(done);
  p.timer = std::make_unique<boost::asio::steady_timer>(io_);
  auto& entry = pending_.emplace(id, std::move(p)).first->second;
  if (!status) {
    // Completed on the loop, after call() returns, like every other answer.
    boost::asio::post(
        io_, [self = shared_from_this(), id, e = status.error()] { self->complete(id, e); });
  } else {
    entry.timer->expires_after(std::chrono::milliseconds(timeout_ms));
    entry.timer->async_wait([self = shared_from_this(), id,
                             timeout_ms](const boost::system::error_code& ec) {
      if (ec) return;
      self->complete(
          id, make_error(Errc::kTimeout, "no reply within " + std::to_string(timeout_ms) + " ms"));
    });
    arm_read();
  }
  return std::make_shared<Handle>(weak_from_this(), id);
}

void Channel::arm_read() {
  if (reading_ || !conn_ || pending_.empty()) return;
  reading_ = true;
  conn_->async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [self = shared_from_this(), gen = conn_gen_](const boost::system::error_code& ec) {
        if (gen != self->conn_gen_) return;  // a connection since lost
        self->reading_ = false;
        if (ec) return self->arm_read();  // cancelled: still wanted?
        self->on_readable();
      });
}

void Channel::on_readable() {
  while (conn_) {
    auto r = wire::recv(conn_->native_handle(), MSG_DONTWAIT);
    if (!r && r.error().code == Errc::kWouldBlock) break;
    if (!r) {
      Error e = r.error();
      if (e.code == Errc::kClosed) e.message = socket_ + " closed the connection before answering";
      lose_connection(e);
      return;
    }
    auto id = reply_id(*r);
    if (!id) {
      lose_connection(id.error());  // a daemon that sends garbage: start afresh
      return;
    }
    // An answer to a request that already completed (its deadline passed,
    // or it was cancelled) is dropped.
    if (pending_.count(*id)) complete(*id, check(std::move(r).value()));
  }
  arm_read();
}

void Channel::complete(uint64_t id, Result<ControlReply> r) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // cancelled, or completed already
  Done done = std::move(it->second.done);
  it->second.timer->cancel();
  pending_.erase(it);
  if (pending_.empty() && conn_ && reading_) {
    boost::system::error_code ec;
    conn_->cancel(ec);
  }
  done(std::move(r));
}

void Channel::lose_connection(const Error& why) {
  if (conn_) {
    boost::system::error_code ec;
    conn_->close(ec);
    conn_.reset();
  }
  reading_ = false;
  // Their answers can no longer come: each fails on the loop, unless
  // cancelled before.
  for (auto& [id, p] : pending_) {
    p.timer->cancel();
    boost::asio::post(io_, [self = shared_from_this(), id = id, why] { self->complete(id, why); });
  }
}

std::shared_ptr<PendingCall> async_call(boost::asio::io_context& io, const std::string& socket,
                                        const Request& fill, int timeout_ms, Done done,
                                        const std::vector<int>& fds) {
  return Channel::open(io, socket)->call(fill, timeout_ms, std::move(done), fds);
}

}  // namespace axl::control
