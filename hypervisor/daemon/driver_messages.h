// What a driver domain sends the hypervisor, decoded into plain values.  A
// driver is untrusted (docs/architecture.md "Confinement"), so every Cap'n Proto
// read of its messages happens here, inside a catch of kj::Exception: a bad
// pointer, a wrong union member, an oversize text or an invalid name turns
// into an Error with code Errc::kMalformed and a one-line reason, never into
// an exception thrown out of an Asio handler.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/config.h"
#include "common/result.h"
#include "common/wire.h"

namespace axl::hv {

// proc(5), /proc/sys/kernel/pid_max: at most 2^22 (PID_MAX_LIMIT) on 64-bit
// Linux.  A pid outside [1, kMaxPid] is never a process; 0 and negative pids
// mean process groups or everyone to kill(2), so they must not get as far
// as a quarantine report.
constexpr int32_t kMaxPid = 1 << 22;
// A refusal's reason is only logged and shown to the operator; one that is
// longer than this is not a reason but an attempt to flood the log.
constexpr size_t kMaxAttachErrorBytes = 512;

// The first message on a driver connection.
struct DriverHello {
  std::string name;  // config::valid_name holds
  config::DriverKind kind = config::DriverKind::kBlk;
  int32_t pid = 0;  // in [1, kMaxPid]
  bool standby = false;
};

// A driver's answer to Attach.
struct AttachReply {
  uint32_t device_id = 0;  // the id the hypervisor asked for
  bool ok = false;
  // Why the driver refused the device (empty when ok); at most
  // kMaxAttachErrorBytes, control characters replaced by '?' so that it
  // stays one line in the log.
  std::string error;
};

Result<DriverHello> decode_hello(wire::Received& msg);
// `expected_device_id` is the id of the Attach it answers: any other id is
// a stale or invented answer.
Result<AttachReply> decode_attached(wire::Received& msg, uint32_t expected_device_id);
// The device id an `attached` message names, to find the attach it
// answers; Errc::kMalformed for anything else.
Result<uint32_t> attached_device_id(wire::Received& msg);
// What a message is, for a log line about one nobody asked for ("attached
// (device 3)", "an undecodable message"); never throws.
std::string describe(wire::Received& msg);

}  // namespace axl::hv
