// The GuestDevice factories of hypervisor/guest_device.h.
#include "hypervisor/guest_device.h"

#include "hypervisor/io/blk/device.h"
#include "hypervisor/io/device_host.h"
#include "hypervisor/io/net/device.h"

namespace axl::hv {

ChannelShape blk_channel_shape() { return {io::blk::kSlots, io::blk::kSlotSize}; }
ChannelShape net_channel_shape() { return {io::net::kSlots, io::net::kSlotSize}; }

std::unique_ptr<GuestDevice> make_blk_device(std::string socket_path, BlkDeviceSpec spec,
                                             channel::HvEnd chan, DeviceSupervision sup) {
  auto logic =
      std::make_unique<io::blk::BlkDevice>(std::move(spec), std::move(chan), sup.io_timeout_ms);
  return std::make_unique<io::HostedDevice>(std::move(socket_path),
                                            std::make_unique<iommu::DmaContext>(), std::move(logic),
                                            std::move(sup));
}

std::unique_ptr<GuestDevice> make_net_device(std::string socket_path, NetDeviceSpec spec,
                                             channel::HvEnd chan, DeviceSupervision sup) {
  auto logic = std::make_unique<io::net::NetDevice>(spec, std::move(chan), sup.io_timeout_ms);
  return std::make_unique<io::HostedDevice>(std::move(socket_path),
                                            std::make_unique<iommu::DmaContext>(), std::move(logic),
                                            std::move(sup));
}

}  // namespace axl::hv
