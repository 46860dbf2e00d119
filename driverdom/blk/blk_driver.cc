#include "driverdom/blk/blk_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include <algorithm>

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

BlkDriver::BlkDriver(boost::asio::io_context& io, DataPathFaults* faults,
                     std::unique_ptr<IoRing> ring)
    : io_(io), faults_(faults), ring_(std::move(ring)) {
  if (!ring_) return;
  ring_watch_ = std::make_unique<FdWatch>(io_, ring_->fd(), "blk io_uring completions", [this] {
    reap(false);
    return false;
  });
  if (auto s = ring_watch_->start(); !s) {
    AXL_WARN("blk: %s; serving every request in place", s.error().message.c_str());
    ring_watch_.reset();
    ring_.reset();
  }
}

BlkDriver::~BlkDriver() {
  // Their buffers are the devices' channels: nothing may be in flight when
  // those are unmapped.
  for (auto& [id, inst] : devices_)
    while (inst.device->in_flight()) reap(true);
}

namespace {
// An escape attempt's outcome: a refusal is expected, anything else is an error.
void log_escape(const std::string& line) {
  if (line.find("SUCCEEDED") != std::string::npos)
    AXL_ERROR("%s", line.c_str());
  else
    AXL_WARN("%s", line.c_str());
}
}  // namespace

void BlkDriver::reap(bool wait) {
  std::vector<BlkDevice*> touched;
  for (const IoRing::Completion& c : ring_->reap(wait)) {
    if (c.tag >= IoRing::kEscapeTag) {
      log_escape(IoRing::escape_result(c));
      continue;
    }
    auto it = devices_.find(uint32_t(c.tag >> 32));
    if (it == devices_.end()) continue;
    BlkDevice* dev = it->second.device.get();
    dev->complete(uint32_t(c.tag), c.res);
    if (std::find(touched.begin(), touched.end(), dev) == touched.end()) touched.push_back(dev);
  }
  for (BlkDevice* dev : touched) dev->kick();
}

bool BlkDriver::try_ring_escape(const std::string& host_path) {
  if (!ring_) return false;
  // A file that a plain read would succeed on: a device's image.
  int unregistered_fd = ring_->fd();
  for (auto& [id, inst] : devices_)
    if (inst.device->image_fd() >= 0) unregistered_fd = inst.device->image_fd();
  AXL_WARN("escape uring-escape: attempting io_uring operations outside its restrictions");
  log_escape(ring_->try_forbidden(host_path, unregistered_fd));
  return true;
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
  // The engine (config::DiskConfig::aio): "auto" takes the ring where
  // there is one; "io_uring" insists on it.
  const bool raw = formats.size() == 1 && formats[0] == "raw";
  if (spec.blk.aio == "io_uring" && (!ring_ || !raw))
    return make_error(!raw ? "aio = \"io_uring\" serves raw images only"
                           : "aio = \"io_uring\": this driver domain has no io_uring");
  if (spec.blk.aio != "sync" && ring_ && raw && id < (IoRing::kEscapeTag >> 32)) {
    if (auto s = dev->use_ring(ring_.get(), id); !s) {
      if (spec.blk.aio == "io_uring") return s;
      AXL_WARN("blk device %u: %s; served in place", id, s.error().message.c_str());
    }
  }
  // What the kernel finished during the submission (a read the page cache
  // answered) is handed back in the same wake-up.
  inst.watch = std::make_unique<FdWatch>(
      io_, dev->req_kick_fd(), "blk device " + std::to_string(id) + " doorbell", [this, dev] {
        const bool more = dev->service();
        if (dev->in_flight()) reap(false);
        return more;
      });
  if (poll_us_)
    inst.watch->set_poll(std::chrono::microseconds(poll_us_), [dev] { return dev->poll(); });
  if (auto s = inst.watch->start(); !s) return s;
  if (!devices_.emplace(id, std::move(inst)).second) return make_error("device id already in use");
  return {};
}

bool BlkDriver::detach(uint32_t device_id) {
  auto it = devices_.find(device_id);
  if (it == devices_.end()) return false;
  it->second.watch.reset();
  while (it->second.device->in_flight()) reap(true);
  devices_.erase(it);
  return true;
}

}  // namespace axl::driverdom::blk
