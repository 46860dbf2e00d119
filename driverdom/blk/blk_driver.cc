#include "driverdom/blk/blk_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"

namespace axl::driverdom::blk {

Status check_image_fd(int fd, bool read_only) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) return make_error(std::string("image fd: ") + strerror(errno));
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return make_error("image fd is neither a regular file nor a block device");
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return make_error(std::string("image fd: ") + strerror(errno));
  int mode = fl & O_ACCMODE;
  if (mode == O_WRONLY) return make_error("image fd is write-only");
  if (!read_only && mode != O_RDWR) return make_error("image fd is not open for writing");
  return {};
}

Status BlkDriver::attach(const AttachSpec& spec, channel::DriverEnd end,
                         std::vector<UniqueFd> extra) {
  const std::vector<std::string> formats =
      spec.blk.formats.empty() ? std::vector<std::string>{"raw"} : spec.blk.formats;
  if (extra.size() != formats.size())
    return make_error("blk attach carries " + std::to_string(extra.size()) + " image fds for " +
                      std::to_string(formats.size()) + " formats");
  for (size_t i = 0; i < extra.size(); ++i)
    if (auto s = check_image_fd(extra[i].get(), spec.blk.read_only || i > 0); !s) return s;
  // Its contents are untrusted: a qcow2 chain is checked whole before it serves.
  auto image = open_fds(std::move(extra), formats, spec.blk.read_only);
  if (!image) return make_error("image: " + image.error().message);
  Instance inst;
  inst.device =
      std::make_unique<BlkDevice>(std::move(end), std::move(image).value(),
                                  BlkConfig{spec.blk.read_only, spec.blk.serial}, faults_);
  BlkDevice* dev = inst.device.get();
  uint32_t id = spec.device_id;
  inst.watch = std::make_unique<FdWatch>(io_, dev->req_kick_fd(),
                                         "blk device " + std::to_string(id) + " doorbell",
                                         [dev] { return dev->service(); });
  if (auto s = inst.watch->start(); !s) return s;
  if (!devices_.emplace(id, std::move(inst)).second) return make_error("device id already in use");
  return {};
}

bool BlkDriver::detach(uint32_t device_id) {
  auto it = devices_.find(device_id);
  if (it == devices_.end()) return false;
  it->second.watch.reset();
  devices_.erase(it);
  return true;
}

}  // namespace axl::driverdom::blk
