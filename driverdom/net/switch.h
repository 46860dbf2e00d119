// The switch between a net driver's guest NICs and its TAP, as Xen's dom0
// bridge is for its guests, but one that trusts no guest:
// - a guest port has its NIC's configured MAC, the only source it may send
//   from (a frame with another source is dropped: no guest can pose as the
//   host, another guest or a station it made up) and, beside broadcast and
//   multicast, the only address that reaches it;
// - every other station is behind the uplink (the TAP), and a frame from it
//   with a guest's source is dropped too;
// - so nothing is learned: forwarding needs no table beyond the configured
//   MACs, which no frame can change or fill.  Unicast to a MAC no guest has
//   goes to the uplink from a guest, and is dropped from the uplink: unknown
//   unicast is never flooded, so no one can make a guest see another's
//   traffic.
// Plain logic, no fds: NetDriver moves the bytes.
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
  uint64_t floods = 0;         // broadcast or multicast sent to every other port
  uint64_t hairpin_drops = 0;  // destination on the ingress port
  uint64_t runts = 0;          // shorter than an Ethernet header
  uint64_t spoofed = 0;        // a source the ingress port may not send from
  uint64_t unknown_drops = 0;  // unicast from the uplink to a MAC no guest has
};

class Switch {
 public:
  // The uplink (the TAP).  At most one; a second replaces the first.
  void add_uplink(PortId port);
  // A guest NIC's port and its configured MAC (a MAC another port has is
  // moved here: the hypervisor, which configures them, is trusted).
  void add_guest(PortId port, const Mac& mac);
  // Removes a port (and its MAC).
  void remove_port(PortId port);
  bool has_port(PortId port) const;

  // Fills `out` with the ports `frame` (an Ethernet frame, no virtio header)
  // goes to, never the ingress port.  An empty `out` means drop.
  void route(PortId ingress, std::span<const uint8_t> frame, std::vector<PortId>* out);

  // The guest port with `mac`, if any.
  std::optional<PortId> lookup(const Mac& mac) const;
  // Configured MACs: one per guest port, whatever the traffic.
  size_t entries() const { return guests_.size(); }
  const SwitchStats& stats() const { return stats_; }

 private:
  static uint64_t key(const uint8_t* mac);

  std::vector<PortId> ports_;  // in insertion order: floods go out deterministically
  std::optional<PortId> uplink_;
  std::unordered_map<uint64_t, PortId> guests_;  // configured MAC -> guest port
  std::unordered_map<PortId, uint64_t> mac_of_;  // guest port -> its MAC
  SwitchStats stats_;
};

}  // namespace axl::driverdom::net
