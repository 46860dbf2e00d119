// Serves ControlRequest messages (common/schema/control.capnp) on a
// SOCK_SEQPACKET socket.  Each daemon plugs in its own handler; the server
// owns only the connection plumbing.
//
// A handler answers at once by filling the reply builder, or later: it calls
// `ctx.defer()` while it runs, keeps the returned Deferred, and fills and
// sends that on the loop when its work is done (a domain create waiting on
// drivers and the supervisor). Meanwhile every other request is served, the
// next ones on the same connection too: each reply carries its request's id
// (common/control_client.h), so a client can have several in flight.
#pragma once
#include <capnp/message.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/result.h"
#include "common/schema/control.capnp.h"
#include "common/unique_fd.h"
#include "common/wire.h"

namespace axl {

// A handler's answer from a Status: ok, or not ok with its message.
inline void set_status(schema::ControlReply::Builder r, const Status& s) {
  r.setOk(s.ok());
  if (!s) r.setError(s.error().message);
}

class ControlServer {
 public:
  // A reply that goes out later.  Dropped unsent, it answers
  // "request abandoned" so the client never waits forever.
  class Deferred {
   public:
    ~Deferred();
    schema::ControlReply::Builder reply() { return msg_.getRoot<schema::ControlReply>(); }
    void send(const std::vector<int>& fds = {});  // fds go along with SCM_RIGHTS

   private:
    friend class ControlServer;
    Deferred(std::shared_ptr<boost::asio::posix::stream_descriptor> conn, uint64_t id);
    std::shared_ptr<boost::asio::posix::stream_descriptor> conn_;
    capnp::MallocMessageBuilder msg_;
    bool sent_ = false;
  };
  class Context {
   public:
    std::shared_ptr<Deferred> defer();
    // The fds that came with the request; a handler may take them.
    std::vector<UniqueFd>& fds() { return *fds_; }
    // Who sent it (SO_PEERCRED at connect): the subject of policy decisions.
    const wire::PeerCred& peer() const { return *peer_; }

   private:
    friend class ControlServer;
    std::shared_ptr<boost::asio::posix::stream_descriptor> conn_;
    std::shared_ptr<const wire::PeerCred> peer_;
    uint64_t id_ = 0;
    std::vector<UniqueFd>* fds_ = nullptr;
    std::shared_ptr<Deferred> deferred_;
  };

  using Handler =
      std::function<void(schema::ControlRequest::Reader, schema::ControlReply::Builder)>;
  using AsyncHandler =
      std::function<void(schema::ControlRequest::Reader, schema::ControlReply::Builder, Context&)>;
  ControlServer(boost::asio::io_context& io, Handler h);
  ControlServer(boost::asio::io_context& io, AsyncHandler h) : io_(io), handler_(std::move(h)) {}
  // Closes every connection: clients with requests in flight see kClosed,
  // and a Deferred answered later sends nothing.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  Status listen(const std::string& path);
  // Serves on a socket already listening (one kept across a restart,
  // common/fd_store.h).
  void listen(UniqueFd sock);

 private:
  void accept_next();
  void serve(const std::shared_ptr<boost::asio::posix::stream_descriptor>& conn,
             const std::shared_ptr<const wire::PeerCred>& peer);

  boost::asio::io_context& io_;
  AsyncHandler handler_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> listen_;
  std::vector<std::weak_ptr<boost::asio::posix::stream_descriptor>> conns_;
};

}  // namespace axl
