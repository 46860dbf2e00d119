// The supervisor's side of its control socket (common/schema/control.capnp):
// what `axl` and the hypervisor ask of it, answered from the driver and vTPM
// managers and rendered from one view of them (snapshot.h).  `dbus_api` may
// hold nothing (no bus); it is read at each request.
#pragma once
#include <memory>

#include "common/asio.h"
#include "common/control_server.h"
#include "supervisor/dbus/manager_api.h"
#include "supervisor/driver_manager.h"
#include "supervisor/vtpm_manager.h"

namespace axl::supervisor {

ControlServer::AsyncHandler control_api(boost::asio::io_context& io, DriverManager& drivers,
                                        VtpmManager& vtpms,
                                        const std::unique_ptr<dbus::ManagerApi>& dbus_api);

}  // namespace axl::supervisor
