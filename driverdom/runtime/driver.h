// The contract between the runtime (control socket, event loop) and a driver
// kind (blk, net).  The runtime parses and validates control messages, maps
// the channel and hands the driver a ready DriverEnd; it never branches on
// device type beyond choosing which Driver to build in main().
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::driverdom {

enum class Kind { kNet, kBlk };

const char* kind_name(Kind k);

struct NetAttachSpec {
  std::array<uint8_t, 6> mac{};
};

struct BlkAttachSpec {
  bool read_only = false;
  std::string serial;  // at most 20 bytes (VIRTIO_BLK_T_GET_ID)
  // "raw" or "qcow2" per image fd: the disk, then its backing chain; empty:
  // one raw image.
  std::vector<std::string> formats;
  // "auto", "io_uring" or "sync" (config::DiskConfig::aio).
  std::string aio = "auto";
};

// A validated DriverMsg.attach, fds not included.
struct AttachSpec {
  uint32_t device_id = 0;
  uint32_t slots = 0;
  uint32_t slot_size = 0;
  Kind kind = Kind::kNet;
  NetAttachSpec net;
  BlkAttachSpec blk;
};

class Driver {
 public:
  virtual ~Driver() = default;
  // Fds an attach carries beyond the three channel fds (blk: the image and
  // its backing chain, one per format named).
  virtual size_t extra_fds(const AttachSpec& spec) const = 0;
  // Takes over a device; the runtime guarantees spec.kind matches, the
  // device id is new and `extra.size() == extra_fds(spec)`.
  virtual Status attach(const AttachSpec& spec, channel::DriverEnd end,
                        std::vector<UniqueFd> extra) = 0;
  // Drops a device; false if there was none with that id.
  virtual bool detach(uint32_t device_id) = 0;
  // The polling window of every channel attached from now on (FdWatch::set_poll).
  void set_poll_us(uint32_t us) { poll_us_ = us; }

 protected:
  uint32_t poll_us_ = 0;
};

}  // namespace axl::driverdom
