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
  explicit BlkDriver(boost::asio::io_context& io, DataPathFaults* faults = nullptr)
      : io_(io), faults_(faults) {}
  // The image and its backing chain.
  size_t extra_fds(const AttachSpec& spec) const override {
    return spec.blk.formats.empty() ? 1 : spec.blk.formats.size();
  }
  Status attach(const AttachSpec& spec, channel::DriverEnd end,
                std::vector<UniqueFd> extra) override;
  bool detach(uint32_t device_id) override;

 private:
  struct Instance {
    std::unique_ptr<BlkDevice> device;
    std::unique_ptr<FdWatch> watch;  // declared last: goes first, before the fd it watches
  };
  boost::asio::io_context& io_;
  DataPathFaults* faults_;
  std::map<uint32_t, Instance> devices_;
};

// Checks that an image fd is a regular file or block device opened with the
// access mode the device needs.
Status check_image_fd(int fd, bool read_only);

}  // namespace axl::driverdom::blk
