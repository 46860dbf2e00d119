// One virtio-blk device instance served from a disk image (raw or qcow2,
// driverdom/blk/image.h): the device logic
// only (parse request, execute, complete), no event loop.  A malformed
// request is completed with an error status, never a crash.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "channel/channel.h"
#include "common/unique_fd.h"
#include "driverdom/blk/image.h"
#include "driverdom/runtime/fault_hooks.h"

namespace axl::driverdom::blk {

struct BlkConfig {
  bool read_only = false;
  std::string serial;  // at most 20 bytes
};

struct BlkStats {
  uint64_t reads = 0, writes = 0, flushes = 0, get_ids = 0;
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
  ~BlkDevice();
  BlkDevice(const BlkDevice&) = delete;
  BlkDevice& operator=(const BlkDevice&) = delete;

  // Acknowledges the doorbell, serves queued requests in ring order and kicks
  // once.  Returns true if it stopped on kBudget with requests still queued.
  bool service();

  int req_kick_fd() const { return end_.req_kick_fd(); }
  State state() const { return state_; }
  const BlkStats& stats() const { return stats_; }

 private:
  channel::Response execute(const channel::Request& r);

  channel::DriverEnd end_;
  std::unique_ptr<Image> image_;
  BlkConfig cfg_;
  DataPathFaults* faults_;
  State state_ = State::kServing;
  BlkStats stats_;
};

}  // namespace axl::driverdom::blk
