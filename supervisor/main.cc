// axolotl-supervisor: the privileged "dom0" toolstack daemon.  Spawns and
// watches the driver domains named by the host config and holds their device
// fds (TAPs).  Wiring happens here.
#include <signal.h>

#include "common/asio.h"
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/control_server.h"
#include "supervisor/driver_manager.h"

int main(int argc, char** argv) {
  std::string state_dir, config_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--state-dir" && i + 1 < argc) state_dir = argv[++i];
    else if (a == "--config" && i + 1 < argc) config_path = argv[++i];
    else {
      fprintf(stderr, "axolotl-supervisor: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  if (state_dir.empty() || config_path.empty()) {
    fprintf(stderr, "usage: axolotl-supervisor --state-dir DIR --config HOST.toml\n");
    return 2;
  }
  axl::log::set_component("axolotl-supervisor");
  signal(SIGPIPE, SIG_IGN);
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

  boost::asio::io_context io;
  axl::supervisor::DriverManager drivers(io, axl::proc::exe_dir() + "/axolotl-driverdom",
                                         state_dir + "/drivers.sock", state_dir);
  axl::ControlServer control(io, [&](axl::schema::ControlRequest::Reader req,
                                     axl::schema::ControlReply::Builder rep) {
    using R = axl::schema::ControlRequest;
    rep.setOk(true);
    switch (req.which()) {
      case R::LIST_DRIVERS: {
        auto& all = drivers.drivers();
        auto l = rep.initDrivers(unsigned(all.size()));
        for (unsigned i = 0; i < all.size(); ++i) {
          l[i].setName(all[i]->cfg.name);
          l[i].setKind(axl::config::to_string(all[i]->cfg.kind));
          l[i].setPid(all[i]->child.pid);
          l[i].setState(axl::supervisor::to_string(all[i]->state));
          l[i].setRestarts(all[i]->restarts);
        }
        break;
      }
      case R::SHUTDOWN:
        io.post([&] { io.stop(); });
        break;
      case R::PING:
        break;
      default:
        rep.setOk(false);
        rep.setError("request not supported by the supervisor");
    }
  });
  if (auto s = control.listen(state_dir + "/supervisor.sock"); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    return 1;
  }
  if (auto s = drivers.start_all(*host); !s) {
    AXL_ERROR("%s", s.error().message.c_str());
    drivers.stop_all();
    return 1;
  }
  boost::asio::signal_set sigs(io, SIGTERM, SIGINT);
  sigs.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
  AXL_INFO("ready, %zu driver domains", drivers.drivers().size());
  io.run();
  AXL_INFO("stopping: stopping every driver domain");
  drivers.stop_all();
  return 0;
}
