// Glue between the GuestDevice contract (hypervisor/guest_device.h) and the
// pieces behind it: a device's logic (a vhost-user Backend), its DMA context
// and the vhost-user server thread.  The same for every device kind, so the
// domain engine never branches on device type.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "hypervisor/guest_device.h"
#include "hypervisor/io/vhost_user/backend.h"
#include "hypervisor/io/vhost_user/server.h"
#include "iommu/dma.h"

namespace axl::hv::io {

// Device logic: the vhost-user backend plus counters readable from any thread.
class DeviceLogic : public vhost_user::Backend {
 public:
  // Called on the device thread with the cause whenever the device
  // quarantines its channel.  Set before the device thread starts.
  using QuarantineSink = std::function<void(const std::string& cause)>;
  void set_quarantine_sink(QuarantineSink s) { sink_ = std::move(s); }
  // Called on the device thread once per rebind, with the first completion
  // of the new channel (CLOCK_MONOTONIC ns).  Set before the thread starts.
  using ServedSink = std::function<void(uint64_t rebind_ns, uint64_t served_ns)>;
  void set_served_sink(ServedSink s) { served_sink_ = std::move(s); }

  virtual DeviceStats stats() const = 0;
  // Moves the device onto a fresh channel (a restarted driver domain) and
  // replays every request still in flight, in the order it was first sent
  // (docs/architecture.md "Data path").  Runs on the device
  // thread.  The new channel must have the same shape as the old one.
  virtual Status rebind(channel::HvEnd chan) = 0;

 protected:
  void report_quarantine(const std::string& cause) {
    if (sink_) sink_(cause);
  }
  void report_first_served(uint64_t rebind_ns, uint64_t served_ns) {
    if (served_sink_) served_sink_(rebind_ns, served_ns);
  }

 private:
  QuarantineSink sink_;
  ServedSink served_sink_;
};

class HostedDevice final : public GuestDevice {
 public:
  HostedDevice(std::string socket_path, std::unique_ptr<iommu::DmaContext> dma,
               std::unique_ptr<DeviceLogic> logic, DeviceSupervision sup = {})
      : dma_(std::move(dma)),
        logic_(std::move(logic)),
        owner_(sup.owner),
        on_quarantine_(std::move(sup.on_quarantine)),
        on_first_served_(std::move(sup.on_first_served)),
        server_(std::move(socket_path), *logic_, *dma_) {
    server_.set_poll_us(sup.poll_us);
    // owner_ is read and written on the device thread only (rebind runs there).
    logic_->set_quarantine_sink([this](const std::string& cause) {
      if (on_quarantine_) on_quarantine_(cause, owner_);
    });
    logic_->set_served_sink([this](uint64_t rebind_ns, uint64_t served_ns) {
      if (on_first_served_) on_first_served_(rebind_ns, served_ns, owner_);
    });
  }
  Status start() override { return server_.start(); }
  void set_front_end(uid_t uid, gid_t gid) override { server_.set_front_end(uid, gid); }
  void set_keeper(std::unique_ptr<vhost_user::SessionKeeper> keeper) override {
    keeper_ = std::move(keeper);
    server_.set_keeper(keeper_.get());
  }
  Status resume(vhost_user::KeptSession kept) override { return server_.resume(std::move(kept)); }
  // Thread-safe: runs DeviceLogic::rebind on the device thread and waits.
  Status rebind(channel::HvEnd chan, int owner) override {
    std::optional<channel::HvEnd> holder(std::move(chan));
    Status result;
    auto st = server_.run_on_thread([&] {
      result = logic_->rebind(std::move(*holder));
      if (result) owner_ = owner;
    });
    if (!st) return st;
    return result;
  }
  DeviceStats stats() const override {
    DeviceStats s = logic_->stats();
    s.iommu_faults = dma_->faults();
    auto t = server_.iotlb_stats();
    s.iotlb_updates = t.updates;
    s.iotlb_invalidates = t.invalidates;
    s.iotlb_misses = t.misses;
    return s;
  }

 private:
  // Destruction runs bottom-up: the server thread stops before the logic
  // and DMA context it uses go away.
  std::unique_ptr<iommu::DmaContext> dma_;
  std::unique_ptr<DeviceLogic> logic_;
  int owner_;
  std::function<void(const std::string&, int)> on_quarantine_;
  std::function<void(uint64_t, uint64_t, int)> on_first_served_;
  std::unique_ptr<vhost_user::SessionKeeper> keeper_;  // outlives the server, which uses it
  vhost_user::Server server_;
};

// Rebinds a device made by make_blk_device / make_net_device to a fresh
// channel.  (A candidate for a virtual on GuestDevice itself.)
inline Status rebind(GuestDevice& dev, channel::HvEnd chan, int owner = 0) {
  return dev.rebind(std::move(chan), owner);
}

}  // namespace axl::hv::io
