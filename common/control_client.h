// A typed client for the daemons' control sockets.
#pragma once
#include <functional>
#include <string>

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

}  // namespace axl::control
