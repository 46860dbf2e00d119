#include "driverdom/runtime/fault_hooks.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/config.h"
#include "common/log.h"

namespace axl::driverdom {

Status FaultHooks::run(const std::string& fault, const FaultTrigger& trigger) {
  if (!enabled_) return make_error("fault injection is disabled for this driver");
  if (!config::is_fault_name(fault)) return make_error("unknown fault '" + fault + "'");
  if (auto s = trigger.check(); !s) return s;
  if (trigger.immediate()) return run_now(fault);
  if (!data_) return make_error("this driver answers no requests to trigger a fault on");
  AXL_WARN("fault hook: %s armed: after %llu requests, probability %g, seed %llu", fault.c_str(),
           static_cast<unsigned long long>(trigger.after), trigger.probability,
           static_cast<unsigned long long>(trigger.seed));
  data_->arm_trigger(trigger, [this, fault] {
    if (auto s = run_now(fault); !s)
      AXL_WARN("fault '%s' refused when it fired: %s", fault.c_str(), s.error().message.c_str());
  });
  return {};
}

Status FaultHooks::run_now(const std::string& fault) {
  AXL_WARN("fault hook: %s", fault.c_str());
  if (run_escape(fault)) return {};
  if (fault == "uring-escape") {
    if (!uring_escape_) return make_error("this driver has no io_uring");
    uring_escape_(escape_.state_dir);
    return {};
  }
  if (fault == "crash") std::abort();
  if (fault == "hang") {
    for (;;) ::pause();  // the loop never turns again; heartbeats go unanswered
  }
  if (fault == "cpu-hog") {
    // Spins on the loop's thread for good: it burns its CPU quota and the
    // loop never turns again (a runaway loop, not a sleeping one).
    volatile uint64_t spins = 0;
    for (;;) spins = spins + 1;
  }
  if (fault == "hog-memory") {
    grow_memory(8 << 20, std::chrono::milliseconds(1));
    return {};
  }
  if (fault == "leak") {
    grow_memory(1 << 20, std::chrono::milliseconds(10));
    return {};
  }
  if (fault == "hog-pids") {
    hog_pids_step();
    return {};
  }
  if (fault == "slow-attach" || fault == "mute-attach") {
    if (!attach_) return make_error("this driver has no control path to break");
    attach_->mode = fault == "slow-attach" ? AttachFault::Mode::kSlow : AttachFault::Mode::kMute;
    return {};
  }
  // Data-path faults.
  if (fault == "wild-write" || fault == "bogus-id" || fault == "bogus-len" ||
      fault == "dup-completion" || fault == "stall" || fault == "drop-completion" ||
      fault == "slow" || fault == "corrupt-read") {
    if (!data_) return make_error("this driver has no data path to break");
    if (fault == "wild-write") data_->wild_write();
    if (fault == "bogus-id") data_->bogus_id();
    if (fault == "bogus-len") data_->arm(DataPathFaults::Mode::kBogusLen);
    if (fault == "dup-completion") data_->arm(DataPathFaults::Mode::kDupCompletion);
    if (fault == "stall") data_->arm(DataPathFaults::Mode::kStall);
    if (fault == "drop-completion") data_->arm(DataPathFaults::Mode::kDropOne);
    if (fault == "slow" && !data_->arm(DataPathFaults::Mode::kSlow))
      return make_error("this driver has no timer to delay its answers with");
    if (fault == "corrupt-read") {
#ifdef AXL_TEST_HOOKS
      data_->arm(DataPathFaults::Mode::kCorruptRead);
#else
      return make_error("corrupt-read is a test hook, and this build has none (AXL_TEST_HOOKS)");
#endif
    }
    return {};
  }
  return {};
}

void DataPathFaults::remove_channel(channel::DriverEnd* end) {
  ends_.erase(std::remove(ends_.begin(), ends_.end(), end), ends_.end());
}

void DataPathFaults::answer(channel::DriverEnd& end, uint32_t posted_len, channel::Response resp,
                            bool owed, bool read_data) {
  if (trigger_ && trigger_->tick()) {
    trigger_.reset();
    auto fire = std::move(fire_);
    fire_ = nullptr;
    fire();  // may arm a mode that bends this response (or never return)
  }
  switch (mode_) {
    case Mode::kNone:
      end.push(resp);
      return;
    case Mode::kBogusLen:
      resp.len = posted_len + 1;
      end.push(resp);
      mode_ = Mode::kNone;
      return;
    case Mode::kDupCompletion:
      end.push(resp);
      end.push(resp);
      mode_ = Mode::kNone;
      return;
    case Mode::kStall:
      return;  // the request is never completed; heartbeats still are
    case Mode::kDropOne:
      if (!owed) {
        end.push(resp);
        return;
      }
      mode_ = Mode::kNone;
      return;  // this one request is never completed
    case Mode::kCorruptRead:
      if (read_data && resp.status == 0 && resp.len > 0 && resp.len <= end.slot_size() &&
          resp.id < end.slots()) {
        end.slot(resp.id)[resp.len / 2] ^= 0x01;
        mode_ = Mode::kNone;
      }
      end.push(resp);
      return;
    case Mode::kSlow: {
      const bool idle = delayed_.empty();
      delayed_.push_back(
          {&end, resp, std::chrono::steady_clock::now() + std::chrono::milliseconds(kSlowMs)});
      if (idle) flush_delayed();
      return;
    }
  }
}

void DataPathFaults::flush_delayed() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<channel::DriverEnd*> kicked;
  while (!delayed_.empty() && delayed_.front().due <= now) {
    Delayed d = delayed_.front();
    delayed_.pop_front();
    // A channel detached meanwhile is gone: its answers go with it.
    if (std::find(ends_.begin(), ends_.end(), d.end) == ends_.end()) continue;
    d.end->push(d.resp);
    if (std::find(kicked.begin(), kicked.end(), d.end) == kicked.end()) kicked.push_back(d.end);
  }
  for (channel::DriverEnd* e : kicked) e->kick();
  if (delayed_.empty()) return;
  if (!delay_timer_) delay_timer_ = std::make_unique<boost::asio::steady_timer>(*io_);
  delay_timer_->expires_at(delayed_.front().due);
  delay_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) flush_delayed();
  });
}

