// Builds QEMU's command line for a domain.  QEMU supplies vCPUs and the
// platform only: no emulated disk or NIC of its own (-nodefaults); every
// guest device is a vhost-user device served by this hypervisor.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "common/config.h"

namespace axl::hv {

struct QemuDevice {
  using Kind = config::DriverKind;
  Kind kind;
  std::string socket;  // vhost-user socket the hypervisor listens on
  std::array<uint8_t, 6> mac{};
  bool boot = false;        // the firmware's boot device (bootindex=0)
  uint32_t queue_size = 0;  // blk: the virtqueue size (io::blk::kQueueSize)
  uint32_t queues = 1;      // blk: request queues (num-queues); net: queue pairs
};

struct QemuSpec {
  std::string qemu;  // binary
  std::string name;
  std::string accel;  // "tcg" | "kvm"
  uint32_t memory_mib = 512;
  uint32_t vcpus = 1;
  std::string kernel, initrd, cmdline;
  std::string console_socket, console_log;
  std::vector<QemuDevice> devices;
  // A guest IOMMU (emulated Intel VT-d): every device reaches guest RAM
  // through IOVAs the guest programs, checked by the hypervisor's IOTLB.
  bool iommu = false;
  // The vTPM's control socket (QEMU's tpm-emulator backend connects to it
  // and hands the TPM command channel over); empty: no TPM.
  std::string tpm_socket{};
  // Firmware boot (config "firmware"): "bios" (SeaBIOS, QEMU's default
  // firmware) or "uefi" (OVMF: its code read-only, the domain's own
  // variable store `nvram`); "" boots `kernel` and `initrd` directly.
  std::string firmware{};
  std::string ovmf_code{}, nvram{};
  // The guest agent's virtio-serial port (org.qemu.guest_agent.0) and the
  // QMP monitor, each a Unix socket QEMU listens on for the hypervisor;
  // empty: none.
  std::string agent_socket{}, qmp_socket{};
  // When set (>= 0): QEMU's fd number of a socket the hypervisor made for
  // it, used instead of the path above (`fd=N`): the listening console,
  // agent and QMP sockets, the connected vTPM control channel.  QEMU then
  // needs no access to the paths (it runs as a uid of its own).
  int console_fd = -1, agent_fd = -1, qmp_fd = -1, tpm_fd = -1;
  // Guest RAM: a file of exactly memory_mib that the hypervisor made (a
  // memfd, as /proc/self/fd/N), so QEMU need not size one itself and can run
  // under a file size limit far below its RAM; empty: QEMU makes a memfd.
  std::string ram_path{};
};

std::vector<std::string> qemu_argv(const QemuSpec& s);

// The kernel command line QEMU passes (-append): what the hypervisor
// measures into PCR 8, so it is built in this one place.
std::string kernel_append(const std::string& user_cmdline, bool iommu);

}  // namespace axl::hv
