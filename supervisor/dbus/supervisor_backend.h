// ManagerBackend over the supervisor's own state: drivers come from the
// DriverManager; domains belong to the hypervisor daemon, so main supplies
// how to reach it (DomainOps) and an unset op answers "not available".
#pragma once
#include <functional>

#include "supervisor/dbus/manager_api.h"
#include "supervisor/driver_manager.h"

namespace axl::dbus {

// Each completes through its `done` on the loop (ManagerBackend's contract).
struct DomainOps {
  std::function<void(ManagerBackend::Done<std::vector<DomainRow>>)> list;
  std::function<void(const std::string& config_path, ManagerBackend::Done<std::string>)> create;
  std::function<void(const std::string& name, std::function<void(Status)>)> destroy;
};

class SupervisorBackend : public ManagerBackend {
 public:
  SupervisorBackend(supervisor::DriverManager& drivers, DomainOps domains)
      : drivers_(drivers), domains_(std::move(domains)) {}

  void list_domains(Done<std::vector<DomainRow>> done) override;
  void create_domain(const std::string& config_path, Done<std::string> done) override;
  void destroy_domain(const std::string& name, std::function<void(Status)> done) override;
  std::vector<DriverRow> list_drivers() override;
  Status kill_driver(const std::string& name, const std::string& signal) override;
  Status restart_driver(const std::string& name) override;
  std::vector<OutageRow> outages(const std::string& driver) override;

 private:
  supervisor::DriverManager& drivers_;
  DomainOps domains_;
};

// Microseconds from failure until the new instance served its first
// request; 0 while the hypervisor has not reported that yet.
uint64_t last_outage_us(const supervisor::DriverDomain& d);

}  // namespace axl::dbus
