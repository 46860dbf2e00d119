// axolotl-hv: the trusted hypervisor core.  Owns the domain table, QEMU
// processes, every guest-facing vhost-user device and the hypervisor end of
// every channel.  Wiring happens here and nowhere else.
#include <signal.h>

#include <CLI/CLI.hpp>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <string>
#include "common/asio.h"

#include "common/control_requests.h"
#include "common/control_server.h"
#include "common/daemon_fault.h"
#include "common/fd_store.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/process.h"
#include "common/wire.h"
#include "hypervisor/daemon/domain_access.h"
#include "hypervisor/daemon/domain_engine.h"
#include "hypervisor/daemon/driver_registry.h"
#include "hypervisor/daemon/supervisor_events.h"
#include "hypervisor/platform/accel.h"
#include "policy/control.h"

namespace {

void fill_domain(const axl::hv::Domain& d, axl::schema::DomainInfo::Builder b) {
  b.setName(d.cfg.name);
  b.setId(d.id);
  b.setState(axl::hv::to_string(d.state));
  b.setMemoryMib(d.cfg.memory_mib);
  b.setVcpus(d.cfg.vcpus);
  b.setQemuPid(d.qemu.pid);
  b.setExitStatus(d.exit_status);
  b.setAccel(d.accel);
  b.setConsoleLog(d.console_log());
  b.setConsoleSocket(d.console_socket());
  b.setCrashCause(d.crash_cause);
  b.setFirmware(d.cfg.firmware);
}

// The listening socket kept in the store under `name` (a predecessor's,
// with whatever connected meanwhile still in its backlog), else a new one
// at `path`, kept from now on.
axl::Result<axl::UniqueFd> kept_listener(axl::FdStore& store, const std::string& name,
                                         const std::string& path) {
  if (axl::UniqueFd fd = store.take(name)) {
    int on = 0;
    socklen_t len = sizeof on;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on) {
      int fl = ::fcntl(fd.get(), F_GETFL);
      if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
      return fd;
    }
    AXL_WARN("kept fd %s is no listening socket: made afresh", name.c_str());
  }
  auto l = axl::wire::listen(path);
  if (!l) return l.error();
  if (auto s = store.put(name, l->get()); !s) AXL_WARN("%s", s.error().message.c_str());
  return l;
}

