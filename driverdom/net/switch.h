// A learning Ethernet switch, as Xen's dom0 bridge is for its guests: it
// learns the port of every unicast source MAC, sends unicast to the learned
// port, and floods unknown unicast, broadcast and multicast to every port but
// the ingress one.  Plain logic, no fds: NetDriver moves the bytes.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace axl::driverdom::net {

using PortId = uint64_t;
using Mac = std::array<uint8_t, 6>;

constexpr size_t kEthHeaderBytes = 14;

struct SwitchStats {
  uint64_t frames = 0;         // frames routed
  uint64_t floods = 0;         // frames sent to every other port
  uint64_t hairpin_drops = 0;  // destination learned on the ingress port
  uint64_t runts = 0;          // shorter than an Ethernet header
  uint64_t table_full = 0;     // a source not learned because the table is full
  uint64_t spoofed = 0;        // a pinned MAC seen as source on another port
};

class Switch {
 public:
  // Bounds the table so a flood of random source MACs from the TAP cannot
  // grow it without limit; past it, new sources are simply flooded to.
  static constexpr size_t kDefaultMaxEntries = 4096;

  explicit Switch(size_t max_entries = kDefaultMaxEntries) : max_entries_(max_entries) {}

  void add_port(PortId port);
  // Removes a port and forgets every MAC learned or pinned on it.
  void remove_port(PortId port);
  bool has_port(PortId port) const;

  // A static entry (a guest NIC's configured MAC): learning never moves it,
  // so another port sending with that source cannot steal its traffic.
  void pin(const Mac& mac, PortId port);

  // Learns the source of `frame` (an Ethernet frame, no virtio header) and
  // fills `out` with the ports it goes to, never the ingress port.  An empty
  // `out` means drop.
  void route(PortId ingress, std::span<const uint8_t> frame, std::vector<PortId>* out);

  std::optional<PortId> lookup(const Mac& mac) const;
  size_t entries() const { return table_.size(); }
  const SwitchStats& stats() const { return stats_; }

 private:
  struct Entry {
    PortId port;
    bool pinned;
  };
  static uint64_t key(const uint8_t* mac);
  void learn(PortId ingress, const uint8_t* src);

  size_t max_entries_;
  std::vector<PortId> ports_;  // in insertion order: floods go out deterministically
  std::unordered_map<uint64_t, Entry> table_;
  SwitchStats stats_;
};

}  // namespace axl::driverdom::net
