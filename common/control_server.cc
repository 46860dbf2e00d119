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

ControlServer::Deferred::Deferred(ControlServer* server,
                                  std::shared_ptr<asio::posix::stream_descriptor> conn)
    : server_(server), conn_(std::move(conn)), server_alive_(server->alive_) {
  msg_.initRoot<schema::ControlReply>().setOk(true);
}

ControlServer::Deferred::~Deferred() {
  if (sent_) return;
  auto r = reply();
  r.setOk(false);
  r.setError("request abandoned");
  send();
}

void ControlServer::Deferred::send() {
  if (sent_) return;
  sent_ = true;
  if (auto s = wire::send(conn_->native_handle(), msg_); !s)
    AXL_WARN("control reply: %s", s.error().message.c_str());
  if (*server_alive_) server_->serve(conn_);
}

std::shared_ptr<ControlServer::Deferred> ControlServer::Context::defer() {
  if (!deferred_) deferred_.reset(new Deferred(server_, conn_));
  return deferred_;
}

Status ControlServer::listen(const std::string& path) {
  auto l = wire::listen(path);
  if (!l) return l.error();
  listen_ = std::make_unique<asio::posix::stream_descriptor>(io_, l->release());
  accept_next();
  return {};
}

void ControlServer::accept_next() {
  listen_->async_wait(
      asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return;
        int fd =
            ::accept4(listen_->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) serve(std::make_shared<asio::posix::stream_descriptor>(io_, fd));
        accept_next();
      });
}

void ControlServer::serve(const std::shared_ptr<asio::posix::stream_descriptor>& conn) {
  conn->async_wait(asio::posix::stream_descriptor::wait_read,
                   [this, conn](const boost::system::error_code& ec) {
                     if (ec) return;
                     auto m = wire::recv(conn->native_handle(), MSG_DONTWAIT);
                     if (!m && m.error().code == Errc::kWouldBlock) return serve(conn);
                     if (!m) return;  // closed or malformed: drop the connection
                     capnp::MallocMessageBuilder reply;
                     auto rb = reply.initRoot<schema::ControlReply>();
                     Context ctx;
                     ctx.server_ = this;
                     ctx.conn_ = conn;
                     try {
                       handler_(m->root<schema::ControlRequest>(), rb, ctx);
                     } catch (const kj::Exception& e) {
                       rb.setOk(false);
                       rb.setError(std::string("malformed request: ") + e.getDescription().cStr());
                       if (ctx.deferred_) {  // answer now after all: the handler failed on the way
                         auto d = ctx.deferred_->reply();
                         d.setOk(false);
                         d.setError(std::string("malformed request: ") + e.getDescription().cStr());
                         ctx.deferred_->send();
                         return;
                       }
                     }
                     if (ctx.deferred_) return;  // its Deferred sends the reply and serves on
                     if (auto s = wire::send(conn->native_handle(), reply); !s)
                       AXL_WARN("control reply: %s", s.error().message.c_str());
                     serve(conn);
                   });
}

}  // namespace axl
