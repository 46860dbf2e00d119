// The domain table and the QEMU engine: creates a domain (channels, driver
// attachments, vhost-user devices, QEMU), watches QEMU through a pidfd and
// tears everything down again.  A failed create leaves nothing behind.
#pragma once
#include "common/asio.h"
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/process.h"
#include "hypervisor/daemon/device_binding.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/guest_device.h"

namespace axl::hv {

enum class DomainState { kRunning, kShutoff };
const char* to_string(DomainState s);

struct DeviceBinding {
  std::string driver;
  DeviceRequest request;  // kept to attach a restarted driver (image fd included)
  BoundDevice bound;
  std::optional<ChannelGrant> standby;  // pre-attached to the driver's warm standby
};

struct Domain {
  config::GuestConfig cfg;
  uint32_t id = 0;
  DomainState state = DomainState::kRunning;
  std::string dir;  // state-dir/dom/NAME
  std::string accel;
  proc::Child qemu;
  int exit_status = 0;
  std::vector<DeviceBinding> devices;
  bool vtpm = false;  // the supervisor runs a vTPM for it ([vtpm] enabled)
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch;

  std::string console_log() const { return dir + "/console.log"; }
  std::string console_socket() const { return dir + "/console.sock"; }
};

// The engine's view of the drivers' supervision: each driver's progress
// deadline (host config io_timeout_ms) and where a quarantine is reported.
// report() runs on the engine's io_context thread and must not block.
struct DriverSupervision {
  std::function<uint32_t(const std::string& driver)> io_timeout_ms;
  std::function<void(const std::string& driver, int pid, const std::string& cause)> report;
};

// The vTPM domains live under the supervisor; the engine asks it to start
// one (returning once its control socket listens) and to stop it again.
struct VtpmControl {
  std::function<Status(const std::string& domain, bool measure_log, uint32_t command_port)> start;
  std::function<Status(const std::string& domain)> stop;
};

class DomainEngine {
 public:
  DomainEngine(boost::asio::io_context& io, std::string state_dir, std::string guest_dir,
               DriverRegistry& drivers, DriverSupervision supervision = {},
               VtpmControl vtpm = {});
  ~DomainEngine();

  Result<const Domain*> create(const std::string& config_toml, const std::string& base_dir);
  Status destroy(const std::string& name);
  void destroy_all();
  const Domain* find(const std::string& name) const;
  // A driver domain (re)connected: move every device it serves to it.
  void driver_connected(DriverConnection& drv);
  // A warm standby connected: pre-attach a channel for every device its
  // driver serves.  On promotion, switch the devices to those channels.
  void standby_connected(DriverConnection& standby);
  void standby_promoted(DriverConnection& drv);
  // Over the devices a driver serves: the latest rebind and the first
  // completion after it (CLOCK_MONOTONIC ns; 0 when none).
  std::pair<uint64_t, uint64_t> service_times(const std::string& driver) const;
  std::vector<const Domain*> list() const;
  // Called on the loop for every state change, whoever caused it: "running"
  // once QEMU started, "shutoff" when it exited by itself, "destroyed".
  // Must not block.
  void on_state_change(std::function<void(const std::string& name, const std::string& state)> f) {
    on_state_ = std::move(f);
  }

 private:
  void state_changed(const std::string& name, const char* state) {
    if (on_state_) on_state_(name, state);
  }
  Status attach_devices(Domain& d, std::vector<struct QemuDevice>& qdevs);
  void release_devices(Domain& d);
  void on_qemu_exit(Domain* d);
  void stop_vtpm(Domain& d);

  DeviceSupervision supervision_for(const std::string& driver);

  boost::asio::io_context& io_;
  std::string state_dir_, guest_dir_;
  DriverRegistry& drivers_;
  DriverSupervision supervision_;
  VtpmControl vtpm_;
  std::map<std::string, std::unique_ptr<Domain>> domains_;
  uint32_t next_id_ = 1;
  std::function<void(const std::string&, const std::string&)> on_state_;
};

}  // namespace axl::hv
