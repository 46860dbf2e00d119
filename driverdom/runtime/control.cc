#include "driverdom/runtime/control.h"

#include <capnp/message.h>
#include <kj/exception.h>

#include "common/schema/driver.capnp.h"

namespace axl::driverdom {

namespace schema = axl::schema;

const char* kind_name(Kind k) { return k == Kind::kNet ? "net" : "blk"; }

namespace {

constexpr unsigned kMaxChainImages = 16;  // as driverdom/blk/image.h walks them

// virtio 1.2 §5.2.6: the GET_ID answer is a 20-byte string.
constexpr size_t kMaxSerialBytes = 20;

ControlMsg parse_attach(schema::Attach::Reader a) {
  AttachSpec spec;
  spec.device_id = a.getDeviceId();
  spec.slots = a.getSlots();
  spec.slot_size = a.getSlotSize();
  auto reject = [&](std::string why) { return Rejection{spec.device_id, true, std::move(why)}; };
  if (spec.slots == 0 || spec.slot_size == 0) return reject("attach without slots/slotSize");
  switch (a.which()) {
    case schema::Attach::NET: {
      spec.kind = Kind::kNet;
      auto n = a.getNet();
      if (!a.hasNet() || !n.hasMac()) return reject("attach.net without a mac");
      auto mac = n.getMac();
      if (mac.size() != spec.net.mac.size())
        return reject("attach.net.mac must be 6 bytes, got " + std::to_string(mac.size()));
      std::copy(mac.begin(), mac.end(), spec.net.mac.begin());
      if (mac[0] & 1) return reject("attach.net.mac is a multicast address");
      break;
    }
    case schema::Attach::BLK: {
      spec.kind = Kind::kBlk;
      if (!a.hasBlk()) return reject("attach.blk missing");
      auto b = a.getBlk();
      spec.blk.read_only = b.getReadOnly();
      if (b.hasSerial()) {
        auto s = b.getSerial();
        if (s.size() > kMaxSerialBytes) return reject("attach.blk.serial longer than 20 bytes");
        spec.blk.serial.assign(s.begin(), s.end());
      }
      if (b.hasFormats()) {
        auto f = b.getFormats();
        if (f.size() > kMaxChainImages)
          return reject("attach.blk.formats names more than 16 images");
        for (auto x : f) {
          std::string v(x.cStr());
          if (v != "raw" && v != "qcow2") return reject("attach.blk.formats: unknown format");
          spec.blk.formats.push_back(v);
        }
      }
      if (b.hasAio()) {
        std::string v(b.getAio().cStr());
        if (v != "auto" && v != "io_uring" && v != "sync")
          return reject("attach.blk.aio: unknown engine");
        spec.blk.aio = v;
      }
      break;
    }
    default:
      return reject("attach names an unknown device kind (union member " +
                    std::to_string(static_cast<unsigned>(a.which())) + ")");
  }
  return spec;
}

}  // namespace

ControlMsg parse_control(wire::Received& msg) {
  try {
    auto root = msg.root<schema::DriverMsg>();
    switch (root.which()) {
      case schema::DriverMsg::ATTACH:
        if (!root.hasAttach()) return Rejection{0, true, "attach message without a body"};
        return parse_attach(root.getAttach());
      case schema::DriverMsg::DETACH:
        if (!root.hasDetach()) return Rejection{0, false, "detach message without a body"};
        return DetachCmd{root.getDetach().getDeviceId()};
      case schema::DriverMsg::HELLO:
      case schema::DriverMsg::ATTACHED:
        return Rejection{0, false, "hypervisor sent a driver-to-hypervisor message"};
      default:
        return Rejection{0, false,
                         "unknown message (union member " +
                             std::to_string(static_cast<unsigned>(root.which())) + ")"};
    }
  } catch (const kj::Exception& e) {
    return Rejection{0, false, std::string("malformed message: ") + e.getDescription().cStr()};
  }
}

Status send_hello(int sock, const std::string& name, Kind kind, int32_t pid, bool standby) {
  capnp::MallocMessageBuilder b;
  auto h = b.initRoot<schema::DriverMsg>().initHello();
  h.setName(name);
  h.setKind(kind == Kind::kNet ? schema::DriverKind::NET : schema::DriverKind::BLK);
  h.setPid(pid);
  h.setStandby(standby);
  return wire::send(sock, b);
}

Status send_attached(int sock, uint32_t device_id, bool ok, const std::string& error) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<schema::DriverMsg>().initAttached();
  a.setDeviceId(device_id);
  a.setOk(ok);
  if (!error.empty()) a.setError(error);
  return wire::send(sock, b);
}

}  // namespace axl::driverdom