// What `axl console` gets, after the policy allowed it: the console log
// (read-only) or a connection to the live console.
axl::Result<axl::UniqueFd> open_console_log(const axl::hv::Domain& d) {
  axl::UniqueFd f(::open(d.console_log().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) return axl::make_error("no console output yet for " + d.cfg.name);
  return f;
}

axl::Result<axl::UniqueFd> connect_console(const axl::hv::Domain& d) {
  if (d.state != axl::hv::DomainState::kRunning)
    return axl::make_error("domain " + d.cfg.name + " is not running");
  auto s = axl::wire::stream_connect(d.console_socket());
  if (!s) return axl::make_error("the console of " + d.cfg.name + ": " + s.error().message);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  // The bundled guest image: beside the binaries in a build tree
  // (build/bin/../guest), or where AXL_GUEST_DIR points.
  const char* env_guest = getenv("AXL_GUEST_DIR");
  std::string state_dir, guest_dir = env_guest ? env_guest : axl::proc::exe_dir() + "/../guest";
  CLI::App app{"axolotl-hv: the Axolotl hypervisor core (started by `axl host up`)"};
  app.add_option("--state-dir", state_dir, "the host's state dir")->required();
  app.add_option("--guest-dir", guest_dir, "the bundled guest image (vmlinuz, initrd.img)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    fprintf(stderr, "axolotl-hv: %s\n", e.what());
    return 2;
  }
  axl::log::set_component("axolotl-hv");
  signal(SIGPIPE, SIG_IGN);
  // What a predecessor that crashed kept, and where to keep what this one
  // must not lose with its own crash (common/fd_store.h; docs/architecture.md,
  // "The hypervisor's own crash").  Nothing spawned later inherits either.
  axl::FdStore fd_store = axl::FdStore::from_environment();
  if (auto s = axl::check_state_dir(state_dir); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }

  // Each driver's progress deadline comes from the host config that `axl
  // host up` copied into the state dir, not from the driver's hello: a
  // driver must not choose how long it may hang.  Without that file every
  // driver gets the default.
  std::map<std::string, uint32_t> io_timeouts, poll_us;
  bool daemon_faults = false;  // host config daemon_fault_injection
  const std::string host_toml = state_dir + "/host.toml";
  if (::access(host_toml.c_str(), F_OK) == 0) {
    auto text = axl::config::read_file(host_toml);
    auto host = text ? axl::config::parse_host(*text, host_toml)
                     : axl::Result<axl::config::HostConfig>(text.error());
    if (!host) {
      AXL_ERROR("%s", host.error().message.c_str());
      return 1;
    }
    daemon_faults = host->daemon_fault_injection;
    for (const auto& d : host->drivers) {
      io_timeouts[d.name] = d.io_timeout_ms;
      poll_us[d.name] = d.poll_us;
    }
  }

  // Probed from the start, on a thread of its own: every `accel = "auto"`
  // or "kvm" create uses this answer (hypervisor/platform/accel.h; a create
  // that comes first waits for it).  The probe can take half a second, which
  // a successor adopting its predecessor's guests must not spend before
  // their devices serve again.
  auto kvm_probe = std::async(std::launch::async, [] {
    const auto& kvm = axl::hv::probe_kvm_once();
    AXL_INFO("KVM %s: %s", kvm.usable ? "usable" : "not usable", kvm.reason.c_str());
  });

  boost::asio::io_context io;
  const std::string supervisor_sock = state_dir + "/supervisor.sock";
  axl::hv::SupervisorEvents events(io, supervisor_sock);
  axl::hv::DriverSupervision supervision;
  supervision.io_timeout_ms = [&](const std::string& driver) {
    auto it = io_timeouts.find(driver);
    return it != io_timeouts.end() ? it->second : axl::config::DriverConfig{}.io_timeout_ms;
  };
  supervision.poll_us = [&](const std::string& driver) {
    auto it = poll_us.find(driver);
    return it != poll_us.end() ? it->second : 0u;
  };
  supervision.report = [&](const std::string& driver, int pid, const std::string& cause) {
    events.quarantined(driver, pid, cause);
  };
  axl::hv::DriverRegistry drivers(io);
  supervision.served = [&](const std::string& driver, int pid, uint64_t rebound, uint64_t served) {
    events.served(driver, pid, rebound, served, drivers.last_death_ns(driver));
  };
  // vTPM domains run under the supervisor, which answers a start once the
  // vTPM listens (seconds, for one it provisions): asked without waiting.
  axl::control::SupervisorClient supervisor(io, supervisor_sock);
  axl::hv::VtpmControl vtpm;
  vtpm.start = [&](const std::string& dom, bool measure_log, uint32_t port,
                   std::function<void(axl::Status)> done) {
    return supervisor.start_vtpm(
        dom, measure_log, port, 30000,
        [done = std::move(done)](axl::Result<axl::control::ControlReply> r) {
          done(r ? axl::Status() : axl::Status(r.error()));
        });
  };
  vtpm.stop = [&](const std::string& dom) {
    // Fire and forget: the request is on its way once this returns; the
    // answer only matters to the log.
    supervisor.stop_vtpm(dom, 10000, [dom](axl::Result<axl::control::ControlReply> r) {
      if (!r) AXL_WARN("domain %s: stopping its vTPM: %s", dom.c_str(), r.error().message.c_str());
    });
  };
  axl::hv::DomainEngine engine(io, state_dir, guest_dir, drivers, supervision, vtpm);
  engine.on_state_change(
      [&](const std::string& name, const std::string& state) { events.domain_state(name, state); });
  drivers.on_connect([&](axl::hv::DriverConnection& c) { engine.driver_connected(c); });
  drivers.on_standby([&](axl::hv::DriverConnection& c) { engine.standby_connected(c); });
  drivers.on_promote([&](axl::hv::DriverConnection& c) { engine.standby_promoted(c); });
  // A driver that broke the control protocol (no answer to attach in time):
  // its connection is dropped, and the supervisor asked to replace it.
  drivers.on_violation([&](axl::hv::DriverConnection& c, const std::string& cause) {
    events.quarantined(c.name(), c.instance_pid(), cause);
  });
  bool stopping = false;

  // Every operation on a domain asks the access policy first
  // (docs/policy.md); the policy in force is STATE/policy.toml.
  axl::policy::DecisionPoint access("hv");
  if (auto s = axl::policy::load_policy(access, state_dir); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  access.on_decided([&] { events.policy_counted(access.allowed(), access.denied()); });
  namespace pol = axl::policy;
  const axl::hv::Decide decide = [&](const pol::Subject& s, pol::Permission p,
                                     const pol::Object& o) { return access.check(s, p, o); };
  // Whether the request's subject holds `p` on guest `name`; if not, the
  // reply says which rule refused it.
  auto allowed = [&](axl::schema::ControlRequest::Reader req, axl::ControlServer::Context& ctx,
                     pol::Permission p, const std::string& name,
                     axl::schema::ControlReply::Builder rep) {
    return pol::authorize(access, ctx, req, p, pol::Object{pol::Kind::kGuest, name}, rep);
  };

  axl::ControlServer control(io, [&](axl::schema::ControlRequest::Reader req,
                                     axl::schema::ControlReply::Builder rep,
                                     axl::ControlServer::Context& ctx) {
    using R = axl::schema::ControlRequest;
    rep.setOk(true);
    switch (req.which()) {
      case R::CREATE: {
        // Answered once the domain runs or failed; the loop serves on meanwhile.
        auto c = req.getCreate();
        auto cfg = axl::config::parse_guest(c.getConfigToml(), "guest config", c.getBaseDir());
        if (!cfg) {  // the engine would say the same; the policy needs the name first
          rep.setOk(false);
          rep.setError(cfg.error().message);
          break;
        }
        const pol::Subject op = pol::subject_of(ctx, req);
        if (auto st = axl::hv::check_domain(access.policy(), decide, &op, *cfg); !st) {
          rep.setOk(false);
          rep.setError(st.error().message);
          break;
        }
        // A name that had a vTPM before: its EK and sealed state are still
        // there, and the operator says which it is to be.
        const std::string choice = c.getVtpmState();
        if (!choice.empty() && choice != "keep" && choice != "new") {
          rep.setOk(false);
          rep.setError("vtpmState must be keep or new, not '" + choice + "'");
          break;
        }
        const std::string name = cfg->name;
        const bool had_vtpm =
            cfg->vtpm.enabled &&
            ::access((state_dir + "/vtpm/" + name + "/permanent.state").c_str(), F_OK) == 0;
        if (had_vtpm && choice.empty() && !engine.find(name)) {
          rep.setOk(false);
          rep.setError("domain " + name +
                       " had a vTPM before (its EK and sealed state are kept): create it with "
                       "--vtpm-state keep to boot with that vTPM, or --vtpm-state new to retire "
                       "it and make a new one");
          break;
        }
        auto reply = ctx.defer();
        auto go = [&engine, reply, toml = std::string(c.getConfigToml()),
                   base = std::string(c.getBaseDir())] {
          engine.create(toml, base, [reply](axl::Result<const axl::hv::Domain*> d) {
            auto r = reply->reply();
            if (!d) {
              r.setOk(false);
              r.setError(d.error().message);
            } else {
              fill_domain(**d, r.initDomains(1)[0]);
            }
            reply->send();
          });
        };
        if (!had_vtpm || choice != "new" || engine.find(name)) {
          go();
          break;
        }
        // "new": the supervisor retires the old state first (for this
        // operator: the policy decides there too).
        auto retire = [r = axl::control::supervisor::delete_vtpm(name),
                       op](axl::schema::ControlRequest::Builder q) {
          r(q);
          pol::set_caller(q, op);
        };
        supervisor.call(retire, 10000,
                        [go, reply, name](axl::Result<axl::control::ControlReply> r) {
                          if (r) return go();
                          auto b = reply->reply();
                          b.setOk(false);
                          b.setError("retiring the old vTPM of " + name + ": " + r.error().message);
                          reply->send();
                        });
        break;
      }
      case R::LIST: {
        auto all = engine.list();
        auto l = rep.initDomains(unsigned(all.size()));
        for (unsigned i = 0; i < all.size(); ++i) fill_domain(*all[i], l[i]);
        break;
      }
      case R::DOMAIN_INFO: {
        const axl::hv::Domain* d = engine.find(req.getDomainInfo());
        if (!d) {
          rep.setOk(false);
          rep.setError("no domain named '" + std::string(req.getDomainInfo().cStr()) + "'");
        } else {
          fill_domain(*d, rep.initDomains(1)[0]);
        }
        break;
      }
      case R::DESTROY: {
        if (!allowed(req, ctx, pol::Permission::kDestroy, req.getDestroy(), rep)) break;
        // Answered once the domain is gone (QEMU may take up to 2 s to stop).
        auto reply = ctx.defer();
        engine.destroy(req.getDestroy(), [reply](const axl::Status& s) {
          axl::set_status(reply->reply(), s);
          reply->send();
        });
        break;
      }
      case R::LIST_DRIVERS: {
        auto all = drivers.all();
        auto l = rep.initDrivers(unsigned(all.size()));
        for (unsigned i = 0; i < all.size(); ++i) {
          l[i].setName(all[i]->name());
          l[i].setKind(axl::config::to_string(all[i]->kind()));
          l[i].setPid(all[i]->pid());
          l[i].setState("connected");
          l[i].setDevices(uint32_t(all[i]->devices()));
          auto [rebound, served] = engine.service_times(all[i]->name());
          l[i].setReboundNs(rebound);
          l[i].setFirstServedNs(served);
        }
        break;
      }
      case R::GUEST_EXEC: {
        // Answered once the command exited in the guest; the loop serves on.
        auto e = req.getGuestExec();
        if (e.getPath().size() == 0 || e.getArgs().size() > 1024 || e.getTimeoutMs() == 0 ||
            e.getTimeoutMs() > 3600 * 1000) {
          rep.setOk(false);
          rep.setError("guestExec: a path, at most 1024 arguments, a timeout of 1 ms..1 h");
          break;
        }
        if (!allowed(req, ctx, pol::Permission::kExec, e.getDomain(), rep)) break;
        std::vector<std::string> args;
        for (auto a : e.getArgs()) args.emplace_back(a.cStr());
        auto reply = ctx.defer();
        engine.guest_exec(e.getDomain(), e.getPath(), std::move(args),
                          std::chrono::milliseconds(e.getTimeoutMs()),
                          [reply](axl::Result<axl::hv::ExecResult> r) {
                            auto b = reply->reply();
                            if (!r) {
                              b.setOk(false);
                              b.setError(r.error().message);
                              return reply->send();
                            }
                            // What fits one control message (common/wire.h); the
                            // rest is cut, and said so.
                            constexpr size_t kMaxStream = 96 * 1024;
                            auto x = b.initExec();
                            x.setExitCode(r->exit_code);
                            x.setSignal(r->signal);
                            bool cut = r->out.size() > kMaxStream || r->err.size() > kMaxStream;
                            r->out.resize(std::min(r->out.size(), kMaxStream));
                            r->err.resize(std::min(r->err.size(), kMaxStream));
                            x.setStdout(kj::arrayPtr(
                                reinterpret_cast<const kj::byte*>(r->out.data()), r->out.size()));
                            x.setStderr(kj::arrayPtr(
                                reinterpret_cast<const kj::byte*>(r->err.data()), r->err.size()));
                            x.setTruncated(r->truncated || cut);
                            reply->send();
                          });
        break;
      }
      case R::GUEST_SHUTDOWN: {
        auto g = req.getGuestShutdown();
        if (g.getTimeoutMs() == 0 || g.getTimeoutMs() > 3600 * 1000) {
          rep.setOk(false);
          rep.setError("guestShutdown: a timeout of 1 ms..1 h");
          break;
        }
        // Powering a domain off ends it as destroying it does.
        if (!allowed(req, ctx, pol::Permission::kDestroy, g.getDomain(), rep)) break;
        auto reply = ctx.defer();
        engine.shutdown(g.getDomain(), std::chrono::milliseconds(g.getTimeoutMs()), g.getForce(),
                        [reply](axl::Result<bool> r) {
                          auto b = reply->reply();
                          if (!r) {
                            b.setOk(false);
                            b.setError(r.error().message);
                          } else {
                            b.setForced(*r);
                          }
                          reply->send();
                        });
        break;
      }
      case R::OPEN_CONSOLE: {
        auto o = req.getOpenConsole();
        const axl::hv::Domain* d = engine.find(o.getDomain());
        if (!d) {
          rep.setOk(false);
          rep.setError("no domain named '" + std::string(o.getDomain().cStr()) + "'");
          break;
        }
        if (!allowed(req, ctx, pol::Permission::kConsole, d->cfg.name, rep)) break;
        auto fd = o.getLog() ? open_console_log(*d) : connect_console(*d);
        if (!fd) {
          rep.setOk(false);
          rep.setError(fd.error().message);
          break;
        }
        ctx.defer()->send({fd->get()});  // the reply holds its own copy
        break;
      }
      case R::RELOAD_POLICY:
        // Refused whole when a running domain would break it (a device its
        // policy would no longer let attach, a vTPM it now requires).
        pol::answer_reload(access, ctx, req.getReloadPolicy(), rep, [&](const pol::Policy& p) {
          const axl::hv::Decide quiet = [&](const pol::Subject& s, pol::Permission perm,
                                            const pol::Object& o) { return p.decide(s, perm, o); };
          for (const axl::hv::Domain* d : engine.list())
            if (auto st = axl::hv::check_domain(p, quiet, nullptr, d->cfg); !st)
              return axl::Status(axl::make_error("running domain " + d->cfg.name + ": " +
                                                 st.error().message + ": policy not applied"));
          return axl::Status();
        });
        break;
      case R::FAIL_OVER: {
        // The supervisor's, once a driver used up its restart budget and the
        // policy names its failover; root's only, like every internal request.
        if (ctx.peer().uid != 0 && ctx.peer().uid != int(::geteuid())) {
          rep.setOk(false);
          rep.setError("failOver: root only");
          break;
        }
        auto f = req.getFailOver();
        auto moved = engine.fail_over(f.getFrom(), f.getTo());
        if (!moved) {
          axl::set_status(rep, moved.error());
          break;
        }
        AXL_INFO("driver %s given up: %zu device%s moved to its failover %s", f.getFrom().cStr(),
                 *moved, *moved == 1 ? "" : "s", f.getTo().cStr());
        break;
      }
      case R::PROMOTE_STANDBY:
        axl::set_status(rep, drivers.promote(req.getPromoteStandby()));
        break;
      case R::SHUTDOWN:
        stopping = true;
        io.post([&] { io.stop(); });
        break;
      case R::PING:
        break;
      case R::INJECT_FAULT: {
        auto k = req.getInjectFault();
        if (!k.getDaemon()) {
          rep.setOk(false);
          rep.setError("driver and vTPM faults go to the supervisor");
          break;
        }
        axl::set_status(
            rep, axl::crash_on_request(io, "hypervisor", k.getFault(), daemon_faults, ctx.peer()));
        break;
      }
      default:
        rep.setOk(false);
        rep.setError("request not supported by the hypervisor");
    }
  });

  // Driver connections outlive a crash of this process: a successor takes
  // them over (the drivers never see them close) and detaches what their
  // drivers still hold from before.
  const std::string kept_dir = state_dir + "/hv";
  if (::mkdir(kept_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    AXL_ERROR("cannot create %s: %s", kept_dir.c_str(), strerror(errno));
    return 1;
  }
  drivers.keep_in(fd_store, kept_dir + "/drivers");
  if (size_t n = drivers.adopt_kept())
    AXL_INFO("adopted %zu driver connection%s", n, n == 1 ? "" : "s");
  // The listening sockets too: who connects while no hypervisor runs waits
  // in the backlog instead of being refused.
  auto drivers_sock = kept_listener(fd_store, "listen.drivers", state_dir + "/drivers.sock");
  auto hv_sock = kept_listener(fd_store, "listen.hv", state_dir + "/hv.sock");
  if (!drivers_sock || !hv_sock) {
    AXL_ERROR("%s", (!drivers_sock ? drivers_sock : hv_sock).error().message.c_str());
    return 1;
  }
  drivers.listen(std::move(drivers_sock).value());
  control.listen(std::move(hv_sock).value());
  engine.keep_in(fd_store);
  engine.adopt_all();
  for (const auto& name : fd_store.untaken()) {
    AXL_INFO("kept fd %s belongs to nothing that is left: dropped", name.c_str());
    fd_store.remove(name);
  }
  fd_store.ready();
  boost::asio::signal_set sigs(io, SIGTERM, SIGINT);
  sigs.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
  AXL_INFO("ready, state dir %s", state_dir.c_str());
  io.run();
  AXL_INFO("stopping%s: destroying every domain", stopping ? " on request" : "");
  engine.destroy_all();
  // Tell the supervisor what became of them, for a while at most.
  io.restart();
  const auto flush_until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!events.idle() && std::chrono::steady_clock::now() < flush_until)
    io.run_one_for(std::chrono::milliseconds(50));
  return 0;
}
