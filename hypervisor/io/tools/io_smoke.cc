// axl-io-smoke: a manual end-to-end harness for the guest-facing devices.
// It creates a channel, serves its driver end in-process (blk: a raw image
// file; net: a TAP device with a 12-byte vnet header) and runs
// make_blk_device / make_net_device on a socket for QEMU to connect to.
// Not a driver domain: no sandbox, no restart; for smoke tests only.
//
//   axl-io-smoke blk SOCK IMAGE
//   axl-io-smoke net SOCK TAPNAME
// SIGUSR1 simulates a driver crash and restart (fresh channel, rebind).
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <deque>
#include <string>

#include "channel/channel.h"
#include "common/log.h"
#include "hypervisor/guest_device.h"
#include "hypervisor/io/device_host.h"

using namespace axl;

namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_rebind = 0;  // SIGUSR1: simulate a driver restart

struct Ends {
  std::optional<channel::HvEnd> hv;
  std::optional<channel::DriverEnd> drv;
};

Ends make_channel(hv::ChannelShape s) {
  Ends e;
  auto fds = channel::create(s.slots, s.slot_size);
  if (!fds) return e;
  auto m1 = channel::Mapping::map(fds->mem.get(), s.slots, s.slot_size);
  auto m2 = channel::Mapping::map(fds->mem.get(), s.slots, s.slot_size);
  if (!m1 || !m2) return e;
  UniqueFd rk(::dup(fds->req_kick.get())), pk(::dup(fds->resp_kick.get()));
  e.hv.emplace(std::move(m1).value(), std::move(fds->req_kick), std::move(fds->resp_kick));
  e.drv.emplace(std::move(m2).value(), std::move(rk), std::move(pk));
  return e;
}

int run_blk(const char* sock, const char* image) {
  UniqueFd img(::open(image, O_RDWR | O_CLOEXEC));
  if (!img) return perror(image), 1;
  struct stat st {};
  fstat(img.get(), &st);
  auto ends = make_channel(hv::blk_channel_shape());
  if (!ends.hv) return fprintf(stderr, "channel failed\n"), 1;
  auto dev = hv::make_blk_device(sock, {uint64_t(st.st_size) & ~511ull, false, "axl-smoke"},
                                 std::move(*ends.hv));
  if (auto s = dev->start(); !s) return fprintf(stderr, "%s\n", s.error().message.c_str()), 1;
  std::optional<channel::DriverEnd> drv(std::move(*ends.drv));
  uint64_t served = 0, restarts = 0;
  while (!g_stop) {
    if (g_rebind) {
      // The "driver" dies holding a request it never answers; a fresh
      // channel replaces it and the device replays what was in flight.
      g_rebind = 0;
      (void)drv->pop();
      auto fresh = make_channel(hv::blk_channel_shape());
      if (!fresh.hv) return fprintf(stderr, "channel failed\n"), 1;
      if (auto st = hv::io::rebind(*dev, std::move(*fresh.hv)); !st)
        return fprintf(stderr, "rebind: %s\n", st.error().message.c_str()), 1;
      drv.emplace(std::move(*fresh.drv));
      ++restarts;
    }
    channel::DriverEnd& d = *drv;
    pollfd p{d.req_kick_fd(), POLLIN, 0};
    ::poll(&p, 1, 200);
    d.ack_doorbell();
    for (;;) {
      auto r = d.pop();
      if (!r || !r->has_value()) break;
      const channel::Request& q = **r;
      channel::Response resp{q.id, 0, 0, 0};
      off_t off = off_t(q.sector * 512);
      switch (static_cast<channel::Op>(q.op)) {
        case channel::Op::kBlkRead:
          resp.status = ::pread(img.get(), d.slot(q.id), q.len, off) == ssize_t(q.len) ? 0 : 1;
          resp.len = resp.status == 0 ? q.len : 0;
          break;
        case channel::Op::kBlkWrite:
          resp.status = ::pwrite(img.get(), d.slot(q.id), q.len, off) == ssize_t(q.len) ? 0 : 1;
          break;
        case channel::Op::kBlkFlush:
          resp.status = ::fdatasync(img.get()) == 0 ? 0 : 1;
          break;
        case channel::Op::kBlkGetId:
          memcpy(d.slot(q.id), "axl-smoke", 9);
          resp.len = 9;
          break;
        default:
          resp.status = 2;
      }
      d.push(resp);
      ++served;
    }
    d.kick();
  }
  auto s = dev->stats();
  fprintf(stderr,
          "blk smoke: served=%llu restarts=%llu requests=%llu bytes=%llu bad=%llu faults=%llu "
          "violations=%llu\n",
          (unsigned long long)served, (unsigned long long)restarts, (unsigned long long)s.requests,
          (unsigned long long)s.bytes, (unsigned long long)s.bad_descriptors,
          (unsigned long long)s.iommu_faults, (unsigned long long)s.driver_violations);
  return 0;
}

