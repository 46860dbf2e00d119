#include "hypervisor/daemon/qemu_cmdline.h"

#include "hypervisor/daemon/device_kinds.h"

#include "policy/measure.h"

#include "common/config.h"

namespace axl::hv {

std::vector<std::string> qemu_argv(const QemuSpec& s) {
  const std::string mem = std::to_string(s.memory_mib) + "M";
  auto where = [](int fd, const std::string& path) {
    return fd >= 0 ? "fd=" + std::to_string(fd) : "path=" + path;
  };
  std::vector<std::string> a = {
      s.qemu, "-name", s.name, "-accel", s.accel,
      // vhost-user needs guest RAM in a shareable fd.
      "-object",
      (s.ram_path.empty() ? "memory-backend-memfd,id=mem,size=" + mem
                          : "memory-backend-file,id=mem,mem-path=" + s.ram_path + ",size=" + mem) +
          ",share=on",
      // Interrupt remapping (intremap=on) needs the split irqchip under KVM;
      // QEMU 7.2 accepts it under TCG too.
      "-machine", std::string("q35,memory-backend=mem") + (s.iommu ? ",kernel-irqchip=split" : ""),
      "-m", mem, "-smp", std::to_string(s.vcpus), "-nodefaults", "-no-user-config", "-display",
      "none", "-monitor", "none", "-no-reboot", "-chardev",
      "socket,id=ser0," + where(s.console_fd, s.console_socket) +
          ",server=on,wait=off,logfile=" + s.console_log,
      "-serial", "chardev:ser0",
      // QEMU's own seccomp filter: no obsolete system calls, no privilege
      // changes, no processes spawned, no scheduler or rlimit changes (TCG
      // is no security boundary; this and the dropped capabilities and
      // namespaces of the spawn are, docs/architecture.md).
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"};
  // The vIOMMU comes before the PCI devices it translates for.
  // device-iotlb=on + ats=on: the guest invalidates the device's IOTLB, and
  // QEMU forwards those invalidations to the vhost-user back-end.
  // disable-legacy=on: QEMU 7.2 refuses iommu_platform on a transitional
  // device (what a virtio-pci device on q35's root bus is by default).
  const std::string viommu = s.iommu ? ",disable-legacy=on,iommu_platform=on,ats=on" : "";
  if (s.iommu) a.insert(a.end(), {"-device", "intel-iommu,intremap=on,device-iotlb=on"});
  int i = 0;
  for (const QemuDevice& d : s.devices) {
    const std::string id = std::to_string(i++);
    // reconnect=1: QEMU reconnects when a backend socket drops.
    a.push_back("-chardev");
    a.push_back("socket,id=vu" + id + ",path=" + d.socket + ",reconnect=1");
    device_kind(d.kind).qemu(d, "vu" + id, id, viommu, a);
  }
  if (!s.tpm_socket.empty()) {
    // No reconnect option: the tpm-emulator backend connects once, at
    // start; a restarted vTPM inherits this very connection (supervisor/
    // vtpm_manager.h).  tpm-crb: the guest kernel's TCG_CRB is built in.
    a.insert(a.end(), {"-chardev", "socket,id=chrtpm," + where(s.tpm_fd, s.tpm_socket), "-tpmdev",
                       "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"});
  }
  if (!s.agent_socket.empty())
    a.insert(
        a.end(),
        {"-chardev", "socket,id=qga0," + where(s.agent_fd, s.agent_socket) + ",server=on,wait=off",
         "-device", "virtio-serial-pci,id=vser0" + viommu, "-device",
         "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"});
  if (!s.qmp_socket.empty())
    a.insert(a.end(),
             {"-chardev", "socket,id=qmp0," + where(s.qmp_fd, s.qmp_socket) + ",server=on,wait=off",
              "-mon", "chardev=qmp0,mode=control"});
  if (s.firmware == "uefi") {
    a.insert(a.end(), {"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + s.ovmf_code,
                       "-drive", "if=pflash,format=raw,unit=1,file=" + s.nvram});
  }
  if (s.firmware.empty())
    a.insert(a.end(), {"-kernel", s.kernel, "-initrd", s.initrd, "-append",
                       kernel_append(s.cmdline, s.iommu)});
  return a;
}

std::string kernel_append(const std::string& user_cmdline, bool iommu) {
  // One definition, shared with `axl measure`: what QEMU gets is what is measured.
  return policy::kernel_cmdline(user_cmdline, iommu);
}

}  // namespace axl::hv
