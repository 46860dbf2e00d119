// axolotl-supervisor: the privileged "dom0" toolstack daemon.  Spawns and
// watches the driver domains named by the host config and holds their device
// fds (TAPs).  Wiring happens here.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <CLI/CLI.hpp>

#include <set>
#include <string>
#include "common/asio.h"

#include "common/config.h"
#include "common/control_requests.h"
#include "common/control_server.h"
#include "common/fd_store.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/process.h"
#include "policy/control.h"
#include "supervisor/cgroup/cgroup.h"
#include "supervisor/cgroup_mounts.h"
#include "supervisor/control_api.h"
#include "supervisor/dbus/manager_api.h"
#include "supervisor/dbus/supervisor_backend.h"
#include "supervisor/driver_manager.h"
#include "supervisor/journal.h"
#include "supervisor/vtpm_manager.h"

namespace {

// A guest config named over D-Bus is read by this (root) daemon for its
// caller: only a regular file the caller could read itself, so a config
// path is never a way to read what the caller may not.
axl::Result<std::string> read_as(const axl::policy::Subject& caller, const std::string& path) {
  axl::UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!f || ::fstat(f.get(), &st) != 0)
    return axl::make_error("cannot open " + path + ": " + strerror(errno));
  if (!S_ISREG(st.st_mode)) return axl::make_error(path + " is not a regular file");
  const bool in_group =
      std::find(caller.gids.begin(), caller.gids.end(), int(st.st_gid)) != caller.gids.end();
  const bool readable = caller.uid == 0 ||
                        (int(st.st_uid) == caller.uid && (st.st_mode & S_IRUSR)) ||
                        (in_group && (st.st_mode & S_IRGRP)) || (st.st_mode & S_IROTH);
  if (!readable)
    return axl::make_error("cannot open " + path + ": the caller (uid " +
                           std::to_string(caller.uid) + ") may not read it");
  if (st.st_size > (1 << 20)) return axl::make_error(path + ": a guest config is at most 1 MiB");
  std::string text(size_t(st.st_size), '\0');
  if (::pread(f.get(), text.data(), text.size(), 0) != ssize_t(text.size()))
    return axl::make_error("cannot read " + path + ": " + strerror(errno));
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::string state_dir, config_path, dbus_address;
  // D-Bus: an address or the system bus when asked for (failing to get it
  // is fatal); otherwise the system bus when the host has one (best effort:
  // another host may own org.axolotl there); --no-dbus for none.
  bool dbus_system = false, dbus_none = false;
  CLI::App app{"axolotl-supervisor: health checks and restarts driver and vTPM domains"};
  app.add_option("--state-dir", state_dir, "the host's state dir")->required();
  app.add_option("--config", config_path, "the host config (TOML)")->required();
  auto* addr = app.add_option("--dbus-address", dbus_address, "serve the D-Bus API on this bus");
  auto* sys = app.add_flag("--dbus-system", dbus_system, "serve it on the system bus");
  app.add_flag("--no-dbus", dbus_none, "serve no D-Bus API")->excludes(addr)->excludes(sys);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    fprintf(stderr, "axolotl-supervisor: %s\n", e.what());
    return 2;
  }
  axl::log::set_component("axolotl-supervisor");
  signal(SIGPIPE, SIG_IGN);
  // Before anything is spawned: the fds a predecessor kept, and the store
  // (common/fd_store.h); no domain inherits either.
  axl::FdStore fd_store = axl::FdStore::from_environment();
  if (auto s = axl::check_state_dir(state_dir); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  auto text = axl::config::read_file(config_path);
  if (!text) {
    AXL_ERROR("%s", text.error().message.c_str());
    return 1;
  }
  auto host = axl::config::parse_host(*text, config_path);
  if (!host) {
    AXL_ERROR("%s", host.error().message.c_str());
    return 1;
  }
  // The access policy (STATE/policy.toml): it decides every operation on a
  // driver or a vTPM, and its driver settings go over the host config's.
  axl::policy::DecisionPoint policy_dp("supervisor");
  if (auto s = axl::policy::load_policy(policy_dp, state_dir); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  const axl::config::HostConfig host_as_written = *host;
  if (auto s = axl::supervisor::failovers_fit(policy_dp.policy(), host_as_written); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  for (auto& d : host->drivers)
    axl::supervisor::apply_policy(d, *host_as_written.find_driver(d.name), policy_dp.policy());

  boost::asio::io_context io;
  const std::string hv_control = state_dir + "/hv.sock";
  // The hypervisor sees completions; ask it when a restarted driver first
  // served.  Asked without waiting: the answer comes back on the loop.
  axl::control::HypervisorClient hv(io, hv_control);
  auto service_times = [&](const std::string& driver,
                           std::function<void(uint64_t, uint64_t)> done) {
    hv.list_drivers(1000, [driver, done](axl::Result<axl::control::ControlReply> r) {
      if (r)
        for (auto d : r->get().getDrivers())
          if (d.getName() == driver) return done(d.getReboundNs(), d.getFirstServedNs());
      done(0, 0);
    });
  };
  // Resource limits for driver domains; without usable cgroups drivers run
  // unlimited, and the supervisor says so.
  std::unique_ptr<axl::cgroup::Manager> cgroups;
  // One prefix per state dir, the same for every supervisor of this host:
  // a successor adopts its predecessor's groups (supervisor/journal.h).
  const std::string prefix = axl::supervisor::cgroup_prefix(state_dir);
  auto m = axl::cgroup::Manager::detect(prefix);
  if (!m && axl::supervisor::mount_cgroups_privately(state_dir + "/cgroup"))
    m = axl::cgroup::Manager::detect(prefix);
  if (m) {
    cgroups = std::move(m).value();
    AXL_INFO("driver resource limits through %s", cgroups->describe().c_str());
  } else {
    AXL_WARN("driver domains run without resource limits: %s", m.error().message.c_str());
  }
  std::unique_ptr<axl::dbus::ManagerApi> dbus_api;  // outlives `events`' users below
  axl::supervisor::Events events;
  events.failed = [&](const axl::supervisor::DriverDomain& d) {
    // Given up: its devices move to the failover the policy names, if any.
    if (const std::string to = policy_dp.policy().driver(d.cfg.name).failover; !to.empty()) {
      const std::string from = d.cfg.name;
      hv.call(axl::control::hv::fail_over(from, to), 10000,
              [from, to](axl::Result<axl::control::ControlReply> r) {
                if (r)
                  AXL_INFO("driver %s given up: its devices fail over to %s", from.c_str(),
                           to.c_str());
                else
                  AXL_ERROR("driver %s given up; failover to %s: %s", from.c_str(), to.c_str(),
                            r.error().message.c_str());
              });
    }
    if (!dbus_api) return;
    dbus_api->emit_driver_failed(d.cfg.name, d.last_failure);
    dbus_api->drivers_changed();
  };
  events.restarted = [&](const axl::supervisor::DriverDomain& d) {
    if (!dbus_api) return;
    dbus_api->emit_driver_restarted(d.cfg.name, d.restarts, axl::dbus::last_outage_us(d));
    dbus_api->drivers_changed();
  };
  axl::supervisor::DriverManager drivers(io, axl::proc::exe_dir() + "/axolotl-driverdom",
                                         state_dir + "/drivers.sock", state_dir, service_times,
                                         events, cgroups.get());
  axl::supervisor::Journal journal(state_dir + "/instances", fd_store);
  drivers.set_journal(&journal);
  drivers.set_promote([&](const std::string& driver, std::function<void(axl::Status)> done) {
    hv.promote_standby(driver, 1000, [done](axl::Result<axl::control::ControlReply> r) {
      done(r ? axl::Status() : axl::Status(r.error()));
    });
  });
  axl::supervisor::VtpmManager vtpms(io, axl::proc::exe_dir() + "/axolotl-vtpm", state_dir,
                                     cgroups.get());
  vtpms.set_journal(&journal);
  vtpms.set_fault_injection(host->vtpm_fault_injection);
  axl::dbus::SupervisorBackend* backend = nullptr;  // set below, before the loop runs
  axl::ControlServer control(
      io, axl::supervisor::control_api(io, drivers, vtpms, policy_dp, host_as_written, state_dir,
                                       dbus_api, [&](uint64_t allowed, uint64_t denied) {
                                         if (backend) backend->hv_counted(allowed, denied);
                                       }));
  // The management API: on the bus given, or the system bus when asked for;
  // a host without a bus runs without it.
  // Domain requests from D-Bus go to the hypervisor and are answered when it
  // answers (a create: once the domain runs); the loop serves on meanwhile.
  constexpr int kDomainCallMs = 120000;
  axl::dbus::DomainOps domain_ops;
  domain_ops.list = [&](axl::dbus::ManagerBackend::Done<std::vector<axl::dbus::DomainRow>> done) {
    hv.list(5000, [done](axl::Result<axl::control::ControlReply> r) {
      if (!r) return done(r.error());
      std::vector<axl::dbus::DomainRow> rows;
      for (auto d : r->get().getDomains()) rows.push_back({d.getName(), d.getId(), d.getState()});
      done(std::move(rows));
    });
  };
  domain_ops.create = [&](const axl::policy::Subject& caller, const std::string& path,
                          const std::string& vtpm_state,
                          axl::dbus::ManagerBackend::Done<std::string> done) {
    // Read for the caller: only a file it could read itself.
    auto text = read_as(caller, path);
    if (!text) return done(text.error());
    std::string base = path.rfind('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    auto req = [create = axl::control::hv::create(*text, base, vtpm_state),
                caller](axl::schema::ControlRequest::Builder q) {
      create(q);
      axl::policy::set_caller(q, caller);
    };
    // DomainStateChanged comes from the hypervisor, as for every create.
    hv.call(req, kDomainCallMs, [done](axl::Result<axl::control::ControlReply> r) {
      if (!r) return done(r.error());
      if (r->get().getDomains().size() != 1)
        return done(
            axl::make_error(axl::Errc::kMalformed, "the hypervisor's reply names no domain"));
      done(std::string(r->get().getDomains()[0].getName()));
    });
  };
  domain_ops.destroy = [&](const axl::policy::Subject& caller, const std::string& name,
                           std::function<void(axl::Status)> done) {
    auto req = [destroy = axl::control::hv::destroy(name),
                caller](axl::schema::ControlRequest::Builder q) {
      destroy(q);
      axl::policy::set_caller(q, caller);
    };
    hv.call(req, kDomainCallMs, [done](axl::Result<axl::control::ControlReply> r) {
      done(r ? axl::Status() : axl::Status(r.error()));  // the signal comes from the hypervisor
    });
  };
  axl::dbus::SupervisorBackend dbus_backend(drivers, domain_ops, policy_dp);
  backend = &dbus_backend;
  const bool dbus_required = !dbus_address.empty() || dbus_system;
  const char* sys_env = getenv("DBUS_SYSTEM_BUS_ADDRESS");
  const bool dbus_auto =
      !dbus_required && !dbus_none &&
      ((sys_env && *sys_env) || access("/run/dbus/system_bus_socket", F_OK) == 0);
  if (dbus_required || dbus_auto) {
    if (auto api = axl::dbus::ManagerApi::start(io, dbus_address, dbus_backend); api) {
      dbus_api = std::move(api).value();
      AXL_INFO("D-Bus API org.axolotl.Manager1 on %s",
               dbus_address.empty() ? "the system bus" : dbus_address.c_str());
    } else if (dbus_required) {
      // Asked for and not there: an operator relying on it must know now.
      AXL_ERROR("D-Bus API unavailable: %s", api.error().message.c_str());
      return 1;
    } else {
      AXL_WARN("no D-Bus API on the system bus: %s", api.error().message.c_str());
    }
  } else if (!dbus_none) {
    AXL_INFO("no system bus and no --bus given: running without the D-Bus API");
  }
  if (auto s = control.listen(state_dir + "/supervisor.sock"); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  if (auto s = drivers.start_all(*host); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    // Domains adopted from a predecessor serve guests: left as a crash
    // leaves them, to the next supervisor (or `axl host down`).
    if (drivers.adopted_any()) _exit(1);
    drivers.stop_all();
    return 1;
  }
  boost::asio::signal_set sigs(io, SIGTERM, SIGINT);
  sigs.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
  vtpms.adopt_all();
  for (const auto& name : fd_store.untaken()) {
    AXL_INFO("kept fd %s belongs to no domain now: dropped", name.c_str());
    fd_store.remove(name);
  }
  fd_store.ready();
  AXL_INFO("ready, %zu driver domains%s", drivers.drivers().size(),
           fd_store.available() ? "; their channels kept in the fd store" : "");
  io.run();
  dbus_api.reset();  // it calls into the backend and the driver manager
  AXL_INFO("stopping: stopping every driver and vTPM domain");
  vtpms.stop_all();
  drivers.stop_all();
  return 0;
}
