// The blk driver kind: BlkDevices, one per attach, each woken by its
// channel's request doorbell.
#pragma once
#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>

#include "driverdom/blk/blk_device.h"
#include "driverdom/runtime/driver.h"
#include "driverdom/runtime/fd_watch.h"

namespace axl::driverdom::blk {

class BlkDriver final : public Driver {
 public:
  // `faults` (may be null): the data-path fault hooks every device answers through.
  // `ring` (may be null: every device is then served in place) is the I/O
  // engine its raw images go through (io_ring.h); made before the sandbox.
  explicit BlkDriver(boost::asio::io_context& io, DataPathFaults* faults = nullptr,
                     std::unique_ptr<IoRing> ring = nullptr);
  ~BlkDriver() override;
  // The image and its backing chain.
  size_t extra_fds(const AttachSpec& spec) const override {
    return spec.blk.formats.empty() ? 1 : spec.blk.formats.size();
  }
  Status attach(const AttachSpec& spec, channel::DriverEnd end,
                std::vector<UniqueFd> extra) override;
  bool detach(uint32_t device_id) override;

  IoRing* ring() const { return ring_.get(); }
  // The uring-escape fault hook (fault_hooks.h): what the ring's
  // restrictions refuse, logged as each answer comes: an openat of
  // `host_path`, a read of a device's image through its ordinary fd (not
  // the registered one), a registration.  False without a ring.
  bool try_ring_escape(const std::string& host_path);

 private:
  struct Instance {
    std::unique_ptr<BlkDevice> device;
    std::unique_ptr<FdWatch> watch;  // declared last: goes first, before the fd it watches
  };
  // Hands every waiting completion to its device (with `wait`, at least one).
  void reap(bool wait);

  boost::asio::io_context& io_;
  DataPathFaults* faults_;
  std::map<uint32_t, Instance> devices_;
  std::unique_ptr<IoRing> ring_;
  std::unique_ptr<FdWatch> ring_watch_;  // after ring_: goes first
};

// Checks that an image fd is a regular file or block device opened with the
// access mode the device needs.
Status check_image_fd(int fd, bool read_only);

}  // namespace axl::driverdom::blk
