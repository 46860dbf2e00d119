#include "hypervisor/daemon/device_binding.h"

namespace axl::hv {

void attach_channel(DriverConnection& drv, const DeviceRequest& req,
                    std::function<void(Result<ChannelGrant>)> done) {
  auto fail = [&](Error e) {
    // Never before the caller's own call returns: it may still be setting up.
    boost::asio::post(drv.watcher().get_executor(),
                      [done = std::move(done), e = std::move(e)] { done(e); });
  };
  if (drv.kind() != req.kind)
    return fail(make_error("driver '" + drv.name() + "' is a " + config::to_string(drv.kind()) +
                           " driver, not " + config::to_string(req.kind)));
  const bool blk = req.kind == config::DriverKind::kBlk;
  ChannelShape shape = blk ? blk_channel_shape() : net_channel_shape();
  // Every binding gets a fresh channel: memory a previous driver could have
  // scribbled on is never reused.
  auto fds = channel::create(shape.slots, shape.slot_size);
  if (!fds) return fail(fds.error());
  auto mapping = channel::Mapping::map(fds->mem.get(), shape.slots, shape.slot_size);
  if (!mapping) return fail(mapping.error());
  DriverConnection::AttachArgs args;
  args.slots = shape.slots;
  args.slot_size = shape.slot_size;
  args.fds = {fds->mem.get(), fds->req_kick.get(), fds->resp_kick.get()};
  if (blk) {
    if (!req.image) return fail(make_error("blk device without an image fd"));
    args.fds.push_back(req.image.get());
    args.read_only = req.blk.read_only;
    args.serial = req.blk.serial;
  } else {
    args.mac = req.net.mac;
  }
  struct Ours {
    channel::Mapping mapping;
    UniqueFd req_kick, resp_kick;
  };
  auto ours = std::make_shared<Ours>(
      Ours{std::move(mapping).value(), std::move(fds->req_kick), std::move(fds->resp_kick)});
  drv.attach(args, [ours, done = std::move(done)](Result<uint32_t> id) {
    if (!id) return done(id.error());
    done(ChannelGrant{*id, channel::HvEnd(std::move(ours->mapping), std::move(ours->req_kick),
                                          std::move(ours->resp_kick))});
  });
}

Result<BoundDevice> make_bound_device(const std::string& socket, const DeviceRequest& req,
                                      ChannelGrant grant, int owner_pid, DeviceSupervision sup) {
  BoundDevice b;
  b.device_id = grant.device_id;
  sup.owner = owner_pid;
  b.device = req.kind == config::DriverKind::kBlk
                 ? make_blk_device(socket, req.blk, std::move(grant.end), std::move(sup))
                 : make_net_device(socket, req.net, std::move(grant.end), std::move(sup));
  if (auto s = b.device->start(); !s) {
    b.device.reset();
    return s.error();
  }
  return b;
}

}  // namespace axl::hv
