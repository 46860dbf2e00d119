// axl measure: the measurements the hypervisor will make for a boot, and the
// golden values to put in an attestation policy for your own image.
#include <cstdio>

#include "cli/commands.h"
#include "common/config.h"
#include "policy/attest.h"
#include "policy/boot_image.h"
#include "policy/measure.h"

namespace axl::cli {
namespace {

bool write_file(const std::string& path, const std::string& bytes) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return fclose(f) == 0 && ok;
}

std::string toml_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c < 0x20) {
      char b[8];
      snprintf(b, sizeof(b), "\\u%04x", c);
      o += b;
      continue;
    }
    o += char(c);
  }
  return o + "\"";
}

}  // namespace

// A firmware-booted image: the PCR 4, 8 and 9 events its UEFI boot will
// log, and with --write-golden those events as a TCG event log that `axl
// attest --golden` checks a boot against.
int measure_image(const MeasureOptions& o) {
  if (o.format != "raw" && o.format != "qcow2")
    return fail("--format must be raw or qcow2, not '" + o.format + "'");
  auto ev = policy::measure_firmware_image(o.image, o.format);
  if (!ev) return fail(ev.error().message);
  auto pcrs = policy::replay(*ev);
  for (uint32_t pcr : {4u, 8u, 9u}) {
    printf("PCR %u  %s\n", pcr, policy::hex(pcrs[pcr]).c_str());
    for (const auto& e : *ev)
      if (e.pcr == pcr)
        printf("        %s  %s\n", policy::hex(e.digest).substr(0, 16).c_str(),
               policy::describe_event(e).c_str());
  }
  if (!o.write_golden.empty() && !write_file(o.write_golden, policy::encode_event_log(*ev)))
    return fail("cannot write " + o.write_golden);
  return 0;
}

int measure(const MeasureOptions& o) {
  if (!o.image.empty()) return measure_image(o);
  if (o.kernel.empty() || o.initrd.empty())
    return fail("measure needs --kernel and --initrd, or --image for a firmware-booted image");
  policy::BootInputs in;
  in.kernel_path = o.kernel;
  in.initrd_path = o.initrd;
  in.cmdline = policy::kernel_cmdline(o.cmdline, o.iommu);
  if (!o.config.empty()) {
    auto text = config::read_file(o.config);
    if (!text) return fail(text.error().message);
    in.config = *text;
  }
  auto ev = policy::measure_boot(in);
  if (!ev) return fail(ev.error().message);
  if (!o.write_log.empty() && !write_file(o.write_log, policy::encode_event_log(*ev)))
    return fail("cannot write " + o.write_log);
  if (!o.write_record.empty()) {
    // As STATE/dom/NAME/boot-record.toml: what the host passed, beside the measurements.
    std::string r = "kernel = " + toml_string(o.kernel) + "\ninitrd = " + toml_string(o.initrd) +
                    "\ncmdline = " + toml_string(in.cmdline) + "\ncmdline_sha256 = \"" +
                    policy::hex(policy::sha256(in.cmdline)) + "\"\n";
    if (!in.config.empty())
      r += "config_sha256 = \"" + policy::hex(policy::sha256(in.config)) + "\"\n";
    if (!write_file(o.write_record, r)) return fail("cannot write " + o.write_record);
  }
  printf("%-4s %-64s  %s\n", "PCR", "SHA-256 of what was measured", "Event");
  for (const auto& e : *ev)
    printf("%-4u %s  %s\n", e.pcr, policy::hex(e.digest).c_str(), e.data.c_str());
  auto pcrs = policy::replay(*ev);
  printf("\nPCR 8 (sha256) = %s\nPCR 9 (sha256) = %s\n", policy::hex(pcrs[8]).c_str(),
         policy::hex(pcrs[9]).c_str());
  printf("\n# policy entry (golden values) for this image:\n[[image]]\nname = \"%s\"\n",
         o.name.c_str());
  printf("kernel_sha256 = \"%s\"\ninitrd_sha256 = \"%s\"\ncmdline_sha256 = \"%s\"\n",
         policy::hex((*ev)[0].digest).c_str(), policy::hex((*ev)[1].digest).c_str(),
         policy::hex(policy::sha256(in.cmdline)).c_str());
  return 0;
}

}  // namespace axl::cli
