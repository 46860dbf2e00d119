// Every device kind the hypervisor serves, described in one table.  Adding a
// kind means its virtio logic in a folder under hypervisor/io/ (over
// io::DriverPort), a driver under driverdom/, and one row here: nothing else
// in the hypervisor branches on the kind.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "hypervisor/daemon/device_binding.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/daemon/qemu_cmdline.h"
#include "hypervisor/guest_device.h"

namespace axl::hv {

struct DeviceKind {
  config::DriverKind kind;
  const char* name;
  // The channel's geometry: requests in flight, bytes one request carries.
  ChannelShape (*shape)();
  // The kind's part of an attach: its fields of the message to the driver
  // and any fds besides the channel's.  Error: the request cannot be served.
  Status (*attach)(const DeviceRequest& req, DriverConnection::AttachArgs& args);
  // QEMU's arguments for the guest-visible device on vhost-user chardev
  // `chardev`; `id` is unique per domain, `props` are extra -device
  // properties (the vIOMMU's).
  void (*qemu)(const QemuDevice& d, const std::string& chardev, const std::string& id,
               const std::string& props, std::vector<std::string>& argv);
  // The vhost-user device that serves QEMU on `socket` over `end`.
  std::unique_ptr<GuestDevice> (*make)(std::string socket, const DeviceRequest& req,
                                       channel::HvEnd end, DeviceSupervision sup);
};

const DeviceKind& device_kind(config::DriverKind k);

}  // namespace axl::hv
