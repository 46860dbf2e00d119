// Measured boot as the hypervisor does it (vtpm/README.md): it acts as the guest's bootloader and,
// following GRUB's convention, measures what it loads into SHA-256 PCRs: PCR 9 the kernel, the
// initrd and the per-domain initrd overlay; PCR 8 the kernel command line and the domain config.
// The events are kept in a TCG crypto-agile event log (TCG PC Client Platform Firmware Profile: a
// Spec ID header event, then TCG_PCR_EVENT2 records with a SHA-256 digest each) so a verifier can
// replay them against a quote.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace axl::policy {

using Sha256 = std::array<uint8_t, 32>;

inline constexpr uint32_t kPcrKernel = 9;            // kernel, initrd (GRUB: loaded files)
inline constexpr uint32_t kPcrCmdline = 8;           // command line, domain config (GRUB: strings)
inline constexpr uint32_t kEvIpl = 0x0000000D;       // EV_IPL, as GRUB records these
inline constexpr uint32_t kEvNoAction = 0x00000003;  // EV_NO_ACTION (the Spec ID header)
// EV_EVENT_TAG, for the domain config: a TCG_PCClientTaggedEvent with this
// ID around the text.  (As EV_IPL in PCR 8, where GRUB's convention is a
// string whose own digest is extended, tpm2_eventlog flags a file's digest.)
inline constexpr uint32_t kEvEventTag = 0x00000006;
inline constexpr uint32_t kAxlTaggedEventId = 0x43584c41;  // "AXLC" in the log

struct Event {
  uint32_t pcr = 0;
  uint32_t type = kEvIpl;
  Sha256 digest{};
  // What was measured, for people: "kernel vmlinuz", ...  In the binary log
  // an EV_IPL's text ends in a NUL and an EV_EVENT_TAG's is wrapped in the
  // tagged-event header; this is the text alone.
  std::string data;
  bool operator==(const Event&) const = default;
};

// What a boot loads.  initrd_overlay: bytes appended to the initrd for this
// domain (its guest script), empty when none; config: the domain config text.
struct BootInputs {
  std::string kernel_path, initrd_path;
  std::string initrd_overlay;
  std::string cmdline;  // exactly what QEMU passes with -append
  std::string config;   // empty: not measured
};

Sha256 sha256(std::string_view bytes);
Result<Sha256> sha256_file(const std::string& path);
std::string hex(const Sha256& d);
Result<Sha256> parse_hex(std::string_view text);

// The events, in extend order.  Fails only when a file cannot be read.
Result<std::vector<Event>> measure_boot(const BootInputs& in);

// PCR values after extending each PCR (all zero at reset) with the events
// in order: new = SHA256(old || digest).
std::map<uint32_t, Sha256> replay(const std::vector<Event>& events);

// The binary event log, and its strict parser (the log is input from
// elsewhere to a verifier: sizes, counts and algorithms are all checked).
std::string encode_event_log(const std::vector<Event>& events);
Result<std::vector<Event>> parse_event_log(std::string_view log);

}  // namespace axl::policy

namespace axl::policy {

// The kernel command line the hypervisor passes (QEMU -append) for a guest
// config's `cmdline`: the console and panic settings first, then the user's.
std::string kernel_cmdline(const std::string& user_cmdline, bool iommu = false);

}  // namespace axl::policy
