#include "hypervisor/daemon/driver_messages.h"

#include <kj/exception.h>

#include "common/schema/driver.capnp.h"

namespace axl::hv {

namespace {

Error malformed(std::string why) { return make_error(Errc::kMalformed, std::move(why)); }

std::string union_member(schema::DriverMsg::Reader m) {
  switch (m.which()) {
    case schema::DriverMsg::HELLO:
      return "hello";
    case schema::DriverMsg::ATTACH:
      return "attach";
    case schema::DriverMsg::DETACH:
      return "detach";
    case schema::DriverMsg::ATTACHED:
      return "attached";
  }
  return "unknown union member " + std::to_string(static_cast<unsigned>(m.which()));
}

// A name as it may appear in a log line: the first bytes, printable only.
std::string printable(const char* p, size_t n, size_t max) {
  std::string s;
  for (size_t i = 0; i < n && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    s += (c >= 0x20 && c < 0x7f) ? char(c) : '?';
  }
  if (n > max) s += "...";
  return s;
}

Result<DriverHello> read_hello(schema::DriverMsg::Reader root) {
  if (root.which() != schema::DriverMsg::HELLO)
    return malformed("first message is " + union_member(root) + ", not hello");
  if (!root.hasHello()) return malformed("hello without a body");
  auto h = root.getHello();
  if (!h.hasName()) return malformed("hello without a name");
  auto name = h.getName();
  // valid_name caps names far below this; checking the size first keeps a
  // 256 KiB name from being copied just to be refused.
  if (name.size() > 64) return malformed("hello name is " + std::to_string(name.size()) + " bytes");
  DriverHello out;
  out.name.assign(name.begin(), name.size());
  if (!config::valid_name(out.name))
    return malformed("hello name '" + printable(name.begin(), name.size(), 64) +
                     "' is not a valid driver name");
  switch (h.getKind()) {
    case schema::DriverKind::NET:
      out.kind = config::DriverKind::kNet;
      break;
    case schema::DriverKind::BLK:
      out.kind = config::DriverKind::kBlk;
      break;
    default:
      return malformed("hello kind " + std::to_string(static_cast<unsigned>(h.getKind())) +
                       " is neither net nor blk");
  }
  out.pid = h.getPid();
  if (out.pid < 1 || out.pid > kMaxPid)
    return malformed("hello pid " + std::to_string(out.pid) + " is out of range");
  out.standby = h.getStandby();
  return out;
}

Result<AttachReply> read_attached(schema::DriverMsg::Reader root, uint32_t expected) {
  if (root.which() != schema::DriverMsg::ATTACHED)
    return malformed("answer is " + union_member(root) + ", not attached");
  if (!root.hasAttached()) return malformed("attached without a body");
  auto a = root.getAttached();
  AttachReply out;
  out.device_id = a.getDeviceId();
  if (out.device_id != expected)
    return malformed("attached names device " + std::to_string(out.device_id) + ", not " +
                     std::to_string(expected));
  out.ok = a.getOk();
  if (out.ok) return out;  // any text beside a success is ignored
  if (a.hasError()) {
    auto e = a.getError();
    if (e.size() > kMaxAttachErrorBytes)
      return malformed("attached error text is " + std::to_string(e.size()) + " bytes (at most " +
                       std::to_string(kMaxAttachErrorBytes) + ")");
    out.error = printable(e.begin(), e.size(), kMaxAttachErrorBytes);
  }
  if (out.error.empty()) out.error = "no reason given";
  return out;
}

}  // namespace

Result<DriverHello> decode_hello(wire::Received& msg) {
  try {
    return read_hello(msg.root<schema::DriverMsg>());
  } catch (const kj::Exception& e) {
    return malformed(std::string("undecodable hello: ") +
                     printable(e.getDescription().cStr(), e.getDescription().size(), 200));
  }
}

Result<AttachReply> decode_attached(wire::Received& msg, uint32_t expected_device_id) {
  try {
    return read_attached(msg.root<schema::DriverMsg>(), expected_device_id);
  } catch (const kj::Exception& e) {
    return malformed(std::string("undecodable attached: ") +
                     printable(e.getDescription().cStr(), e.getDescription().size(), 200));
  }
}

Result<uint32_t> attached_device_id(wire::Received& msg) {
  try {
    auto root = msg.root<schema::DriverMsg>();
    if (!root.isAttached() || !root.hasAttached())
      return malformed("not an attached message: " + union_member(root));
    return root.getAttached().getDeviceId();
  } catch (const kj::Exception& e) {
    return malformed(std::string("undecodable message: ") +
                     printable(e.getDescription().cStr(), e.getDescription().size(), 200));
  }
}

std::string describe(wire::Received& msg) {
  try {
    auto root = msg.root<schema::DriverMsg>();
    std::string what = union_member(root);
    if (root.isAttached() && root.hasAttached())
      what += " (device " + std::to_string(root.getAttached().getDeviceId()) + ")";
    return what;
  } catch (const kj::Exception&) {
    return "undecodable message";
  }
}

}  // namespace axl::hv
