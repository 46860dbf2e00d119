// The contract between the vhost-user protocol state machine (handler.h) and
// a device (blk/, net/), after rust-vmm's VhostUserBackend: the handler owns
// the protocol, memory table and rings; the device owns only device logic.
// Every method runs on the device thread.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "hypervisor/io/vhost_user/protocol.h"
#include "hypervisor/io/virtio/virtqueue.h"

namespace axl::vhost_user {

class Backend {
 public:
  virtual ~Backend() = default;

  // Virtio feature bits the device offers (the handler adds
  // VHOST_USER_F_PROTOCOL_FEATURES itself).
  virtual uint64_t features() const = 0;
  virtual uint64_t protocol_features() const {
    return virtio::bit(kPfReplyAck) | virtio::bit(kPfConfig) | virtio::bit(kPfMq);
  }
  virtual uint32_t queue_count() const = 0;
  // The largest ring size the device accepts (≤ 32768, a power of two).
  virtual uint32_t max_queue_size() const { return virtio::kMaxQueueSize; }

  virtual Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) {
    return make_error("device has no config space");
  }
  virtual Status set_config(uint32_t offset, std::span<const uint8_t> data) {
    return make_error("config space is read-only");
  }
  // SET_FEATURES accepted (only offered bits reach here).
  virtual void set_acked_features(uint64_t features) {}

  // A ring became live (kick fd arrived, enabled, addresses valid) or stopped
  // (GET_VRING_BASE, disable, disconnect).  `vq` stays valid until stopped.
  virtual void queue_started(uint32_t index, virtio::Virtqueue& vq) = 0;
  virtual void queue_stopped(uint32_t index) = 0;
  // The guest kicked the ring (the eventfd is already drained).
  virtual void queue_kicked(uint32_t index) = 0;

  // More fds for the device thread to poll (the channel's response doorbell),
  // and the callback when one is readable.
  virtual std::vector<int> extra_fds() const { return {}; }
  virtual void extra_fd_ready(int fd) {}
};

}  // namespace axl::vhost_user
