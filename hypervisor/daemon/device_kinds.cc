#include "hypervisor/daemon/device_kinds.h"

#include <fcntl.h>

#include "common/schema/driver.capnp.h"
#include "hypervisor/io/blk/device.h"

namespace axl::hv {
namespace {

Status blk_attach(const DeviceRequest& req, DriverConnection::AttachArgs& args) {
  if (!req.image) return make_error("blk device without an image fd");
  // No host readahead on the image (the open file description travels to
  // the driver): the guest reads ahead itself, and on a sparse image the
  // host's readahead zero-fills large folios inside the driver's pread, tens
  // of ms of CPU in one system call on a loaded host, which a health check
  // cannot tell from a spinning loop (docs/architecture.md, "Hang detection").
  (void)::posix_fadvise(req.image.get(), 0, 0, POSIX_FADV_RANDOM);
  args.fds.push_back(req.image.get());
  for (const auto& b : req.backing) args.fds.push_back(b.get());
  const bool ro = req.blk.read_only;
  const std::string serial = req.blk.serial;
  const std::vector<std::string> formats = req.formats;
  const std::string aio = req.aio;
  args.kind_part = [ro, serial, formats, aio](schema::Attach::Builder at) {
    auto b = at.initBlk();
    b.setReadOnly(ro);
    b.setSerial(serial);
    b.setAio(aio);
    auto f = b.initFormats(unsigned(formats.size()));
    for (unsigned i = 0; i < formats.size(); ++i) f.set(i, formats[i]);
  };
  return {};
}

void blk_qemu(const QemuDevice& d, const std::string& chardev, const std::string&,
              const std::string& props, std::vector<std::string>& a) {
  a.push_back("-device");
  a.push_back("vhost-user-blk-pci,chardev=" + chardev + ",num-queues=" + std::to_string(d.queues) +
              ",queue-size=" + std::to_string(d.queue_size ? d.queue_size : io::blk::kQueueSize) +
              (d.boot ? ",bootindex=0" : "") + props);
}

std::unique_ptr<GuestDevice> blk_make(std::string socket, const DeviceRequest& req,
                                      channel::HvEnd end, DeviceSupervision sup) {
  return make_blk_device(std::move(socket), req.blk, std::move(end), std::move(sup));
}

Status net_attach(const DeviceRequest& req, DriverConnection::AttachArgs& args) {
  const auto mac = req.net.mac;
  args.kind_part = [mac](schema::Attach::Builder at) {
    at.initNet().setMac(capnp::Data::Reader(mac.data(), mac.size()));
  };
  return {};
}

void net_qemu(const QemuDevice& d, const std::string& chardev, const std::string& id,
              const std::string& props, std::vector<std::string>& a) {
  a.push_back("-netdev");
  // Several queue pairs: QEMU's virtio-net keeps the control queue, through
  // which the guest enables them (VIRTIO_NET_CTRL_MQ), and tells the device
  // which rings are on with SET_VRING_ENABLE.
  const bool mq = d.queues > 1;
  a.push_back("vhost-user,id=net" + id + ",chardev=" + chardev +
              (mq ? ",queues=" + std::to_string(d.queues) : ""));
  // vectors=0 (INTx): QEMU 7.2 segfaults in vhost_net_start ->
  // msix_set_vector_notifiers when the guest enables a vhost-user
  // virtio-net device with MSI-X (seen here under TCG).
  a.push_back("-device");
  a.push_back("virtio-net-pci,netdev=net" + id + (mq ? ",mq=on" : "") +
              ",vectors=0,mac=" + config::format_mac(d.mac) + props);
}

std::unique_ptr<GuestDevice> net_make(std::string socket, const DeviceRequest& req,
                                      channel::HvEnd end, DeviceSupervision sup) {
  return make_net_device(std::move(socket), req.net, std::move(end), std::move(sup));
}

const DeviceKind kKinds[] = {
    {config::DriverKind::kBlk, "blk", blk_channel_shape, blk_attach, blk_qemu, blk_make},
    {config::DriverKind::kNet, "net", net_channel_shape, net_attach, net_qemu, net_make},
};

}  // namespace

const DeviceKind& device_kind(config::DriverKind k) {
  for (const DeviceKind& d : kKinds)
    if (d.kind == k) return d;
  // DriverKind only holds values config parsing produced; a kind missing
  // here is a programming error caught by device_kinds_test.
  std::abort();
}

}  // namespace axl::hv
