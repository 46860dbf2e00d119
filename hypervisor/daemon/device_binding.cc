#include "hypervisor/daemon/device_binding.h"

#include "hypervisor/daemon/device_kinds.h"

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
  const DeviceKind& kind = device_kind(req.kind);
  const ChannelShape shape = kind.shape();
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
  if (auto s = kind.attach(req, args); !s) return fail(s.error());
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
                                      ChannelGrant grant, int owner_pid, DeviceSupervision sup,
                                      std::unique_ptr<vhost_user::SessionKeeper> keeper,
                                      std::optional<vhost_user::KeptSession> kept,
                                      std::pair<uid_t, gid_t> front_end) {
  BoundDevice b;
  b.device_id = grant.device_id;
  sup.owner = owner_pid;
  b.device = device_kind(req.kind).make(socket, req, std::move(grant.end), std::move(sup));
  b.device->set_front_end(front_end.first, front_end.second);
  if (keeper) b.device->set_keeper(std::move(keeper));
  auto s = kept ? b.device->resume(std::move(*kept)) : b.device->start();
  if (!s) {
    b.device.reset();
    return s.error();
  }
  return b;
}

}  // namespace axl::hv
