// axl-bench-serve-blk: serves one image through Axolotl's blk path (the
// hypervisor's vhost-user-blk device + a blk driver domain process) on a
// vhost-user socket, without QEMU, so run-blk-bench can drive it with the same
// synthetic frontend it drives qemu-storage-daemon with.
//
//   axl-bench-serve-blk --socket SOCK --image IMG [--format raw|qcow2]
//                       [--cache writeback|none] [--aio auto|io_uring|sync]
//                       [--poll-us N]
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "common/asio.h"
#include "common/log.h"
#include "common/process.h"
#include "driverdom/blk/image.h"
#include "hypervisor/daemon/device_binding.h"
#include "hypervisor/daemon/driver_registry.h"

int main(int argc, char** argv) {
  std::string socket, image, format = "raw", cache = "writeback", aio = "auto", poll_us = "0";
  bool bad_arg = argc % 2 == 0;  // every option takes a value
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--aio")
      aio = argv[i + 1];
    else if (a == "--poll-us")
      poll_us = argv[i + 1];
    else if (a == "--socket")
      socket = argv[i + 1];
    else if (a == "--image")
      image = argv[i + 1];
    else if (a == "--format")
      format = argv[i + 1];
    else if (a == "--cache")
      cache = argv[i + 1];
    else
      bad_arg = true;
  }
  if (bad_arg || socket.empty() || image.empty() || (cache != "writeback" && cache != "none") ||
      (cache == "none" && format != "raw") ||
      (aio != "auto" && aio != "io_uring" && aio != "sync") || poll_us.empty() ||
      poll_us.find_first_not_of("0123456789") != std::string::npos || poll_us.size() > 4 ||
      std::stoul(poll_us) > 1000) {
    fprintf(stderr,
            "usage: axl-bench-serve-blk --socket SOCK --image IMG [--format raw|qcow2] "
            "[--cache writeback|none (raw only)] [--aio auto|io_uring|sync] [--poll-us 0..1000]\n");
    return 2;
  }
  axl::log::set_component("axl-bench-serve-blk");
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/axl-serve-blk.XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  boost::asio::io_context io;
  axl::hv::DriverRegistry reg(io);
  if (auto s = reg.listen(dir + "/drivers.sock"); !s) {
    fprintf(stderr, "%s\n", s.error().message.c_str());
    return 1;
  }
  axl::proc::SpawnOptions so;
  so.argv = {axl::proc::exe_dir() + "/axolotl-driverdom",
             "--name",
             "bench-blk",
             "--kind",
             "blk",
             "--hv-socket",
             dir + "/drivers.sock",
             "--poll-us",
             poll_us};
  auto drv = axl::proc::spawn(so);
  int rc = 1;
  if (!drv) {
    fprintf(stderr, "%s\n", drv.error().message.c_str());
  } else {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!reg.find("bench-blk") && std::chrono::steady_clock::now() < deadline)
      io.run_one_for(std::chrono::milliseconds(50));
    axl::hv::DeviceRequest req;
    req.kind = axl::config::DriverKind::kBlk;
    req.aio = aio;
    // As the hypervisor opens a disk at create (domain_engine.cc).
    auto chain = axl::driverdom::blk::open_chain_fds(image, format, false);
    uint32_t block_size = 512;
    if (chain && cache == "none") {
      // As the hypervisor does for cache = "none" (domain_engine.cc).
      auto align = axl::driverdom::blk::use_direct_io(chain->fds.front().get());
      if (!align) {
        fprintf(stderr, "%s: %s\n", image.c_str(), align.error().message.c_str());
        return 1;
      }
      block_size = *align;
    }
    if (chain) {
      req.image = std::move(chain->fds.front());
      for (size_t k = 1; k < chain->fds.size(); ++k)
        req.backing.push_back(std::move(chain->fds[k]));
      if (format != "raw") req.formats = chain->formats;
    }
    if (!reg.find("bench-blk")) {
      fprintf(stderr, "driver domain did not connect\n");
    } else if (!chain) {
      fprintf(stderr, "%s\n", chain.error().message.c_str());
    } else {
      req.blk = axl::hv::BlkDeviceSpec{chain->size & ~uint64_t(block_size - 1), false, "axl-bench",
                                       block_size};
      // The attach is answered on the loop: run it until then.
      std::optional<axl::Result<axl::hv::ChannelGrant>> grant;
      axl::hv::attach_channel(
          *reg.find("bench-blk"), req,
          [&](axl::Result<axl::hv::ChannelGrant> g) { grant.emplace(std::move(g)); });
      while (!grant) io.run_one();
      axl::Result<axl::hv::BoundDevice> b = axl::make_error("no grant");
      axl::hv::DeviceSupervision sup;
      sup.poll_us = uint32_t(std::stoul(poll_us));
      if (*grant)
        b = axl::hv::make_bound_device(socket, req, std::move(*grant).value(),
                                       reg.find("bench-blk")->instance_pid(), sup);
      else
        b = grant->error();
      if (!b) {
        fprintf(stderr, "%s\n", b.error().message.c_str());
      } else {
        boost::asio::signal_set sigs(io, SIGTERM, SIGINT);
        sigs.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
        AXL_INFO("serving %s on %s", image.c_str(), socket.c_str());
        io.run();
        rc = 0;
      }
    }
    axl::proc::stop(*drv, std::chrono::milliseconds(1000));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
