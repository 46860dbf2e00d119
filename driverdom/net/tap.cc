#include "driverdom/net/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <string>

namespace axl::driverdom::net {

Status Tap::prepare() {
  ifreq ifr{};
  if (::ioctl(fd_.get(), TUNGETIFF, &ifr) < 0)
    return make_error(std::string("tap fd is not an attached TAP: ") + strerror(errno));
  if ((ifr.ifr_flags & IFF_TAP) == 0) return make_error("tap fd is a TUN, not a TAP");
  if ((ifr.ifr_flags & IFF_NO_PI) == 0) return make_error("tap fd lacks IFF_NO_PI");
  if ((ifr.ifr_flags & IFF_VNET_HDR) == 0) return make_error("tap fd lacks IFF_VNET_HDR");
  int hdr = 0;
  if (::ioctl(fd_.get(), TUNGETVNETHDRSZ, &hdr) < 0)
    return make_error(std::string("TUNGETVNETHDRSZ: ") + strerror(errno));
  if (size_t(hdr) != kVnetHdrBytes)
    return make_error("tap vnet header is " + std::to_string(hdr) + " bytes, expected 12");
  int fl = ::fcntl(fd_.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd_.get(), F_SETFL, fl | O_NONBLOCK) < 0)
    return make_error(std::string("tap O_NONBLOCK: ") + strerror(errno));
  return {};
}

Result<std::optional<size_t>> Tap::read_frame(std::span<uint8_t> buf) {
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
    if (n >= 0) return std::optional<size_t>(size_t(n));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<size_t>();
    return make_error(std::string("tap read: ") + strerror(errno));
  }
}

Tap::WriteResult Tap::write_frame(std::span<const uint8_t> frame) {
  for (;;) {
    ssize_t n = ::write(fd_.get(), frame.data(), frame.size());
    if (n >= 0) return WriteResult::kSent;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WriteResult::kBusy;
    return WriteResult::kFailed;
  }
}

}  // namespace axl::driverdom::net
