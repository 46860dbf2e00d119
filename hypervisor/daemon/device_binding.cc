#include "hypervisor/daemon/device_binding.h"

namespace axl::hv {

Result<ChannelGrant> attach_channel(DriverConnection& drv, const DeviceRequest& req) {
  if (drv.kind() != req.kind)
    return make_error("driver '" + drv.name() + "' is a " + config::to_string(drv.kind()) +
                      " driver, not " + config::to_string(req.kind));
  const bool blk = req.kind == config::DriverKind::kBlk;
  ChannelShape shape = blk ? blk_channel_shape() : net_channel_shape();
  // Every binding gets a fresh channel: memory a previous driver could have
  // scribbled on is never reused.
  auto fds = channel::create(shape.slots, shape.slot_size);
  if (!fds) return fds.error();
  auto mapping = channel::Mapping::map(fds->mem.get(), shape.slots, shape.slot_size);
  if (!mapping) return mapping.error();
  DriverConnection::AttachArgs args;
  args.slots = shape.slots;
  args.slot_size = shape.slot_size;
  args.fds = {fds->mem.get(), fds->req_kick.get(), fds->resp_kick.get()};
  if (blk) {
    if (!req.image) return make_error("blk device without an image fd");
    args.fds.push_back(req.image.get());
    args.read_only = req.blk.read_only;
    args.serial = req.blk.serial;
  } else {
    args.mac = req.net.mac;
  }
  auto id = drv.attach(args);
  if (!id) return id.error();
  return ChannelGrant{*id, channel::HvEnd(std::move(mapping).value(), std::move(fds->req_kick),
                                          std::move(fds->resp_kick))};
}

Result<BoundDevice> bind_device(DriverConnection& drv, const std::string& socket,
                                const DeviceRequest& req, DeviceSupervision sup) {
  auto g = attach_channel(drv, req);
  if (!g) return g.error();
  BoundDevice b;
  b.device_id = g->device_id;
  sup.owner = drv.instance_pid();
  b.device = req.kind == config::DriverKind::kBlk
                 ? make_blk_device(socket, req.blk, std::move(g->end), std::move(sup))
                 : make_net_device(socket, req.net, std::move(g->end), std::move(sup));
  if (auto s = b.device->start(); !s) {
    b.device.reset();
    drv.detach(b.device_id);
    return s.error();
  }
  return b;
}

Status rebind_device(DriverConnection& drv, const DeviceRequest& req, BoundDevice& b) {
  auto g = attach_channel(drv, req);
  if (!g) return g.error();
  if (auto s = b.device->rebind(std::move(g->end), drv.instance_pid()); !s) {
    drv.detach(g->device_id);
    return s;
  }
  b.device_id = g->device_id;
  return {};
}

}  // namespace axl::hv
