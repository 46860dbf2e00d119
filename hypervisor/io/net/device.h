// virtio-net device logic (virtio 1.2 §5.1) over a driver-domain channel.
// Queue 2k is receiveq(k+1), queue 2k+1 transmitq(k+1), for each of the
// device's queue pairs (VIRTIO_NET_F_MQ; QEMU keeps the control queue).
// Channel frames carry a 12-byte struct virtio_net_hdr_v1 (§5.1.6) first,
// then the Ethernet frame.
//
// The first half of the channel slots stay posted to the driver as RX
// buffers (kNetRxPost); the other half carry TX frames.  A received frame
// waits in its slot until the guest has RX buffers for it, then is copied in
// (spread over several chains with VIRTIO_NET_F_MRG_RXBUF) and the slot is
// posted again.  Checksum and TCP segmentation offloads are offered both
// ways; a received header is sanitized for what the guest negotiated
// (offload.h) before the guest sees it.
//
// Every queue pair shares the one channel.  Transmit queues are served
// round robin for TX slots; a received frame goes to the receive queue its
// flow hashes to (steer.h), among those the guest has enabled, and waits
// there for that queue's buffers.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "channel/channel.h"
#include "hypervisor/guest_device.h"
#include "hypervisor/io/device_host.h"
#include "hypervisor/io/driver_port.h"
#include "hypervisor/io/net/offload.h"
#include "hypervisor/io/virtio/virtqueue.h"

namespace axl::hv::io::net {

constexpr unsigned kFMrgRxbuf = 15;
constexpr unsigned kFMq = 22;
constexpr uint32_t kHdrBytes = 12;  // virtio_net_hdr_v1
constexpr uint32_t kSlots = 256;
// Header + the largest TSO frame (14-byte Ethernet + 65535-byte IP packet),
// rounded up to 64 bytes.
constexpr uint32_t kSlotSize = 65600;
constexpr uint32_t kRxQueue = 0;  // the first pair's; pair k: 2k and 2k + 1
constexpr uint32_t kTxQueue = 1;

class NetDevice final : public DeviceLogic {
 public:
  // io_timeout_ms: the progress watchdog's deadline for TX frames (0: none).
  NetDevice(NetDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms = 0);

  uint64_t features() const override;
  uint32_t queue_count() const override { return 2 * uint32_t(rxq_.size()); }
  // QEMU's virtio-net keeps its own config space (MAC, status) for
  // vhost-user: CONFIG is not offered.
  uint64_t protocol_features() const override {
    return virtio::bit(vhost_user::kPfReplyAck) | virtio::bit(vhost_user::kPfMq);
  }
  void set_acked_features(uint64_t f) override;
  void queue_started(uint32_t index, virtio::Virtqueue& vq) override;
  void queue_stopped(uint32_t index) override;
  void queue_kicked(uint32_t index) override;
  std::vector<int> extra_fds() const override;
  void extra_fd_ready(int fd) override;
  DeviceStats stats() const override;
  Status rebind(channel::HvEnd chan) override;

  bool quarantined() const { return port_.quarantined(); }

 private:
  // Counted, and logged as worth_logging() says (a guest can repeat it at will).
  void bad_chain(const char* ring, const char* why);
  // What the device keeps of each slot (the port keeps the channel request).
  enum class Use : uint8_t { kFree, kRxPosted, kRxFilled, kTx };
  struct Slot {
    Use use = Use::kFree;
    uint32_t queue = 0;      // TX: the pair whose transmit queue the chain came from
    uint64_t queue_gen = 0;  // TX: and that ring's incarnation
    virtio::Chain chain;     // TX: the guest chain to complete
  };
  struct Filled {
    uint32_t id;
    uint32_t len;
  };
  struct RxQueue {
    virtio::Virtqueue* vq = nullptr;
    std::deque<Filled> filled;        // frames waiting for this queue's buffers, in order
    std::vector<virtio::Chain> held;  // popped chains not yet used (MRG_RXBUF)
    uint64_t held_bytes = 0;
  };
  struct TxQueue {
    virtio::Virtqueue* vq = nullptr;
    uint64_t gen = 0;
    bool done = false;  // completions pushed in the current batch of answers
  };

  void post_rx(uint32_t id);
  void process_tx();  // every transmit queue, round robin
  void process_tx(uint32_t pair);
  void drain_tx(uint32_t pair);
  void deliver_rx();  // every receive queue with frames waiting
  void deliver_rx(uint32_t pair);
  bool deliver_one(RxQueue& q, const Filled& f);
  // The receive queue for a frame of the given flow hash: one of those
  // started, or the first pair's while none is.
  uint32_t steer(uint32_t hash) const;
  // Frames waiting on receive queues that are not started move to one that
  // is (the guest enabled fewer pairs), so no slot waits for a ring that
  // may never come back.
  void rehome_rx();
  void on_answer(uint32_t id, const channel::Request& req, const channel::Response& resp);
  // After a batch of answers: complete TX, deliver RX, let waiting frames in.
  void after_answers();
  // Clears offload requests the guest did not negotiate from a TX header:
  // they are not asked of the TAP or of other guests on its behalf.
  void sanitize_tx(uint32_t id);

  NetDeviceSpec spec_;
  DriverPort port_;
  DriverPort::OnAnswer on_answer_;
  uint32_t rx_slots_;
  std::vector<Slot> slots_;
  std::deque<uint32_t> tx_free_;
  std::vector<RxQueue> rxq_;
  std::vector<TxQueue> txq_;
  uint32_t next_tx_ = 0;  // where the next round robin pass starts
  bool rx_new_ = false;   // frames arrived in the current batch of answers
  bool mrg_rxbuf_ = false;
  GuestOffloads offloads_;
  bool host_csum_ = false, host_tso_ = false;

  std::atomic<uint64_t> frames_{0}, bytes_{0}, bad_descriptors_{0}, rx_dropped_{0};
};

}  // namespace axl::hv::io::net
