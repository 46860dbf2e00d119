// Receive steering for a multi-queue virtio-net device (virtio 1.2 §5.1.6.5.5,
// without RSS: the device picks the receive queue).  A flow's frames keep to
// one queue, so TCP sees them in order, and different flows spread over the
// queues the guest enabled.
#pragma once
#include <cstdint>
#include <span>

namespace axl::hv::io::net {

// A hash of the frame's flow: IPv4 or IPv6 source and destination, the
// protocol, and for TCP and UDP (unfragmented) the ports.  `frame` is the
// Ethernet frame (an 802.1Q tag is skipped).  Frames that are not IP, or too
// short to parse, hash to 0.  Untrusted input: every read is bounds-checked.
uint32_t flow_hash(std::span<const uint8_t> frame);

}  // namespace axl::hv::io::net
