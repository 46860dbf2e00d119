// virtio-blk device logic (virtio 1.2 §5.2) over a driver-domain channel.
//
// Every request popped from the guest takes a free in-flight id (= channel
// slot); data moves guest->pool before a write is pushed and pool->guest
// after a read completes; the status byte is written last.  Requests go to
// the channel in the order they were popped; the driver keeps a flush behind
// every request sent before it (§5.2.6.2).  When all slots are busy requests
// simply wait in their virtqueue.
//
// With several request queues (VIRTIO_BLK_F_MQ, §5.2.5) every queue shares
// the one channel and its slots; a request remembers the queue (and the
// queue's incarnation) it came from, and is completed there.  Queues are
// served round robin, so a busy queue cannot starve another of slots.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "channel/channel.h"
#include "hypervisor/guest_device.h"
#include "hypervisor/io/device_host.h"
#include "hypervisor/io/driver_port.h"
#include "hypervisor/io/virtio/virtqueue.h"

namespace axl::hv::io::blk {

// virtio-blk feature bits (§5.2.3) and request types/status (§5.2.6).
constexpr unsigned kFSizeMax = 1;
constexpr unsigned kFSegMax = 2;
constexpr unsigned kFRo = 5;
constexpr unsigned kFBlkSize = 6;
constexpr unsigned kFFlush = 9;
constexpr unsigned kFMq = 12;
constexpr uint32_t kTIn = 0;
constexpr uint32_t kTOut = 1;
constexpr uint32_t kTFlush = 4;
constexpr uint32_t kTGetId = 8;
constexpr uint8_t kSOk = 0;
constexpr uint8_t kSIoErr = 1;
constexpr uint8_t kSUnsupp = 2;
constexpr uint32_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES

// A request's data always fits one slot: seg_max segments of size_max bytes.
// 256 x 4 KiB: a guest's 1 MiB request (its pages scattered, one segment
// each) reaches the driver domain whole.  The chain is then 258 descriptors,
// so the queue is larger than that (a chain is no longer than the queue,
// virtio 1.2 §2.7.5.3.1): 512.  The pool is 64 MiB of memfd, touched only as
// far as requests use it.
constexpr uint32_t kSlots = 64;
constexpr uint32_t kSizeMax = 4096;
constexpr uint32_t kSegMax = 256;
// The queue size QEMU is given for a disk, with or without a guest IOMMU
// (through one, ring parts larger than a page are accessed page by page:
// Virtqueue::RingPart).
constexpr uint32_t kQueueSize = 512;
constexpr uint32_t kSlotSize = kSizeMax * kSegMax;

class BlkDevice final : public DeviceLogic {
 public:
  // io_timeout_ms: the progress watchdog's deadline (0: none).
  BlkDevice(BlkDeviceSpec spec, channel::HvEnd chan, uint32_t io_timeout_ms = 0);

  uint64_t features() const override;
  uint32_t queue_count() const override { return uint32_t(queues_.size()); }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override;
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
  void bad_chain(const char* why);
  // What the device keeps of a request at the driver (the port keeps the
  // channel request itself).
  // A guest request larger than a slot (a driver that did not negotiate
  // SIZE_MAX/SEG_MAX, as OVMF's, may send one of many MiB) goes to the
  // driver as several requests of a slot each; it completes, with the worst
  // status, once every part has.
  struct Split {
    virtio::Chain chain;
    uint64_t status_off = 0;
    uint32_t parts_left = 0;
    uint8_t status = 0;  // kSOk until a part fails
    uint64_t bytes = 0;  // read back to the guest so far
  };
  // One request queue: its ring while started, the ring's incarnation, and
  // a request waiting for enough free slots for all its parts (nothing more
  // is popped from this queue until it went).
  struct Queue {
    virtio::Virtqueue* vq = nullptr;
    uint64_t gen = 0;
    std::optional<virtio::Chain> waiting;
  };
  struct Inflight {
    uint32_t queue = 0;      // the queue the chain came from
    uint64_t queue_gen = 0;  // and that queue's ring incarnation
    virtio::Chain chain;
    uint64_t status_off = 0;       // stream offset of the status byte
    std::shared_ptr<Split> split;  // set for a part of a split request
    uint64_t part_off = 0;         // the part's offset in the request's data
  };
  // The queue a request came from, while that ring is still the one it
  // came from (nullptr: the ring is gone, nobody waits for the request).
  Queue* live_queue(const Inflight& f);
  void part_done(uint32_t id, uint8_t status, uint64_t read_bytes);

  void process();
  // Pops queue q's requests while slots are free.
  void process_queue(uint32_t q);
  // Waits (bounded) for the driver to finish every request of queue q's
  // current ring, so GET_VRING_BASE hands back a ring with nothing in flight.
  void drain_ring(uint32_t q);
  void submit(uint32_t q, virtio::Chain chain);
  void submit_split(uint32_t q, virtio::Chain chain, channel::Request req, uint64_t sector,
                    uint64_t data_len, uint64_t status_off);
  void complete_now(Queue& q, const virtio::Chain& chain, uint64_t status_off, uint8_t status,
                    uint32_t used_len);
  void notify_all();
  void finish(uint32_t id, const channel::Request& req, const channel::Response& r);

  BlkDeviceSpec spec_;
  uint64_t capacity_sectors_;
  DriverPort port_;
  DriverPort::OnAnswer on_answer_;
  std::vector<Inflight> inflight_;
  std::deque<uint32_t> free_;
  std::vector<Queue> queues_;
  uint32_t next_queue_ = 0;  // where the next round robin pass starts

  std::atomic<uint64_t> requests_{0}, bytes_{0}, bad_descriptors_{0};
};

}  // namespace axl::hv::io::blk
