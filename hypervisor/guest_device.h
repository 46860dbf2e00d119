// The hypervisor's guest-facing devices, as the domain engine sees them.
//
// A GuestDevice is the vhost-user backend of one guest device: it listens on a
// Unix socket that QEMU connects to (QEMU is the vhost-user front-end), runs
// the protocol on its own thread, processes the guest's virtqueues and
// forwards I/O to a driver domain over a channel (channel/channel.h).  The
// device, not the driver, owns every guest-visible state (virtqueue indices,
// features, in-flight table), so a driver can be replaced under it.
#pragma once
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "channel/channel.h"
#include "common/result.h"
#include "hypervisor/io/vhost_user/session.h"

namespace axl::hv {

struct BlkDeviceSpec {
  uint64_t capacity_bytes = 0;  // multiple of 512
  bool read_only = false;
  std::string serial;  // VIRTIO_BLK_T_GET_ID, at most 20 bytes
  // The guest's logical block size (virtio-blk blk_size): 512, or what
  // direct I/O on the image needs (cache = "none", blk::use_direct_io).
  uint32_t block_size = 512;
  // The virtqueue size QEMU is given (io::blk::kQueueSize): seg_max stays
  // below it, so no chain is longer than the queue.
  uint32_t queue_size = 512;
  // Request queues (VIRTIO_BLK_F_MQ, 1..kMaxBlkQueues): one per vCPU lets a
  // guest submit from every vCPU without sharing a ring.  Every queue goes
  // to the same driver channel.
  uint32_t queues = 1;
};
constexpr uint32_t kMaxBlkQueues = 16;  // vhost_user::Handler::kMaxQueues

struct NetDeviceSpec {
  std::array<uint8_t, 6> mac{};
  // Queue pairs (VIRTIO_NET_F_MQ, 1..kMaxNetQueuePairs): a receive and a
  // transmit queue each; every pair goes to the same driver channel.
  uint32_t queue_pairs = 1;
};
constexpr uint32_t kMaxNetQueuePairs = 8;  // 16 rings: vhost_user::Handler::kMaxQueues

struct DeviceStats {
  uint64_t requests = 0;         // guest requests completed
  uint64_t bytes = 0;            // guest payload bytes moved
  uint64_t bad_descriptors = 0;  // guest descriptors rejected
  uint64_t iommu_faults = 0;     // copy-engine faults
  uint64_t iotlb_updates = 0;    // guest IOMMU: IOTLB updates from the front-end
  uint64_t iotlb_invalidates = 0;
  uint64_t iotlb_misses = 0;  // misses asked of the front-end
  uint64_t driver_violations = 0;
  uint64_t rebinds = 0;          // moves to a fresh channel (driver restarts)
  uint64_t last_rebind_ns = 0;   // CLOCK_MONOTONIC of the last rebind
  uint64_t first_served_ns = 0;  // first completion after it (0: none yet)
};

// How the hypervisor watches a device's driver.  A device that catches its
// driver breaking the channel protocol (or making no progress past
// io_timeout_ms) quarantines the channel and calls on_quarantine, on the
// device thread, with the cause and the owner tag of the channel's driver
// instance (given at creation and at every rebind), so a late report about
// a replaced instance can be told apart from one about the current one.
struct DeviceSupervision {
  uint32_t io_timeout_ms = 0;  // 0: no progress watchdog
  uint32_t poll_us = 0;        // the device thread's polling window (0: none)
  int owner = 0;
  std::function<void(const std::string& cause, int owner)> on_quarantine;
  // The first completion after each rebind (the end of an outage as the guest
  // sees it), on the device thread: CLOCK_MONOTONIC ns of the rebind and of it.
  std::function<void(uint64_t rebind_ns, uint64_t served_ns, int owner)> on_first_served;
};

class GuestDevice {
 public:
  virtual ~GuestDevice() = default;  // stops the thread, closes and unlinks the socket
  // Creates the listening socket (it exists when this returns) and starts the thread.
  virtual Status start() = 0;
  // The uid and gid QEMU runs as (set before start()).
  virtual void set_front_end(uid_t uid, gid_t gid) = 0;
  // Keeps the device's vhost-user session for a successor of this process
  // (hypervisor/io/vhost_user/session.h); set before start() or resume().
  virtual void set_keeper(std::unique_ptr<vhost_user::SessionKeeper> keeper) = 0;
  // Instead of start(): resumes the session a predecessor kept.
  virtual Status resume(vhost_user::KeptSession kept) = 0;
  virtual DeviceStats stats() const = 0;
  // Moves the device to a fresh channel (a restarted driver domain, tagged
  // `owner`) and replays every request still in flight, in the order first sent.
  virtual Status rebind(channel::HvEnd chan, int owner) = 0;
};

std::unique_ptr<GuestDevice> make_blk_device(std::string socket_path, BlkDeviceSpec spec,
                                             channel::HvEnd chan, DeviceSupervision sup = {});
std::unique_ptr<GuestDevice> make_net_device(std::string socket_path, NetDeviceSpec spec,
                                             channel::HvEnd chan, DeviceSupervision sup = {});

}  // namespace axl::hv

namespace axl::hv {
// Channel geometry each device kind needs (slots = max requests in flight,
// slot_size = max bytes one request carries). The domain engine creates the
// channel with these values before calling make_*_device().
struct ChannelShape {
  uint32_t slots;
  uint32_t slot_size;
};
ChannelShape blk_channel_shape();
ChannelShape net_channel_shape();
}  // namespace axl::hv
