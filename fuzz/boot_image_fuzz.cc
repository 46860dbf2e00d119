// A disk image is untrusted input to `axl measure --image` (a guest writes
// its own disk; policy/boot_image.h).  Input: byte 0 picks what the rest is:
//   0  a whole disk: GPT, then each partition's FAT and ext4 files
//   1  a FAT file system          2  an ext4 file system
//   3  a PE/COFF image (Authenticode)   4  a grub.cfg
// Oracle: nothing crashes or reads outside the input; every error is one
// non-empty line.
#include <cstring>

#include "fuzz/fuzz_support.h"
#include "policy/boot_image.h"

namespace {

using namespace axl;

using fuzz::check_error;

template <typename T>
void check(const Result<T>& r) {
  if (!r) check_error(r.error());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  axl::fuzz::quiet_logs();
  if (size == 0) return 0;
  const std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  policy::DiskRead disk = [&](uint64_t off, std::span<uint8_t> out) -> Status {
    AXL_FUZZ_CHECK(off <= in.size() && out.size() <= in.size() - off);
    memcpy(out.data(), in.data() + off, out.size());
    return {};
  };
  const policy::Partition whole{"", 0, in.size()};
  switch (data[0] % 5) {
    case 0: {
      auto parts = policy::read_gpt(disk, in.size());
      check(parts);
      if (!parts) break;
      for (const auto& p : *parts) {
        if (p.offset > in.size() || p.size > in.size() - p.offset) continue;
        check(policy::read_fat_file(disk, p, "/EFI/BOOT/BOOTX64.EFI"));
        check(policy::read_ext4_file(disk, p, "/boot/grub/grub.cfg"));
      }
      break;
    }
    case 1:
      check(policy::read_fat_file(disk, whole, "/EFI/BOOT/BOOTX64.EFI"));
      break;
    case 2:
      check(policy::read_ext4_file(disk, whole, "/boot/grub/grub.cfg"));
      check(policy::read_ext4_file(disk, whole, "/boot/k"));
      break;
    case 3:
      check(policy::authenticode_sha256(in));
      break;
    default:
      check(policy::grub_events(in, "/g", "efi", [](const std::string& p) {
        return Result<std::string>(std::string(p));
      }));
  }
  return 0;
}
