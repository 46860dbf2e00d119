// Fault hooks for fault-injection campaigns.  Compiled into every driver
// domain but unreachable unless the supervisor started it with
// --fault-injection (host config `fault_injection = true`).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/asio.h"
#include "common/result.h"

namespace axl::driverdom {

// Data-path faults: the driver breaks the channel protocol, as a buggy or
// hostile driver would.  Each must make the hypervisor quarantine the
// channel (docs/architecture.md, "Confinement").  Drivers register their
// channels and send every response through answer(); FaultHooks arms them.
class DataPathFaults {
 public:
  enum class Mode { kNone, kBogusLen, kDupCompletion, kStall };

  void add_channel(channel::DriverEnd* end) { ends_.push_back(end); }
  void remove_channel(channel::DriverEnd* end);

  // Pushes `resp` (to a request that posted `posted_len` bytes) onto `end`,
  // as the armed fault bends it:
  // bogus-len (once) claims one byte more than was posted, dup-completion
  // (once) pushes it twice, stall swallows it and every later one.
  void answer(channel::DriverEnd& end, uint32_t posted_len, channel::Response resp);

  void arm(Mode m) { mode_ = m; }
  // bogus-id, now: every channel gets a completion for an id never issued.
  void bogus_id();
  // wild-write, now: once the hypervisor has taken the responses already
  // published, every channel's pool and ring entries are overwritten and a
  // completion made of that garbage is published.
  void wild_write();

 private:
  Mode mode_ = Mode::kNone;
  std::vector<channel::DriverEnd*> ends_;
};

// Control-path faults: how the runtime answers the hypervisor's attach
// (slow-attach: 3 s late; mute-attach: never).  Armed by FaultHooks, obeyed
// by the Runtime.
struct AttachFault {
  enum class Mode { kNone, kSlow, kMute };
  static constexpr int kSlowMs = 3000;
  Mode mode = Mode::kNone;
};

class FaultHooks {
 public:
  // `data` may be null: the data-path faults are then refused.
  FaultHooks(boost::asio::io_context& io, bool enabled, DataPathFaults* data = nullptr)
      : io_(io), enabled_(enabled), data_(data) {}
  // Runs a named fault: crash (abort), hang (the event loop stops turning),
  // hog-memory (allocates and touches memory without bound), hog-pids
  // (forks without bound); the data-path faults of DataPathFaults
  // (wild-write, bogus-id, bogus-len, dup-completion, stall).  Error when
  // disabled or unknown.
  Status run(const std::string& fault);

  // ---- escape-attempt hooks (the sandbox must refuse every one) ----
  // open-host-file, open-socket, ptrace-hv, signal-hv, map-hv-mem: each
  // tries to reach the host or the hypervisor and logs the errno it got, or
  // the process dies by SIGSYS on the way.  They aim at these:
  struct EscapeTargets {
    int hv_pid = 0;         // the hypervisor's PID as the host sees it
    std::string state_dir;  // the host's state dir (hv.sock, host.toml, ...)
  };
  void set_escape_targets(EscapeTargets t) { escape_ = std::move(t); }
  // Where slow-attach and mute-attach are armed (null: refused).
  void set_attach_fault(AttachFault* a) { attach_ = a; }
  // uring-escape (blk): operations outside the I/O ring's restrictions
  // (driverdom/blk/io_ring.h), each answer logged as the escape hooks' are.
  // Unset: refused.
  void set_uring_escape(std::function<void(const std::string& state_dir)> f) {
    uring_escape_ = std::move(f);
  }

 private:
  // True when `fault` names an escape-attempt hook (it then ran).
  bool run_escape(const std::string& fault);
  void escape_open_host_file();
  void escape_open_socket();
  void escape_ptrace_hv();
  void escape_signal_hv();
  void escape_map_hv_mem();
  EscapeTargets escape_;
  // ---- end of escape-attempt hooks ----

  void hog_memory_step();
  void hog_pids_step();
  AttachFault* attach_ = nullptr;
  std::function<void(const std::string&)> uring_escape_;
  boost::asio::io_context& io_;
  bool enabled_;
  DataPathFaults* data_;
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

}  // namespace axl::driverdom
