// Golden boot measurements and the check of a replayed event log against
// them.  Golden values come from the host's policy file, or for the bundled
// guest image from the project's own build (scripts/build-guest-image
// writes golden.toml beside the image), never from the files a guest
// happens to be booting.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "policy/measure.h"

namespace axl::policy {

// One bootable image.  Policy file (TOML):
//   [[image]]
//   name = "axolotl-guest"
//   kernel_sha256 = "<64 hex>"
//   initrd_sha256 = "<64 hex>"
//   cmdline_sha256 = "<64 hex>"   # optional; else the host's own record
struct GoldenImage {
  std::string name;
  Sha256 kernel{}, initrd{};
  std::optional<Sha256> cmdline;
};

Result<std::vector<GoldenImage>> parse_golden(const std::string& toml, const std::string& origin);

// What the host itself knows about the boot, beside the golden image.
struct HostRecord {
  std::optional<Sha256> initrd_overlay;  // the per-domain overlay it appended
  Sha256 cmdline{};                      // the command line it passed
  std::optional<Sha256> config;          // the domain config it measured
};

struct PcrCheck {
  uint32_t pcr = 0;
  bool pass = false;
  std::string detail;  // one line: which event differs, or what matched
};

// Checks the log's PCR 8 and PCR 9 events, in order, against the golden
// image and the host's record.
std::vector<PcrCheck> check_boot(const std::vector<Event>& log, const GoldenImage& golden,
                                 const HostRecord& host);

}  // namespace axl::policy