int run_net(const char* sock, const char* tapname) {
  UniqueFd tap(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!tap) return perror("/dev/net/tun"), 1;
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, tapname, IFNAMSIZ - 1);
  if (ioctl(tap.get(), TUNSETIFF, &ifr) < 0) return perror("TUNSETIFF"), 1;
  int hdr = 12;
  if (ioctl(tap.get(), TUNSETVNETHDRSZ, &hdr) < 0) return perror("TUNSETVNETHDRSZ"), 1;
  auto ends = make_channel(hv::net_channel_shape());
  if (!ends.hv) return fprintf(stderr, "channel failed\n"), 1;
  auto dev = hv::make_net_device(sock, {{0x52, 0x54, 0, 0x12, 0x34, 0x56}}, std::move(*ends.hv));
  if (auto s = dev->start(); !s) return fprintf(stderr, "%s\n", s.error().message.c_str()), 1;
  std::optional<channel::DriverEnd> drv(std::move(*ends.drv));
  std::deque<channel::Request> rx_posted;
  uint64_t tx = 0, rx = 0, restarts = 0;
  while (!g_stop) {
    if (g_rebind) {
      // A restarted net driver: fresh channel; posted RX buffers and any TX
      // frame not yet answered belong to the old one.
      g_rebind = 0;
      rx_posted.clear();
      auto fresh = make_channel(hv::net_channel_shape());
      if (!fresh.hv) return fprintf(stderr, "channel failed\n"), 1;
      if (auto st = hv::io::rebind(*dev, std::move(*fresh.hv)); !st)
        return fprintf(stderr, "rebind: %s\n", st.error().message.c_str()), 1;
      drv.emplace(std::move(*fresh.drv));
      ++restarts;
    }
    channel::DriverEnd& d = *drv;
    pollfd p[2] = {{d.req_kick_fd(), POLLIN, 0},
                   {tap.get(), short(rx_posted.empty() ? 0 : POLLIN), 0}};
    ::poll(p, 2, 200);
    d.ack_doorbell();
    for (;;) {
      auto r = d.pop();
      if (!r || !r->has_value()) break;
      const channel::Request& q = **r;
      if (q.op == uint16_t(channel::Op::kNetRxPost)) {
        rx_posted.push_back(q);
        continue;
      }
      channel::Response resp{q.id, 0, 0, 0};
      if (q.op == uint16_t(channel::Op::kNetTx)) {
        if (::write(tap.get(), d.slot(q.id), q.len) < 0) resp.status = 1;
        ++tx;
      } else {
        resp.status = 2;
      }
      d.push(resp);
    }
    while (!rx_posted.empty()) {
      const channel::Request q = rx_posted.front();
      ssize_t n = ::read(tap.get(), d.slot(q.id), q.len);
      if (n <= 0) break;
      rx_posted.pop_front();
      d.push(channel::Response{q.id, 0, uint32_t(n), 0});
      ++rx;
    }
    d.kick();
  }
  auto s = dev->stats();
  fprintf(stderr,
          "net smoke: restarts=%llu tx=%llu rx=%llu frames=%llu bad=%llu faults=%llu "
          "violations=%llu\n",
          (unsigned long long)restarts, (unsigned long long)tx, (unsigned long long)rx,
          (unsigned long long)s.requests, (unsigned long long)s.bad_descriptors,
          (unsigned long long)s.iommu_faults, (unsigned long long)s.driver_violations);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s blk SOCK IMAGE | net SOCK TAPNAME\n", argv[0]);
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction su {};
  su.sa_handler = [](int) { g_rebind = 1; };
  sigaction(SIGUSR1, &su, nullptr);
  if (getenv("AXL_DEBUG")) axl::log::set_level(axl::log::Level::kDebug);
  std::string mode = argv[1];
  if (mode == "blk") return run_blk(argv[2], argv[3]);
  if (mode == "net") return run_net(argv[2], argv[3]);
  return 2;
}
