#include "driverdom/net/switch.h"

#include <algorithm>

namespace axl::driverdom::net {

namespace {
// IEEE 802: the I/G bit (bit 0 of the first octet) marks group addresses.
bool is_group(const uint8_t* mac) { return mac[0] & 1; }
}  // namespace

uint64_t Switch::key(const uint8_t* mac) {
  uint64_t k = 0;
  for (int i = 0; i < 6; ++i) k = (k << 8) | mac[i];
  return k;
}

void Switch::add_uplink(PortId port) {
  if (uplink_ && *uplink_ != port) remove_port(*uplink_);
  if (!has_port(port)) ports_.push_back(port);
  uplink_ = port;
}

void Switch::add_guest(PortId port, const Mac& mac) {
  remove_port(port);
  const uint64_t k = key(mac.data());
  if (auto it = guests_.find(k); it != guests_.end()) mac_of_.erase(it->second);
  ports_.push_back(port);
  guests_[k] = port;
  mac_of_[port] = k;
}

void Switch::remove_port(PortId port) {
  ports_.erase(std::remove(ports_.begin(), ports_.end(), port), ports_.end());
  if (uplink_ == port) uplink_.reset();
  if (auto it = mac_of_.find(port); it != mac_of_.end()) {
    guests_.erase(it->second);
    mac_of_.erase(it);
  }
}

bool Switch::has_port(PortId port) const {
  return std::find(ports_.begin(), ports_.end(), port) != ports_.end();
}

std::optional<PortId> Switch::lookup(const Mac& mac) const {
  auto it = guests_.find(key(mac.data()));
  if (it == guests_.end()) return std::nullopt;
  return it->second;
}

void Switch::route(PortId ingress, std::span<const uint8_t> frame, std::vector<PortId>* out) {
  out->clear();
  if (frame.size() < kEthHeaderBytes) {
    ++stats_.runts;
    return;
  }
  if (!has_port(ingress)) return;
  const uint8_t* dst = frame.data();
  const uint64_t src = key(frame.data() + 6);
  // The source decides whether the frame goes anywhere at all.
  if (auto mine = mac_of_.find(ingress); mine != mac_of_.end()) {
    if (src != mine->second) {
      ++stats_.spoofed;
      return;
    }
  } else if (guests_.count(src)) {  // from the uplink, posing as a guest
    ++stats_.spoofed;
    return;
  }
  ++stats_.frames;
  if (!is_group(dst)) {
    if (auto it = guests_.find(key(dst)); it != guests_.end()) {
      if (it->second == ingress) {
        ++stats_.hairpin_drops;
        return;
      }
      out->push_back(it->second);
      return;
    }
    // Not a guest: outside, behind the uplink.  From the uplink itself
    // nobody here has it.
    if (uplink_ && *uplink_ != ingress) {
      out->push_back(*uplink_);
    } else {
      ++stats_.unknown_drops;
    }
    return;
  }
  ++stats_.floods;
  for (PortId p : ports_)
    if (p != ingress) out->push_back(p);
}

}  // namespace axl::driverdom::net
