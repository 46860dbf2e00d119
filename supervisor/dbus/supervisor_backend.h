// ManagerBackend over the supervisor's own state: drivers come from the
// DriverManager; domains belong to the hypervisor daemon, so main supplies
// how to reach it (DomainOps) and an unset op answers "not available".
#pragma once
#include <functional>

#include "supervisor/dbus/manager_api.h"
#include "supervisor/driver_manager.h"

namespace axl::dbus {

// Each completes through its `done` on the loop (ManagerBackend's contract).
// The hypervisor decides create and destroy for `caller` (policy/control.h).
struct DomainOps {
  std::function<void(ManagerBackend::Done<std::vector<DomainRow>>)> list;
  std::function<void(const policy::Subject& caller, const std::string& config_path,
                     const std::string& vtpm_state, ManagerBackend::Done<std::string>)>
      create;
  std::function<void(const policy::Subject& caller, const std::string& name,
                     std::function<void(Status)>)>
      destroy;
};

class SupervisorBackend : public ManagerBackend {
 public:
  // `access`: the supervisor's decision point (kill, restart); the
  // hypervisor's decisions are counted in too, as it reports them
  // (hv_counted).
  SupervisorBackend(supervisor::DriverManager& drivers, DomainOps domains,
                    policy::DecisionPoint& access)
      : drivers_(drivers), domains_(std::move(domains)), access_(access) {}

  void list_domains(Done<std::vector<DomainRow>> done) override;
  void create_domain(const policy::Subject& caller, const std::string& config_path,
                     const std::string& vtpm_state, Done<std::string> done) override;
  void destroy_domain(const policy::Subject& caller, const std::string& name,
                      std::function<void(Status)> done) override;
  std::vector<DriverRow> list_drivers() override;
  Status kill_driver(const policy::Subject& caller, const std::string& name,
                     const std::string& signal) override;
  Status restart_driver(const policy::Subject& caller, const std::string& name) override;
  std::vector<OutageRow> outages(const std::string& driver) override;
  uint64_t policy_allowed() override { return access_.allowed() + hv_allowed_; }
  uint64_t policy_denied() override { return access_.denied() + hv_denied_; }
  void hv_counted(uint64_t allowed, uint64_t denied) {
    hv_allowed_ = allowed;
    hv_denied_ = denied;
  }

 private:
  Status decide(const policy::Subject& caller, policy::Permission p, const std::string& driver);

  supervisor::DriverManager& drivers_;
  DomainOps domains_;
  policy::DecisionPoint& access_;
  uint64_t hv_allowed_ = 0, hv_denied_ = 0;
};

// Microseconds from failure until the new instance served its first
// request; 0 while the hypervisor has not reported that yet.
uint64_t last_outage_us(const supervisor::DriverDomain& d);

}  // namespace axl::dbus
