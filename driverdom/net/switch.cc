#include "driverdom/net/switch.h"

#include <algorithm>

namespace axl::driverdom::net {

namespace {
// IEEE 802: the I/G bit (bit 0 of the first octet) marks group addresses.
bool is_group(const uint8_t* mac) { return mac[0] & 1; }
bool is_zero(const uint8_t* mac) {
  return std::all_of(mac, mac + 6, [](uint8_t b) { return b == 0; });
}
}  // namespace

uint64_t Switch::key(const uint8_t* mac) {
  uint64_t k = 0;
  for (int i = 0; i < 6; ++i) k = (k << 8) | mac[i];
  return k;
}

void Switch::add_port(PortId port) {
  if (!has_port(port)) ports_.push_back(port);
}

void Switch::remove_port(PortId port) {
  ports_.erase(std::remove(ports_.begin(), ports_.end(), port), ports_.end());
  std::erase_if(table_, [port](const auto& kv) { return kv.second.port == port; });
}

bool Switch::has_port(PortId port) const {
  return std::find(ports_.begin(), ports_.end(), port) != ports_.end();
}

void Switch::pin(const Mac& mac, PortId port) { table_[key(mac.data())] = Entry{port, true}; }

std::optional<PortId> Switch::lookup(const Mac& mac) const {
  auto it = table_.find(key(mac.data()));
  if (it == table_.end()) return std::nullopt;
  return it->second.port;
}

void Switch::learn(PortId ingress, const uint8_t* src) {
  // A group or all-zero source is not a station; never learn it.
  if (is_group(src) || is_zero(src)) return;
  auto it = table_.find(key(src));
  if (it != table_.end()) {
    if (it->second.port == ingress) return;
    if (it->second.pinned) {
      ++stats_.spoofed;
      return;
    }
    it->second.port = ingress;  // the station moved
    return;
  }
  if (table_.size() >= max_entries_) {
    ++stats_.table_full;
    return;
  }
  table_.emplace(key(src), Entry{ingress, false});
}

void Switch::route(PortId ingress, std::span<const uint8_t> frame, std::vector<PortId>* out) {
  out->clear();
  if (frame.size() < kEthHeaderBytes) {
    ++stats_.runts;
    return;
  }
  if (!has_port(ingress)) return;
  const uint8_t* dst = frame.data();
  const uint8_t* src = frame.data() + 6;
  learn(ingress, src);
  ++stats_.frames;
  if (!is_group(dst)) {
    auto it = table_.find(key(dst));
    if (it != table_.end()) {
      if (it->second.port == ingress) {
        ++stats_.hairpin_drops;
        return;
      }
      out->push_back(it->second.port);
      return;
    }
  }
  ++stats_.floods;
  for (PortId p : ports_)
    if (p != ingress) out->push_back(p);
}

}  // namespace axl::driverdom::net
