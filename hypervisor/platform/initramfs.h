// Per-domain initramfs overlays: the hypervisor hands a guest its workload by
// appending a small uncompressed newc cpio archive to the bundled initrd. The
// kernel unpacks concatenated archives in order (Documentation/driver-api/
// early-userspace/buffer-format.rst), so files in the overlay land on top of the
// base image without unpacking or recompressing it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::hv {

struct CpioFile {
  std::string path;  // relative, e.g. "axl/script"; parents are created
  // Permission bits (0755) make a regular file; a full st_mode may instead name
  // a directory (S_IFDIR, empty data) or a symlink (S_IFLNK, data = target).
  uint32_t mode = 0644;
  std::string data;
};

// The newc archive for `files` alone, parent directories first, ending with the
// TRAILER!!! entry. Timestamps, owners and inode numbers are fixed, so the same
// files always give the same bytes (the vTPM measures the initrd into PCR 9).
Result<std::string> newc_archive(const std::vector<CpioFile>& files);

// Writes base_initrd followed by newc_archive(files) to out_path, atomically
// (temporary file in the same directory, then rename).
Status append_overlay(const std::string& base_initrd, const std::vector<CpioFile>& files,
                      const std::string& out_path);

}  // namespace axl::hv