void DataPathFaults::bogus_id() {
  for (channel::DriverEnd* e : ends_) {
    // Ids are slot indices, so one at or beyond the slot count was never issued.
    e->push(channel::Response{e->slots() + 17, int32_t(channel::RespStatus::kOk), 0, 0});
    e->kick();
  }
}

void DataPathFaults::wild_write() {
  for (channel::DriverEnd* e : ends_) {
    const channel::Mapping& m = e->mapping();
    const channel::Geometry& g = m.geometry();
    // Responses already published were honest; let the hypervisor take them
    // (and copy their data) before their slots are overwritten, so what the
    // guest sees is decided by the fault alone.  Bounded: a hypervisor that
    // takes no more is not waited for.
    auto* hdr = m.header();
    for (int i = 0; i < 200; ++i) {
      if (hdr->resp.tail.load(std::memory_order_acquire) ==
          hdr->resp.head.load(std::memory_order_acquire))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    memset(reinterpret_cast<uint8_t*>(m.req_ring()), 0xa5,
           size_t(g.slots) * sizeof(channel::Request));
    memset(reinterpret_cast<uint8_t*>(m.resp_ring()), 0xa5,
           size_t(g.slots) * sizeof(channel::Response));
    memset(m.pool(), 0xa5, size_t(g.slots) * g.slot_size);
    // Publish one of the scribbled entries: id, status and length are all garbage.
    channel::Response garbage;
    memcpy(&garbage, m.resp_ring(), sizeof garbage);
    e->push(garbage);
    e->kick();
  }
}

// A child every millisecond, each parked forever; the loop keeps turning.
void FaultHooks::hog_pids_step() {
  if (::fork() == 0) {
    for (;;) ::pause();
  }
  if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  timer_->expires_after(std::chrono::milliseconds(1));
  timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) hog_pids_step();
  });
}

// Touched so it is really charged; never freed.
void FaultHooks::grow_memory(size_t chunk, std::chrono::milliseconds every) {
  auto* p = static_cast<char*>(std::malloc(chunk));
  if (p) memset(p, 0x5a, chunk);
  if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  timer_->expires_after(every);
  timer_->async_wait([this, chunk, every](const boost::system::error_code& ec) {
    if (!ec) grow_memory(chunk, every);
  });
}

// ---- escape-attempt hooks ----
// Each attempt is logged before it is made (a syscall outside the seccomp
// allow-list kills the process on the spot) and its outcome after.

