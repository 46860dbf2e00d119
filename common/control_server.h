// Serves ControlRequest messages (common/schema/control.capnp) on a
// SOCK_SEQPACKET socket.  Each daemon plugs in its own handler; the server
// owns only the connection plumbing.
#pragma once
#include "common/asio.h"
#include <functional>
#include <memory>
#include <string>

#include "common/result.h"
#include "common/schema/control.capnp.h"
#include "common/unique_fd.h"

namespace axl {

class ControlServer {
 public:
  using Handler = std::function<void(schema::ControlRequest::Reader, schema::ControlReply::Builder)>;
  ControlServer(boost::asio::io_context& io, Handler h) : io_(io), handler_(std::move(h)) {}
  Status listen(const std::string& path);

 private:
  void accept_next();
  void serve(std::shared_ptr<boost::asio::posix::stream_descriptor> conn);

  boost::asio::io_context& io_;
  Handler handler_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> listen_;
};

}  // namespace axl
