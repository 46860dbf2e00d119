// A stand-in for axolotl-driverdom in DriverManager's unit tests. It takes
// the driver domain's arguments and speaks only the supervisor's side of
// its protocol (common/schema/supervisor.capnp): it answers heartbeats on
// --supervisor-fd, waits for `start` as a parked spare, and runs the fault
// "crash" when asked. No hypervisor, no device.
//
// Each role it takes is appended to the file $AXL_FAKE_DRIVER_LOG as
// "PID ROLE" (active, standby, parked, started), so a test can tell which
// process became what.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <capnp/message.h>

#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"

namespace {

void note(const char* role) {
  const char* path = std::getenv("AXL_FAKE_DRIVER_LOG");
  if (!path) return;
  if (FILE* f = std::fopen(path, "a")) {
    std::fprintf(f, "%d %s\n", int(::getpid()), role);
    std::fclose(f);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int fd = -1;
  const char* role = "active";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--supervisor-fd" && i + 1 < argc) fd = std::atoi(argv[++i]);
    if (a == "--standby") role = "standby";
    if (a == "--parked") role = "parked";
  }
  if (fd < 0) {
    std::fprintf(stderr, "fake_driver: --supervisor-fd is required\n");
    return 2;
  }
  note(role);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) continue;
    auto m = axl::wire::recv(fd, MSG_DONTWAIT);
    if (!m && m.error().code == axl::Errc::kWouldBlock) continue;
    if (!m) return 0;  // the supervisor closed our channel
    auto hb = m->root<axl::schema::Heartbeat>();
    switch (hb.which()) {
      case axl::schema::Heartbeat::PING: {
        capnp::MallocMessageBuilder mb;
        mb.initRoot<axl::schema::Heartbeat>().setPong(hb.getPing());
        (void)axl::wire::send(fd, mb);
        break;
      }
      case axl::schema::Heartbeat::START:
        note("started");
        break;
      case axl::schema::Heartbeat::FAULT:
        if (std::string(hb.getFault().cStr()) == "crash") std::abort();
        break;
      default:
        break;
    }
  }
}
