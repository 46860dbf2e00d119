#include "common/control_server.h"

#include <sys/socket.h>

#include "common/log.h"
#include "common/wire.h"

namespace axl {

namespace asio = boost::asio;

Status ControlServer::listen(const std::string& path) {
  auto l = wire::listen(path);
  if (!l) return l.error();
  listen_ = std::make_unique<asio::posix::stream_descriptor>(io_, l->release());
  accept_next();
  return {};
}

void ControlServer::accept_next() {
  listen_->async_wait(asio::posix::stream_descriptor::wait_read,
                      [this](const boost::system::error_code& ec) {
                        if (ec) return;
                        int fd = ::accept4(listen_->native_handle(), nullptr, nullptr,
                                           SOCK_CLOEXEC | SOCK_NONBLOCK);
                        if (fd >= 0) serve(std::make_shared<asio::posix::stream_descriptor>(io_, fd));
                        accept_next();
                      });
}

void ControlServer::serve(std::shared_ptr<asio::posix::stream_descriptor> conn) {
  conn->async_wait(asio::posix::stream_descriptor::wait_read, [this, conn](
                                                                  const boost::system::error_code& ec) {
    if (ec) return;
    auto m = wire::recv(conn->native_handle(), MSG_DONTWAIT);
    if (!m && m.error().code == Errc::kWouldBlock) return serve(conn);
    if (!m) return;  // closed or malformed: drop the connection
    capnp::MallocMessageBuilder reply;
    auto rb = reply.initRoot<schema::ControlReply>();
    try {
      handler_(m->root<schema::ControlRequest>(), rb);
    } catch (const kj::Exception& e) {
      rb.setOk(false);
      rb.setError(std::string("malformed request: ") + e.getDescription().cStr());
    }
    if (auto s = wire::send(conn->native_handle(), reply); !s)
      AXL_WARN("control reply: %s", s.error().message.c_str());
    serve(conn);
  });
}

}  // namespace axl
