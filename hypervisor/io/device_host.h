// Glue between the GuestDevice contract (hypervisor/guest_device.h) and the
// pieces behind it: a device's logic (a vhost-user Backend), its DMA context
// and the vhost-user server thread.  The same for every device kind, so the
// domain engine never branches on device type.
#pragma once
#include <memory>
#include <string>

#include "hypervisor/guest_device.h"
#include "hypervisor/io/vhost_user/backend.h"
#include "hypervisor/io/vhost_user/server.h"
#include "iommu/dma.h"

namespace axl::hv::io {

// Device logic: the vhost-user backend plus counters readable from any thread.
class DeviceLogic : public vhost_user::Backend {
 public:
  virtual DeviceStats stats() const = 0;
};

class HostedDevice final : public GuestDevice {
 public:
  HostedDevice(std::string socket_path, std::unique_ptr<iommu::DmaContext> dma,
               std::unique_ptr<DeviceLogic> logic)
      : dma_(std::move(dma)),
        logic_(std::move(logic)),
        server_(std::move(socket_path), *logic_, *dma_) {}
  Status start() override { return server_.start(); }
  DeviceStats stats() const override {
    DeviceStats s = logic_->stats();
    s.iommu_faults = dma_->faults();
    return s;
  }

 private:
  // Destruction runs bottom-up: the server thread stops before the logic
  // and DMA context it uses go away.
  std::unique_ptr<iommu::DmaContext> dma_;
  std::unique_ptr<DeviceLogic> logic_;
  vhost_user::Server server_;
};

}  // namespace axl::hv::io
