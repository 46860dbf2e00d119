// Binds one guest device to a driver domain: a fresh channel, the driver's
// attach answer, and the vhost-user device that serves QEMU on `socket`.
// Asking a driver never waits on the loop: attach_channel answers later.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/config.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/guest_device.h"

namespace axl::hv {

struct DeviceRequest {
  config::DriverKind kind = config::DriverKind::kBlk;
  UniqueFd image;  // blk: opened by the hypervisor, handed to the driver
  // blk: the image's backing chain (nearest first), read-only, and the format
  // of each of image + backing ("raw" or "qcow2"; empty: one raw image).
  std::vector<UniqueFd> backing;
  std::vector<std::string> formats;
  std::string aio = "auto";  // blk: the driver's I/O engine (config::DiskConfig::aio)
  BlkDeviceSpec blk;
  NetDeviceSpec net;
};

struct BoundDevice {
  uint32_t device_id = 0;  // the driver's id for it (for detach)
  std::unique_ptr<GuestDevice> device;
};

// A channel attached to a driver, not yet given to a device.
struct ChannelGrant {
  uint32_t device_id;
  channel::HvEnd end;
};
// Makes a fresh channel and sends it to the driver; `done` runs on the loop
// with the grant once the driver took it, or with the error.
void attach_channel(DriverConnection& drv, const DeviceRequest& req,
                    std::function<void(Result<ChannelGrant>)> done);

// The vhost-user device on `socket` over a granted channel, started.  On
// error no socket is left (the caller detaches the grant).
// `sup.owner` is set to `owner_pid` here.  With a `keeper` its session is
// kept for a successor; with `kept` it resumes a predecessor's session
// instead of listening afresh.
Result<BoundDevice> make_bound_device(const std::string& socket, const DeviceRequest& req,
                                      ChannelGrant grant, int owner_pid, DeviceSupervision sup,
                                      std::unique_ptr<vhost_user::SessionKeeper> keeper = nullptr,
                                      std::optional<vhost_user::KeptSession> kept = std::nullopt,
                                      std::pair<uid_t, gid_t> front_end = {0, 0});

}  // namespace axl::hv
