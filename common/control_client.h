// Clients of the daemons' control sockets (common/schema/control.capnp;
// docs/architecture.md, "Control plane").
//
// A daemon's loop asks another daemon through a Channel: one connection kept
// open and shared by every request to that daemon, each request with an id
// the reply carries back, so several can be in flight and their answers come
// in whatever order the daemon gives them. Completions run on the caller's
// Asio loop, once each, with the reply or a typed Error: the daemon's own
// (kOther), kClosed (the connection went away before the answer), kTimeout
// (no answer by the request's deadline), kMalformed (an answer that does not
// decode: the connection is dropped and made again for the next request),
// kWouldBlock (the daemon does not read its requests), kIo. An answer that
// names no request in flight (one that timed out) is dropped. File
// descriptors travel both ways with SCM_RIGHTS.
//
// Requests are built by the typed clients (common/control_requests.h), never
// by filling the schema's union at the call site.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.h"

#include "common/result.h"
#include "common/schema/control.capnp.h"
#include "common/wire.h"

namespace axl::control {

class ControlReply {
 public:
  explicit ControlReply(wire::Received r) : r_(std::move(r)) {}
  schema::ControlReply::Reader get() { return r_.root<schema::ControlReply>(); }
  std::vector<UniqueFd>& fds() { return r_.fds(); }  // what came with the reply

 private:
  wire::Received r_;
};

// Fills in one request (its union member and arguments); the id is the
// client's.
using Request = std::function<void(schema::ControlRequest::Builder)>;
using Done = std::function<void(Result<ControlReply>)>;

// Sends one request to the daemon at `socket` on a connection of its own and
// waits for the reply: for command-line tools, never for a daemon's loop. A
// reply with ok=false becomes an Error carrying the daemon's message.
Result<ControlReply> call(const std::string& socket, const Request& fill, int timeout_ms = 60000,
                          const std::vector<int>& fds = {});

// A request in flight; cancel() means its completion will not run.
class PendingCall {
 public:
  virtual ~PendingCall() = default;
  virtual void cancel() = 0;
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // Connects lazily, at the first request, and again after the connection
  // was lost (the daemon restarted): nothing here waits for the daemon.
  static std::shared_ptr<Channel> open(boost::asio::io_context& io, std::string socket);
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  // Sends the request now and returns; `done` runs later on the loop, never
  // before call() returns. A request in flight keeps the channel alive until
  // it completes, so a caller may drop both handles.
  std::shared_ptr<PendingCall> call(const Request& fill, int timeout_ms, Done done,
                                    const std::vector<int>& fds = {});

  const std::string& socket() const { return socket_; }
  size_t in_flight() const { return pending_.size(); }

 private:
  struct Pending {
    Done done;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };
  class Handle;
  Channel(boost::asio::io_context& io, std::string socket);
  Status connect();
  Status send(uint64_t id, const Request& fill, const std::vector<int>& fds);
  void arm_read();
  void on_readable();
  void complete(uint64_t id, Result<ControlReply> r);
  void lose_connection(const Error& why);  // fails every request in flight
  void fail_soon(Done done, Error e);

  boost::asio::io_context& io_;
  std::string socket_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> conn_;
  std::map<uint64_t, Pending> pending_;
  bool reading_ = false;
  uint64_t conn_gen_ = 0;  // which connection a read handler was armed on
};

// One request on a channel of its own, which lives until the answer: for a
// daemon that asks another only now and then.
std::shared_ptr<PendingCall> async_call(boost::asio::io_context& io, const std::string& socket,
                                        const Request& fill, int timeout_ms, Done done,
                                        const std::vector<int>& fds = {});

}  // namespace axl::control
