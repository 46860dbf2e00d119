// Host and guest configuration (TOML), parsed into plain records.  A config
// file is user input: every error is one line that names the file, the key
// and what is wrong; unknown keys are errors, not silently ignored.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::config {

enum class DriverKind { kNet, kBlk };
const char* to_string(DriverKind k);

struct DriverConfig {
  std::string name;
  DriverKind kind = DriverKind::kNet;
  std::string tap;  // net only: TAP interface name, created if missing
  // Restart policy: at most restart_max restarts within restart_window_s,
  // each after backoff_ms (doubling while restarts come back to back);
  // beyond that the driver is marked failed.
  uint32_t restart_max = 10;
  uint32_t restart_window_s = 60;
  uint32_t backoff_ms = 0;
  // Health: a heartbeat every heartbeat_ms; heartbeat_misses unanswered in
  // a row mean the driver hangs and is killed and restarted.
  uint32_t heartbeat_ms = 100;
  uint32_t heartbeat_misses = 5;
  // Progress: a request handed to the driver that sees no completion within
  // io_timeout_ms means the driver's data path hangs even while its event
  // loop still answers heartbeats; the hypervisor quarantines the channel
  // and the driver is replaced.  0 disables the check.
  uint32_t io_timeout_ms = 5000;
  // Adaptive polling of the channel (docs/architecture.md, "Polling"): after
  // a wake-up that found work, the driver domain and the hypervisor's device
  // thread keep checking for the next request or response for up to poll_us
  // before they sleep again, so a busy device skips the wake-ups; an idle
  // one never spins.  0 (the default): no polling.  At most 1000.
  uint32_t poll_us = 0;
  // Fault hooks are compiled in but unreachable unless this is true.
  // Resource limits per instance (cgroups); 0 = none.  Breaking one kills
  // the driver, which is then restarted.
  uint32_t memory_max_mib = 512;
  uint32_t pids_max = 64;
  uint32_t cpu_percent = 0;
  // Keep a pre-spawned, already connected instance ready to take over.
  bool standby = false;
  bool fault_injection = false;
  // Confine the driver (namespaces, empty root, seccomp, rlimits; README
  // "Sandbox").  Only for hosts without user namespaces: false runs it unconfined.
  bool sandbox = true;
  std::string fault_at_start;  // a fault hook to run at every start (needs fault_injection)
};

struct HostConfig {
  std::vector<DriverConfig> drivers;
  // The access policy (policy/access.h), as written: relative to the host
  // config's directory.  Empty: the built-in policy (root only).
  std::string policy;
  // Fault hooks in vTPM domains (`axl inject --vtpm DOMAIN FAULT`) are
  // unreachable unless true (docs/architecture.md, "Fault injection").
  bool vtpm_fault_injection = false;
  // `axl inject --daemon supervisor|hv crash` (common/daemon_fault.h) is
  // refused unless true.
  bool daemon_fault_injection = false;
  const DriverConfig* find_driver(const std::string& name) const;
};

struct DiskConfig {
  std::string driver;
  std::string image;  // absolute after parsing
  bool read_only = false;
  // Stated, never probed from the image (a guest could write a qcow2 header
  // into a raw disk): "raw" (the default) or "qcow2" (with its backing chain).
  std::string format = "raw";
  bool boot = false;  // the disk the firmware boots from (firmware = ...)
  // As QEMU's cache modes: "writeback" (the default: the host's page cache)
  // or "none" (O_DIRECT: reads and writes bypass the host's page cache;
  // raw images only, on a file system that supports it).  Either way a
  // guest's flush reaches the disk (fdatasync).
  std::string cache = "writeback";
  // The blk driver domain's I/O engine for this disk, as QEMU's aio=:
  // "io_uring" (many requests in flight, through the driver's restricted
  // ring: docs/architecture.md, "The blk I/O engine"; raw images only),
  // "sync" (one request at a time, in the driver's own loop), or "auto"
  // (the default: io_uring for a raw image where the driver has a ring).
  std::string aio = "auto";
  // Request queues the guest sees (virtio-blk num_queues, 1..16), as
  // QEMU's num-queues: one per vCPU lets every vCPU submit on its own ring.
  uint32_t queues = 1;
};

