// Golden values of a firmware-measured boot, computed from the disk image
// alone (`axl measure --image`; docs/architecture.md, "Firmware-measured
// boot"):
//   PCR 4  OVMF: EV_EFI_ACTION "Calling EFI Application from Boot Option",
//          EV_SEPARATOR, then EV_EFI_BOOT_SERVICES_APPLICATION with the
//          Authenticode digest (PE/COFF, as the Authenticode specification
//          and the TCG PC Client PFP define it) of the EFI system partition's
//          \EFI\BOOT\BOOTX64.EFI;
//   PCR 8  GRUB's tpm module: every grub.cfg command as run ("grub_cmd: "
//          + the command after expansion, the digest over the command), the
//          kernel command line ("kernel_cmdline: ");
//   PCR 9  every file GRUB reads: grub.cfg, the kernel, the initramfs.
// The image is read through the blk driver's image code (raw or qcow2) and
// parsed here: GPT, FAT12/16/32 and ext4 (extent-mapped files), read-only,
// every offset and size checked (a disk image is untrusted input: a guest
// writes its own disk).  GRUB's script language is interpreted only as far
// as generated configs need it: `set`, `if [ A = B ]; then ... else ... fi`,
// `$var` and quotes, and commands; anything else is a one-line error naming
// the line.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "policy/measure.h"

namespace axl::policy {

inline constexpr uint32_t kEvSeparator = 0x00000004;
inline constexpr uint32_t kEvEfiBootServicesApplication = 0x80000003;
inline constexpr uint32_t kEvEfiAction = 0x80000007;

// Reads `len` bytes at `offset` of the whole disk.
using DiskRead = std::function<Status(uint64_t offset, std::span<uint8_t> out)>;

struct Partition {
  std::string type_guid;          // lower-case text form
  uint64_t offset = 0, size = 0;  // bytes
};
// The GPT's partitions (primary header at LBA 1, 512-byte sectors).
Result<std::vector<Partition>> read_gpt(const DiskRead& disk, uint64_t disk_size);
// A file of a FAT or ext4 file system in `part`, by absolute path.
Result<std::string> read_fat_file(const DiskRead& disk, const Partition& part,
                                  const std::string& path);
Result<std::string> read_ext4_file(const DiskRead& disk, const Partition& part,
                                   const std::string& path);

// The Authenticode digest (SHA-256) of a PE/COFF image.
Result<Sha256> authenticode_sha256(std::string_view pe);

// GRUB running `cfg` (read from `cfg_path`) on `platform` ("efi" or
// "pc"): the events its tpm module logs, in order.  `read_file` gives a file
// the config names (kernel, initramfs) by its path.
Result<std::vector<Event>> grub_events(
    const std::string& cfg, const std::string& cfg_path, const std::string& platform,
    const std::function<Result<std::string>(const std::string&)>& read_file);

// The PCR 4, 8 and 9 events of a UEFI boot of the image at `path` (format
// "raw" or "qcow2").
Result<std::vector<Event>> measure_firmware_image(const std::string& path,
                                                  const std::string& format);

}  // namespace axl::policy
