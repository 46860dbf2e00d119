// One virtio-blk device instance served from a disk image (raw or qcow2,
// driverdom/blk/image.h): the device logic
// only (parse request, execute, complete), no event loop.  A malformed
// request is completed with an error status, never a crash.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/unique_fd.h"
#include "driverdom/blk/image.h"
#include "driverdom/blk/io_ring.h"
#include "driverdom/runtime/fault_hooks.h"
#include "driverdom/runtime/fd_watch.h"

namespace axl::driverdom::blk {

struct BlkConfig {
  bool read_only = false;
  std::string serial;  // at most 20 bytes
};

struct BlkStats {
  uint64_t reads = 0, writes = 0, flushes = 0, get_ids = 0;
  uint64_t queued = 0;        // handed to the I/O engine (IoRing)
  uint64_t short_io = 0;      // engine transfers that came back short, redone in place
  uint64_t bad_requests = 0;  // failed validation
  uint64_t io_errors = 0;     // the image fd failed
};

class BlkDevice {
 public:
  // kServing until the request ring index is found corrupted; after that the
  // device answers nothing (the hypervisor will replace the channel).
  enum class State { kServing, kBroken };

  // Requests served per wakeup before yielding to the other fds in the loop.
  static constexpr uint32_t kBudget = 128;

  // `faults` (may be null) bends the responses when a data-path fault is armed.
  BlkDevice(channel::DriverEnd end, std::unique_ptr<Image> image, BlkConfig cfg,
            DataPathFaults* faults = nullptr);
  // A raw image file.
  BlkDevice(channel::DriverEnd end, UniqueFd image, BlkConfig cfg,
            DataPathFaults* faults = nullptr);
  // Reads, writes and flushes of a raw image go through `ring` (many in
  // flight, completed out of order), tagged `(tag << 32) | request id`;
  // whoever reaps the ring hands each completion to complete().  A qcow2
  // image is always served in place, one request at a time.  An Error when
  // the ring has no file slot left.
  Status use_ring(IoRing* ring, uint32_t tag);
  bool uses_ring() const { return ring_ != nullptr; }
  ~BlkDevice();
  BlkDevice(const BlkDevice&) = delete;
  BlkDevice& operator=(const BlkDevice&) = delete;

  // Acknowledges the doorbell, serves queued requests in ring order and kicks
  // once.  Returns true if it stopped on kBudget with requests still queued.
  bool service();

  // One completion of the ring (the low 32 bits of its tag, its result);
  // kick() once after a batch of them.
  void complete(uint32_t id, int32_t res);
  void kick() { end_.kick(); }
  // Requests handed to the ring and not yet completed: the device must
  // outlive them (their buffers are its channel's slots).
  uint32_t in_flight() const { return in_flight_; }
  // For polling (FdWatch::set_poll), a look at shared memory: a request
  // waits in the channel, or a completion on the ring (work); requests in
  // flight on the ring and none done (stop: the kernel's io-wq threads
  // need the CPU, and the ring's fd wakes the loop when they finish).
  FdWatch::Poll poll() const {
    if (end_.more_queued() || (in_flight_ && ring_->ready())) return FdWatch::Poll::kWork;
    return in_flight_ ? FdWatch::Poll::kStop : FdWatch::Poll::kIdle;
  }

  int req_kick_fd() const { return end_.req_kick_fd(); }
  int image_fd() const { return image_->raw_fd(); }
  State state() const { return state_; }
  const BlkStats& stats() const { return stats_; }

 private:
  // The response, or nullopt when the request went to the ring.
  std::optional<channel::Response> execute(const channel::Request& r);
  void answer(const channel::Request& r, const channel::Response& resp);

  channel::DriverEnd end_;
  std::unique_ptr<Image> image_;
  BlkConfig cfg_;
  DataPathFaults* faults_;
  State state_ = State::kServing;
  BlkStats stats_;
  IoRing* ring_ = nullptr;
  unsigned ring_file_ = 0;
  uint64_t tag_ = 0;
  std::vector<std::optional<channel::Request>> queued_;  // by id: on the ring
  uint32_t in_flight_ = 0;
};

}  // namespace axl::driverdom::blk