struct NicConfig {
  std::string driver;
  std::array<uint8_t, 6> mac{};
  // Queue pairs the guest sees (1..8), as QEMU's queues= with mq=on: one
  // per vCPU lets every vCPU transmit on its own queue, and flows are
  // received on different queues.
  uint32_t queues = 1;
};

// [vtpm]: a virtual TPM domain (axolotl-vtpm) for the guest.
struct VtpmConfig {
  bool enabled = false;
  // Non-zero: the vTPM also serves TPM commands on 127.0.0.1:command_port
  // and its control channel on command_port + 1 (tpm2-tools' swtpm TCTI).
  uint32_t command_port = 0;
};

struct GuestConfig {
  std::string name;
  uint32_t memory_mib = 512;
  uint32_t vcpus = 1;
  std::string accel = "auto";  // auto | kvm | tcg
  bool iommu = false;          // emulated Intel IOMMU; devices reach RAM through IOVAs
  std::string kernel;          // empty: the bundled guest image
  std::string initrd;          // empty: the bundled guest image
  std::string cmdline;         // appended to "console=ttyS0 panic=-1"
  std::string script;          // [guest] script, absolute; empty: interactive shell
  // What follows a crash of the domain's QEMU (killed, or an error exit; a
  // guest that powers off is shut off, not crashed), as xl's on_crash:
  // destroy (default): released and gone; restart: booted again from its
  // config, with its disks and vTPM; preserve: listed as crashed, its devices
  // and vTPM kept, until `axl destroy`.
  std::string on_crash = "destroy";
  // "" (direct kernel boot of `kernel` and `initrd`), "bios" (SeaBIOS) or
  // "uefi" (OVMF): the firmware boots the guest's own OS from its boot disk.
  std::string firmware;
  // QEMU's own files, its log and the guest's console log above all, grow
  // to this size and no further (RLIMIT_FSIZE): a guest that floods its
  // serial console fills no disk, and runs on.
  uint32_t log_max_mib = 64;
  std::vector<DiskConfig> disks;
  std::vector<NicConfig> nics;
  VtpmConfig vtpm;
};

// `base_dir` resolves relative paths; `origin` names the input in errors.
Result<HostConfig> parse_host(const std::string& toml_text, const std::string& origin);
Result<GuestConfig> parse_guest(const std::string& toml_text, const std::string& origin,
                                const std::string& base_dir);
Result<std::string> read_file(const std::string& path);

bool valid_name(const std::string& s);

// Fault hooks a driver domain has (driverdom/runtime/fault_hooks.h).
inline constexpr const char* kFaultNames[] = {
    "crash", "hang", "cpu-hog", "hog-memory", "hog-pids", "leak",
    // Data-path faults: the driver breaks the channel protocol, or keeps it
    // too slowly (slow) or not for one request (drop-completion).
    "wild-write", "bogus-id", "bogus-len", "dup-completion", "stall", "drop-completion", "slow",
    // blk only, and only in a build with AXL_TEST_HOOKS: one byte of the
    // next read's data flipped, a loss the campaign workload must report.
    "corrupt-read",
    // Control-path faults: attach answered late (3 s) or never.
    "slow-attach", "mute-attach",
    // Escape attempts: each must be refused by the sandbox.
    "open-host-file", "open-socket", "ptrace-hv", "signal-hv", "map-hv-mem",
    // blk only: operations its io_uring's restrictions must refuse.
    "uring-escape"};
bool is_fault_name(const std::string& s);
// Fault hooks a vTPM domain has (vtpm/main.cc): crash (abort), hang (its
// loop stops turning), die-in-command (SIGKILL in the middle of the next
// guest command, before its checkpoint).
inline constexpr const char* kVtpmFaultNames[] = {"crash", "hang", "die-in-command"};
bool is_vtpm_fault_name(const std::string& s);
Result<std::array<uint8_t, 6>> parse_mac(const std::string& s);
std::string format_mac(const std::array<uint8_t, 6>& mac);

}  // namespace axl::config
