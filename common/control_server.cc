#include "common/control_server.h"

#include <sys/socket.h>

#include "common/log.h"
#include "common/wire.h"

namespace axl {

namespace asio = boost::asio;

ControlServer::ControlServer(asio::io_context& io, Handler h)
    : io_(io),
      handler_([h = std::move(h)](schema::ControlRequest::Reader q, schema::ControlReply::Builder r,
                                  Context&) { h(q, r); }) {}

ControlServer::~ControlServer() {
  boost::system::error_code ec;
  if (listen_) listen_->close(ec);
  for (auto& w : conns_)
    if (auto c = w.lock()) c->close(ec);
}

ControlServer::Deferred::Deferred(std::shared_ptr<asio::posix::stream_descriptor> conn, uint64_t id)
    : conn_(std::move(conn)) {
  auto r = msg_.initRoot<schema::ControlReply>();
  r.setOk(true);
  r.setId(id);
}

ControlServer::Deferred::~Deferred() {
  if (sent_) return;
  auto r = reply();
  r.setOk(false);
  r.setError("request abandoned");
  send();
}

void ControlServer::Deferred::send(const std::vector<int>& fds) {
  if (sent_) return;
  sent_ = true;
  if (!conn_->is_open()) return;  // the server is gone
  // The client may have gone meanwhile (its deadline passed): nothing to do.
  if (auto s = wire::send(conn_->native_handle(), msg_, fds); !s && s.error().code != Errc::kClosed)
    AXL_WARN("control reply: %s", s.error().message.c_str());
}

std::shared_ptr<ControlServer::Deferred> ControlServer::Context::defer() {
  if (!deferred_) deferred_.reset(new Deferred(conn_, id_));
  return deferred_;
}

Status ControlServer::listen(const std::string& path) {
  auto l = wire::listen(path);
  if (!l) return l.error();
  listen(std::move(l).value());
  return {};
}

void ControlServer::listen(UniqueFd sock) {
  listen_ = std::make_unique<asio::posix::stream_descriptor>(io_, sock.release());
  accept_next();
}

void ControlServer::accept_next() {
  listen_->async_wait(
      asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return;
        int fd =
            ::accept4(listen_->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        int uid = -1, pid = -1;
        if (fd >= 0 && !wire::peer_trusted(fd, &uid, &pid)) {
          // Control is root's (or this daemon's user's); the socket's mode
          // keeps others out already.
          AXL_WARN("control connection from uid %d (pid %d) refused", uid, pid);
          ::close(fd);
          fd = -1;
        }
        if (fd >= 0) {
          std::erase_if(conns_, [](const auto& w) { return w.expired(); });
          auto peer = std::make_shared<const wire::PeerCred>(wire::peer_cred(fd));
          auto conn = std::make_shared<asio::posix::stream_descriptor>(io_, fd);
          conns_.push_back(conn);
          serve(conn, peer);
        }
        accept_next();
      });
}

void ControlServer::serve(const std::shared_ptr<asio::posix::stream_descriptor>& conn,
                          const std::shared_ptr<const wire::PeerCred>& peer) {
  conn->async_wait(asio::posix::stream_descriptor::wait_read,
                   [this, conn, peer](const boost::system::error_code& ec) {
                     if (ec) return;
                     auto m = wire::recv(conn->native_handle(), MSG_DONTWAIT);
                     if (!m && m.error().code == Errc::kWouldBlock) return serve(conn, peer);
                     if (!m) return;  // closed or malformed: drop the connection
                     capnp::MallocMessageBuilder reply;
                     auto rb = reply.initRoot<schema::ControlReply>();
                     Context ctx;
                     ctx.conn_ = conn;
                     ctx.fds_ = &m->fds();
                     ctx.peer_ = peer;
                     try {
                       ctx.id_ = m->root<schema::ControlRequest>().getId();
                       rb.setId(ctx.id_);
                       handler_(m->root<schema::ControlRequest>(), rb, ctx);
                     } catch (const kj::Exception& e) {
                       rb.setOk(false);
                       rb.setError(std::string("malformed request: ") + e.getDescription().cStr());
                       if (ctx.deferred_) {  // answer now after all: the handler failed on the way
                         auto d = ctx.deferred_->reply();
                         d.setOk(false);
                         d.setError(std::string("malformed request: ") + e.getDescription().cStr());
                         ctx.deferred_->send();
                         return serve(conn, peer);
                       }
                     }
                     if (ctx.deferred_) return serve(conn, peer);  // its Deferred answers later
                     if (auto s = wire::send(conn->native_handle(), reply);
                         !s && s.error().code != Errc::kClosed)
                       AXL_WARN("control reply: %s", s.error().message.c_str());
                     serve(conn, peer);
                   });
}

}  // namespace axl