namespace {

void attempting(const char* hook, const std::string& what) {
  AXL_WARN("escape %s: attempting %s", hook, what.c_str());
}

// `err` is the attempt's errno, 0 when it worked (a sandbox hole).
void outcome(const char* hook, const std::string& what, int err) {
  if (err)
    AXL_WARN("escape %s: %s denied: %s (%s)", hook, what.c_str(), strerrorname_np(err),
             strerror(err));
  else
    AXL_ERROR("escape %s: %s SUCCEEDED: the sandbox let it through", hook, what.c_str());
}

// True when the open worked (a sandbox hole).
bool try_open(const char* hook, const std::string& path, int flags) {
  std::string what = "open(" + path + ", " + (flags & O_ACCMODE ? "write" : "read") + ")";
  attempting(hook, what);
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  outcome(hook, what, fd < 0 ? errno : 0);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

}  // namespace

bool FaultHooks::run_escape(const std::string& fault) {
  const bool aims_at_hv = fault == "ptrace-hv" || fault == "signal-hv" || fault == "map-hv-mem";
  if (aims_at_hv && escape_.hv_pid <= 0) {
    // kill(0, ...) would hit our own process group; without a target, refuse.
    AXL_WARN("escape %s: no hypervisor PID given (--hv-pid); not attempted", fault.c_str());
    return true;
  }
  if (fault == "open-host-file")
    escape_open_host_file();
  else if (fault == "open-socket")
    escape_open_socket();
  else if (fault == "ptrace-hv")
    escape_ptrace_hv();
  else if (fault == "signal-hv")
    escape_signal_hv();
  else if (fault == "map-hv-mem")
    escape_map_hv_mem();
  else
    return false;
  return true;
}

void FaultHooks::escape_open_host_file() {
  const char* hook = "open-host-file";
  try_open(hook, "/etc/shadow", O_WRONLY);
  if (escape_.state_dir.empty()) return;
  for (const char* f : {"host.toml", "hv.pid", "supervisor.log"})
    try_open(hook, escape_.state_dir + "/" + f, O_WRONLY | O_APPEND);
  // A file planted for the host to find; removed again should it ever work.
  const std::string planted = escape_.state_dir + "/planted-by-driver";
  if (try_open(hook, planted, O_WRONLY | O_CREAT | O_EXCL)) ::unlink(planted.c_str());
}

void FaultHooks::escape_open_socket() {
  const char* hook = "open-socket";
  attempting(hook, "socket(AF_INET)");
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  outcome(hook, "socket(AF_INET)", s < 0 ? errno : 0);
  if (s >= 0) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(22);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    attempting(hook, "connect(127.0.0.1:22)");
    int r = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    outcome(hook, "connect(127.0.0.1:22)", r < 0 ? errno : 0);
    ::close(s);
  }
  if (escape_.state_dir.empty()) return;
  const std::string path = escape_.state_dir + "/hv.sock";
  attempting(hook, "socket(AF_UNIX)");
  s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  outcome(hook, "socket(AF_UNIX)", s < 0 ? errno : 0);
  if (s < 0) return;
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  snprintf(u.sun_path, sizeof u.sun_path, "%s", path.c_str());
  attempting(hook, "connect(" + path + ")");
  int r = ::connect(s, reinterpret_cast<sockaddr*>(&u), sizeof u);
  outcome(hook, "connect(" + path + ")", r < 0 ? errno : 0);
  ::close(s);
}

void FaultHooks::escape_ptrace_hv() {
  const char* hook = "ptrace-hv";
  const std::string pid = std::to_string(escape_.hv_pid);
  attempting(hook, "ptrace(PTRACE_ATTACH, " + pid + ")");
  long r = ::ptrace(PTRACE_ATTACH, escape_.hv_pid, nullptr, nullptr);
  outcome(hook, "ptrace(PTRACE_ATTACH, " + pid + ")", r < 0 ? errno : 0);
  char buf[64];
  iovec local{buf, sizeof buf};
  iovec remote{reinterpret_cast<void*>(0x400000), sizeof buf};
  attempting(hook, "process_vm_readv(" + pid + ")");
  ssize_t n = ::process_vm_readv(escape_.hv_pid, &local, 1, &remote, 1, 0);
  outcome(hook, "process_vm_readv(" + pid + ")", n < 0 ? errno : 0);
}

void FaultHooks::escape_signal_hv() {
  const char* hook = "signal-hv";
  const std::string what = "kill(" + std::to_string(escape_.hv_pid) + ", SIGKILL)";
  attempting(hook, what);
  int r = ::kill(escape_.hv_pid, SIGKILL);
  outcome(hook, what, r < 0 ? errno : 0);
}

void FaultHooks::escape_map_hv_mem() {
  const char* hook = "map-hv-mem";
  const std::string path = "/proc/" + std::to_string(escape_.hv_pid) + "/mem";
  attempting(hook, "open(" + path + ", read)");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  outcome(hook, "open(" + path + ", read)", fd < 0 ? errno : 0);
  if (fd < 0) return;
  attempting(hook, "mmap(" + path + ")");
  void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0x400000);
  outcome(hook, "mmap(" + path + ")", p == MAP_FAILED ? errno : 0);
  if (p != MAP_FAILED) ::munmap(p, 4096);
  char buf[64];
  attempting(hook, "pread(" + path + ")");
  ssize_t n = ::pread(fd, buf, sizeof buf, 0x400000);
  outcome(hook, "pread(" + path + ")", n < 0 ? errno : 0);
  ::close(fd);
}
// ---- end of escape-attempt hooks ----

}  // namespace axl::driverdom
