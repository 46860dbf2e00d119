// Binds one guest device to a driver domain: a fresh channel, the driver's
// attach answer, and the vhost-user device that serves QEMU on `socket`.
#pragma once
#include <memory>
#include <string>

#include "common/config.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/guest_device.h"

namespace axl::hv {

struct DeviceRequest {
  config::DriverKind kind = config::DriverKind::kBlk;
  UniqueFd image;      // blk: opened by the hypervisor, handed to the driver
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
Result<ChannelGrant> attach_channel(DriverConnection& drv, const DeviceRequest& req);

// On error nothing stays attached and no socket is left.
// `sup.owner` is set to the driver's pid here.
Result<BoundDevice> bind_device(DriverConnection& drv, const std::string& socket,
                                const DeviceRequest& req, DeviceSupervision sup = {});
// A restarted driver domain: attach a fresh channel to it and move the live
// device there (its in-flight requests are replayed).
Status rebind_device(DriverConnection& drv, const DeviceRequest& req, BoundDevice& b);

}  // namespace axl::hv
