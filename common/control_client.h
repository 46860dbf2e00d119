// A typed client for the daemons' control sockets.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "common/asio.h"

#include "common/result.h"
#include "common/schema/control.capnp.h"
#include "common/wire.h"

namespace axl::control {

class ControlReply {
 public:
  explicit ControlReply(wire::Received r) : r_(std::move(r)) {}
  schema::ControlReply::Reader get() { return r_.root<schema::ControlReply>(); }

 private:
  wire::Received r_;
};

// Sends one request to the daemon at `socket` and returns its reply; a reply
// with ok=false becomes an Error carrying the daemon's message.
Result<ControlReply> call(const std::string& socket,
                          const std::function<void(schema::ControlRequest::Builder)>& fill,
                          int timeout_ms = 60000);

// The same request without waiting: `done` runs later on `io`'s loop with
// the reply or an Error (the daemon's own, a closed connection, or
// "no reply within N ms" once the deadline passes), exactly once, unless
// the returned handle's cancel() is called first.  The call keeps itself
// alive until then: a caller that never cancels may drop the handle.  A daemon's loop calls
// other daemons only this way (docs/architecture.md, "Control plane").
class PendingCall {
 public:
  virtual ~PendingCall() = default;
  virtual void cancel() = 0;  // `done` will not run
};
std::shared_ptr<PendingCall> async_call(
    boost::asio::io_context& io, const std::string& socket,
    const std::function<void(schema::ControlRequest::Builder)>& fill, int timeout_ms,
    std::function<void(Result<ControlReply>)> done);

}  // namespace axl::control
