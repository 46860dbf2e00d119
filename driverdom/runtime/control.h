// Parsing of hypervisor -> driver control messages (common/schema/driver.capnp)
// into typed commands.  Everything is checked here, before a driver sees it.
#pragma once
#include <variant>

#include "common/result.h"
#include "common/wire.h"
#include "driverdom/runtime/driver.h"

namespace axl::driverdom {

struct DetachCmd {
  uint32_t device_id = 0;
};

// A rejected message still tells which device it was about when it got that
// far, so the answer can name it.
struct Rejection {
  uint32_t device_id = 0;
  bool is_attach = false;
  std::string reason;
};

// What a control message turned out to be.
using ControlMsg = std::variant<AttachSpec, DetachCmd, Rejection>;

// Never throws: malformed Cap'n Proto is reported as a Rejection.
ControlMsg parse_control(wire::Received& msg);

// Builds and sends DriverMsg.hello / DriverMsg.attached.
Status send_hello(int sock, const std::string& name, Kind kind, int32_t pid, bool standby = false);
Status send_attached(int sock, uint32_t device_id, bool ok, const std::string& error);

}  // namespace axl::driverdom
