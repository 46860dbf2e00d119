// The supervisor's side of its control socket (common/schema/control.capnp):
// what `axl` and the hypervisor ask of it, answered from the driver and vTPM
// managers and rendered from one view of them (snapshot.h).  `dbus_api` may
// hold nothing (no bus); it is read at each request.
#pragma once
#include <memory>

#include "common/asio.h"
#include "common/control_server.h"
#include "policy/access.h"
#include "supervisor/dbus/manager_api.h"
#include "supervisor/driver_manager.h"
#include "supervisor/vtpm_manager.h"

namespace axl::supervisor {

// `access`: the policy every operation on a driver or a vTPM asks first;
// `host`: the host config as written (the policy's driver settings go over it);
// `hv_counted`: the hypervisor's decisions so far, as it reports them.
ControlServer::AsyncHandler control_api(boost::asio::io_context& io, DriverManager& drivers,
                                        VtpmManager& vtpms, policy::DecisionPoint& access,
                                        const config::HostConfig& host,
                                        const std::string& state_dir,
                                        const std::unique_ptr<dbus::ManagerApi>& dbus_api,
                                        std::function<void(uint64_t, uint64_t)> hv_counted);

// The policy's settings for a driver over its host config's (restart
// settings and limits; docs/policy.md).
void apply_policy(config::DriverConfig& cfg, const config::DriverConfig& host_cfg,
                  const policy::Policy& p);
// Whether every failover the policy names is a driver of this host of the
// same kind (docs/policy.md, "Failover").
Status failovers_fit(const policy::Policy& p, const config::HostConfig& host);

}  // namespace axl::supervisor
