// axolotl-driverdom: one driver domain process (one driver instance).
//
//   axolotl-driverdom --name NAME --kind net|blk --hv-socket PATH [--tap-fd N] ...
//
// main() only wires the parts: options, fd hygiene, the driver of the asked
// kind, the runtime that speaks to the hypervisor, then the sandbox: the
// supervisor spawned it in its namespaces, it confines itself here once every
// fd it needs is in hand, before it says hello.
#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <memory>
#include <vector>

#include "common/heartbeat.h"
#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"
#include "driverdom/blk/blk_driver.h"
#include "driverdom/net/net_driver.h"
#include "driverdom/runtime/fault_hooks.h"
#include "driverdom/runtime/fd_hygiene.h"
#include "driverdom/runtime/options.h"
#include "driverdom/runtime/runtime.h"
#include "driverdom/runtime/sandbox.h"

namespace {

// A parked spare waits here, set up and confined, until the supervisor makes
// it the active instance (supervisor.capnp Heartbeat.start).  It answers no
// heartbeat meanwhile: nobody watches a spare's loop.  Errc::kClosed: the
// supervisor let it go unused.
axl::Result<axl::UniqueFd> await_start(int health, bool sandboxed, const std::string& hv_socket) {
  using namespace axl;
  for (;;) {
    auto m = wire::recv_timeout(health, -1);
    if (!m && m.error().code == Errc::kWouldBlock) continue;
    if (!m) return m.error();
    if (m->root<schema::Heartbeat>().which() != schema::Heartbeat::START) continue;
    if (!sandboxed) return wire::connect(hv_socket);
    if (m->fds().size() != 1) return make_error("start without exactly one hypervisor connection");
    UniqueFd c = std::move(m->fds()[0]);
    return c;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace axl;
  using namespace axl::driverdom;
  auto opts = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  if (!opts) {
    fprintf(stderr, "axolotl-driverdom: %s\n%s\n", opts.error().message.c_str(), kUsage);
    return 2;
  }
  log::set_component("driverdom[" + opts->name + "]");

  std::vector<int> keep;
  if (opts->tap_fd) keep.push_back(*opts->tap_fd);
  if (opts->supervisor_fd) keep.push_back(*opts->supervisor_fd);
  if (opts->hv_fd) keep.push_back(*opts->hv_fd);
  if (auto s = close_inherited_fds(keep); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  UniqueFd tap;
  if (opts->tap_fd) {
    tap.reset(*opts->tap_fd);
    // Inherited without CLOEXEC on purpose; nothing this process starts may get it.
    if (::fcntl(tap.get(), F_SETFD, FD_CLOEXEC) < 0) {
      AXL_ERROR("--tap-fd %d is not an open fd", *opts->tap_fd);
      return 1;
    }
  }

  UniqueFd health;
  if (opts->supervisor_fd) {
    health.reset(*opts->supervisor_fd);
    if (::fcntl(health.get(), F_SETFD, FD_CLOEXEC) < 0 ||
        ::fcntl(health.get(), F_SETFL, O_NONBLOCK) < 0) {
      AXL_ERROR("--supervisor-fd %d is not an open fd", *opts->supervisor_fd);
      return 1;
    }
  }

  // Confined drivers get the connection made for them (they reach no path);
  // a parked spare gets it when it is started.
  Result<UniqueFd> control = make_error("no hypervisor connection");
  if (opts->hv_fd) {
    UniqueFd c(*opts->hv_fd);
    if (::fcntl(c.get(), F_SETFD, FD_CLOEXEC) < 0) {
      AXL_ERROR("--hv-fd %d is not an open fd", *opts->hv_fd);
      return 1;
    }
    control = std::move(c);
  } else if (!opts->parked) {
    control = wire::connect(opts->hv_socket);
  }
  if (!control && !opts->parked) {
    AXL_ERROR("%s", control.error().message.c_str());
    return 1;
  }

  boost::asio::io_context io;
  // Declared before the driver: its devices deregister from it on the way out.
  DataPathFaults data_faults(&io);
  DataPathFaults* data_faults_ptr = opts->fault_injection ? &data_faults : nullptr;
  std::unique_ptr<Driver> driver;
  if (opts->kind == Kind::kBlk) {
    // The I/O engine is made here, before the sandbox forbids io_uring_setup.
    auto ring = blk::IoRing::create();
    if (!ring)
      AXL_WARN("blk: no I/O ring (%s); every request is served in place",
               ring.error().message.c_str());
    driver = std::make_unique<blk::BlkDriver>(io, data_faults_ptr,
                                              ring ? std::move(ring).value() : nullptr);
  } else {
    auto net = std::make_unique<net::NetDriver>(io, std::move(tap), data_faults_ptr);
    // A standby and a parked spare hold the TAP unread: the first request
    // they get (their promotion) starts the reading.
    if (auto s = net->start(opts->standby || opts->parked ? net::NetDriver::Mode::kStandby
                                                          : net::NetDriver::Mode::kActive);
        !s) {
      AXL_ERROR("%s", s.error().message.c_str());
      return 1;
    }
    driver = std::move(net);
  }
  driver->set_poll_us(opts->poll_us);
  FaultHooks faults(io, opts->fault_injection, data_faults_ptr);
  AttachFault attach_fault;
  faults.set_attach_fault(&attach_fault);
  if (auto* b = dynamic_cast<blk::BlkDriver*>(driver.get()); b && b->ring())
    faults.set_uring_escape(
        [b](const std::string& state_dir) { b->try_ring_escape(state_dir + "/host.toml"); });
  if (opts->fault_injection) {
    std::string dir = opts->hv_socket.substr(0, opts->hv_socket.rfind('/'));
    faults.set_escape_targets({opts->hv_pid.value_or(0), opts->hv_socket.empty() ? "" : dir});
  }
  std::unique_ptr<HeartbeatResponder> heartbeat;
  const int health_fd = health.get();
  if (health)
    heartbeat = std::make_unique<HeartbeatResponder>(
        io, std::move(health),
        // The data path never depends on the supervisor: without it this
        // domain serves on, unwatched, until a successor adopts it (the fd
        // store keeps the channel open across its crash, so this is a
        // supervisor that left without one: docs/architecture.md, "No
        // single point of failure").
        [] { AXL_WARN("no supervisor watches this domain any more; serving on"); },
        [&faults](const std::string& f, const FaultTrigger& t) {
          if (auto s = faults.run(f, t); !s)
            AXL_WARN("fault '%s' refused: %s", f.c_str(), s.error().message.c_str());
        });
  const std::string fault_at_start = opts->fault_at_start;
  const SandboxPolicy policy{opts->kind, opts->fault_injection};
  const bool sandbox = opts->sandbox, parked = opts->parked;
  const std::string hv_socket = opts->hv_socket;
  Runtime runtime(io, std::move(opts).value(), control ? std::move(control).value() : UniqueFd(),
                  *driver);
  runtime.set_attach_fault(&attach_fault);
  // Everything it will ever use is in hand now (a parked spare's hypervisor
  // connection comes over the health channel, already open): confine before
  // serving.
  if (sandbox) {
    if (auto s = enter_sandbox(policy); !s) {
      AXL_ERROR("sandbox: %s", s.error().message.c_str());
      return 1;
    }
    AXL_INFO("sandboxed: empty root, no capabilities, no_new_privs, seccomp (%s)",
             kind_name(policy.kind));
  }
  if (parked) {
    auto c = await_start(health_fd, sandbox, hv_socket);
    if (!c) {
      AXL_ERROR("parked: %s", c.error().message.c_str());
      return c.error().code == Errc::kClosed ? 0 : 1;
    }
    AXL_INFO("started: now the active instance");
    runtime.set_control(std::move(c).value());
  }
  if (!fault_at_start.empty()) {
    if (auto s = faults.run(fault_at_start); !s) {
      AXL_ERROR("%s", s.error().message.c_str());
      return 1;
    }
  }
  return runtime.run();
}
