#include "supervisor/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace axl::supervisor {

Result<UniqueFd> open_tap(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return make_error("bad tap name '" + name + "'");
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return make_error(std::string("cannot open /dev/net/tun: ") + strerror(errno));
  ifreq ifr{};
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  // The channel carries virtio_net_hdr_v1 (12 bytes) in front of every frame;
  // the TAP takes and gives the same header, so frames pass through unchanged.
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0)
    return make_error("cannot attach tap '" + name + "': " + strerror(errno));
  int hdr = 12;
  if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) < 0)
    return make_error("tap '" + name + "': TUNSETVNETHDRSZ: " + strerror(errno));
  // The net driver domain may be handed partially checksummed and TSO
  // frames; the hypervisor finishes or drops them for guests that did not
  // negotiate those offloads (hypervisor/io/net/offload.h).
  if (::ioctl(fd.get(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) < 0)
    return make_error("tap '" + name + "': TUNSETOFFLOAD: " + strerror(errno));
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  ifreq up{};
  strncpy(up.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &up) < 0 ||
      (up.ifr_flags |= IFF_UP, ::ioctl(s.get(), SIOCSIFFLAGS, &up) < 0))
    return make_error("cannot set tap '" + name + "' up: " + strerror(errno));
  return fd;
}

}  // namespace axl::supervisor
