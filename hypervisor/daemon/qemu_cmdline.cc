#include "hypervisor/daemon/qemu_cmdline.h"

#include "common/config.h"

namespace axl::hv {

std::vector<std::string> qemu_argv(const QemuSpec& s) {
  const std::string mem = std::to_string(s.memory_mib) + "M";
  std::vector<std::string> a = {
      s.qemu, "-name", s.name, "-accel", s.accel,
      // vhost-user needs guest RAM in a shareable fd (FACTS.md).
      "-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
      "-machine", "q35,memory-backend=mem", "-m", mem, "-smp", std::to_string(s.vcpus),
      "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
      "-chardev",
      "socket,id=ser0,path=" + s.console_socket + ",server=on,wait=off,logfile=" + s.console_log,
      "-serial", "chardev:ser0"};
  int i = 0;
  for (const QemuDevice& d : s.devices) {
    const std::string id = std::to_string(i++);
    // reconnect=1: QEMU reconnects when a backend socket drops (FACTS.md).
    a.push_back("-chardev");
    a.push_back("socket,id=vu" + id + ",path=" + d.socket + ",reconnect=1");
    if (d.kind == QemuDevice::Kind::kBlk) {
      a.push_back("-device");
      a.push_back("vhost-user-blk-pci,chardev=vu" + id + ",num-queues=1");
    } else {
      a.push_back("-netdev");
      a.push_back("vhost-user,id=net" + id + ",chardev=vu" + id);
      // vectors=0 (INTx): QEMU 7.2 segfaults in vhost_net_start ->
      // msix_set_vector_notifiers when the guest enables a vhost-user
      // virtio-net device with MSI-X (seen here under TCG).
      a.push_back("-device");
      a.push_back("virtio-net-pci,netdev=net" + id + ",vectors=0,mac=" + config::format_mac(d.mac));
    }
  }
  std::string append = "console=ttyS0 panic=-1";
  if (!s.cmdline.empty()) append += " " + s.cmdline;
  a.insert(a.end(), {"-kernel", s.kernel, "-initrd", s.initrd, "-append", append});
  return a;
}

}  // namespace axl::hv
