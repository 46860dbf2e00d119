// Fault hooks for fault-injection campaigns.  Compiled into every driver
// domain but unreachable unless the supervisor started it with
// --fault-injection (host config `fault_injection = true`).
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/asio.h"
#include "common/fault_trigger.h"
#include "common/result.h"

namespace axl::driverdom {

// Data-path faults: the driver breaks the channel protocol, as a buggy or
// hostile driver would.  Each must make the hypervisor quarantine the
// channel (docs/architecture.md, "Confinement").  Drivers register their
// channels and send every response through answer(); FaultHooks arms them.
class DataPathFaults {
 public:
  enum class Mode { kNone, kBogusLen, kDupCompletion, kStall, kDropOne, kSlow, kCorruptRead };
  // slow: every response is held this long (the loop turns meanwhile).
  static constexpr int kSlowMs = 20;

  // `io` runs the timer slow needs (null: slow is refused).
  explicit DataPathFaults(boost::asio::io_context* io = nullptr) : io_(io) {}

  void add_channel(channel::DriverEnd* end) { ends_.push_back(end); }
  void remove_channel(channel::DriverEnd* end);

  // Pushes `resp` (to a request that posted `posted_len` bytes) onto `end`,
  // as the armed fault bends it:
  // bogus-len (once) claims one byte more than was posted, dup-completion
  // (once) pushes it twice, stall swallows it and every later one,
  // drop-completion swallows it alone, slow pushes it (and every later one)
  // kSlowMs late.  An armed trigger is ticked first: a fault it fires
  // applies to this very response.  `owed`: the hypervisor waits for this
  // answer (false for a received frame filling a posted buffer, which may
  // legitimately come never): drop-completion waits for an owed one.
  // `read_data`: the answer hands the slot's data to the guest (a blk
  // read); corrupt-read (test builds) flips one byte of the next one.
  void answer(channel::DriverEnd& end, uint32_t posted_len, channel::Response resp,
              bool owed = true, bool read_data = false);

  bool arm(Mode m) {
    if (m == Mode::kSlow && !io_) return false;
    mode_ = m;
    return true;
  }
  // `fire` runs at the request `t` picks (one armed at a time: a new one
  // replaces the old).
  void arm_trigger(const FaultTrigger& t, std::function<void()> fire) {
    trigger_.emplace(t);
    fire_ = std::move(fire);
  }
  // bogus-id, now: every channel gets a completion for an id never issued.
  void bogus_id();
  // wild-write, now: once the hypervisor has taken the responses already
  // published, every channel's pool and ring entries are overwritten and a
  // completion made of that garbage is published.
  void wild_write();

 private:
  struct Delayed {
    channel::DriverEnd* end;
    channel::Response resp;
    std::chrono::steady_clock::time_point due;
  };
  // Pushes the held responses that are due, kicks their channels, and waits
  // for the next.
  void flush_delayed();
  Mode mode_ = Mode::kNone;
  std::vector<channel::DriverEnd*> ends_;
  boost::asio::io_context* io_;
  std::deque<Delayed> delayed_;
  std::unique_ptr<boost::asio::steady_timer> delay_timer_;
  std::optional<TriggerState> trigger_;
  std::function<void()> fire_;
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
  // cpu-hog (the loop's thread spins for good),
  // hog-memory (allocates and touches memory without bound, 8 GiB/s), leak
  // (the same, steadily: 1 MiB every 10 ms), hog-pids (forks without
  // bound); the data-path faults of DataPathFaults (wild-write, bogus-id,
  // bogus-len, dup-completion, stall, drop-completion, slow).  With a
  // trigger that is not immediate, the fault is armed to run at the request
  // it picks (a driver without a data path refuses).  Error when disabled
  // or unknown.
  Status run(const std::string& fault, const FaultTrigger& trigger = {});

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

  Status run_now(const std::string& fault);
  // Allocates and touches `chunk` bytes, again every `every`, never freed.
  void grow_memory(size_t chunk, std::chrono::milliseconds every);
  void hog_pids_step();
  AttachFault* attach_ = nullptr;
  std::function<void(const std::string&)> uring_escape_;
  boost::asio::io_context& io_;
  bool enabled_;
  DataPathFaults* data_;
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

}  // namespace axl::driverdom
