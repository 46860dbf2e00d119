// `axl campaign CAMPAIGN.toml` (docs/campaigns.md): creates a workload domain
// that checks itself end to end, injects the planned faults one at a time,
// times each outage as the workload sees it, and writes the report.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/campaign_config.h"
#include "cli/campaign_report.h"
#include "cli/commands.h"
#include "cli/stream_check.h"
#include "common/config.h"
#include "common/control_client.h"
#include "common/control_requests.h"
#include "common/quote.h"
#include "common/unique_fd.h"

namespace axl::cli {

using control::call;
using namespace axl::campaign;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

double since_ms(Clock::time_point t0, Clock::time_point t = Clock::now()) {
  return std::chrono::duration<double, std::milli>(t - t0).count();
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// The host's end of the guest's stream: one connection, every byte checked
// against the generator as it arrives.
class Receiver {
 public:
  explicit Receiver(uint64_t seed) : check_(seed) {}
  ~Receiver() { stop(); }

  Status start(const std::string& addr, uint16_t port) {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!listen_ || !stop_) return make_error(std::string("socket: ") + strerror(errno));
    int one = 1;
    ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      return make_error("cannot listen on " + addr + ":" + std::to_string(port) + ": " +
                        strerror(errno) + " (is workload.host the address of the NIC's TAP?)");
    if (::listen(listen_.get(), 1) != 0)
      return make_error(std::string("listen: ") + strerror(errno));
    thread_ = std::thread([this] { run(); });
    return {};
  }

  void stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }

  uint64_t bytes() const { return bytes_.load(); }
  uint64_t corrupted() const { return corrupted_.load(); }
  // Set once the stream ended before it was told to (or a second
  // connection came: a new stream would start the generator over).
  std::string error() const {
    std::lock_guard<std::mutex> g(mu_);
    return error_;
  }
  void expect_end() { end_expected_.store(true); }

 private:
  void fail(const std::string& e) {
    std::lock_guard<std::mutex> g(mu_);
    if (error_.empty()) error_ = e;
  }

  void run() {
    UniqueFd conn;
    uint8_t buf[65536];
    for (;;) {
      pollfd pf[3] = {
          {stop_.get(), POLLIN, 0}, {listen_.get(), POLLIN, 0}, {conn.get(), POLLIN, 0}};
      if (::poll(pf, conn ? 3 : 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (pf[0].revents) return;
      if (pf[1].revents & POLLIN) {
        UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (c && !conn && !connected_) {
          conn = std::move(c);
          connected_ = true;
        } else if (c) {
          fail("the guest's stream connected a second time");
        }
      }
      if (conn && (pf[2].revents & (POLLIN | POLLHUP | POLLERR))) {
        const ssize_t n = ::read(conn.get(), buf, sizeof buf);
        if (n > 0) {
          check_.feed(buf, size_t(n));
          bytes_.store(check_.bytes());
          corrupted_.store(check_.corrupted());
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          if (!end_expected_.load())
            fail(n == 0 ? "the guest's stream ended early"
                        : std::string("the guest's stream failed: ") + strerror(errno));
          conn.reset();
        }
      }
    }
  }

  StreamChecker check_;
  UniqueFd listen_, stop_;
  std::thread thread_;
  bool connected_ = false;
  std::atomic<uint64_t> bytes_{0}, corrupted_{0};
  std::atomic<bool> end_expected_{false};
  mutable std::mutex mu_;
  std::string error_;
};

// What the guest's console says so far (docs/campaigns.md, "Workload").
struct Console {
  uint64_t rounds = 0, mismatched_rounds = 0, mismatched_bytes = 0;
  uint64_t pcr_reads = 0, pcr_errors = 0;
  int64_t kernel_errors = -1;
  std::string first_pcr;
  bool failed = false;  // the workload script stopped with an error
};

Result<std::string> console_log(const HostPaths& p, const std::string& name) {
  auto r = call(p.hv_socket(), control::hv::open_console(name, true), 5000);
  if (!r) return r.error();
  if (r->fds().size() != 1) return make_error("the hypervisor sent no console");
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(r->fds()[0].get(), buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  return out;
}

Console parse_console(const std::string& log) {
  Console c;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    unsigned long long a = 0, b = 0;
    if (line.rfind("ROUND ", 0) == 0) {
      ++c.rounds;
    } else if (sscanf(line.c_str(), "ROUND-MISMATCH %llu BYTES %llu", &a, &b) == 2) {
      ++c.rounds;
      ++c.mismatched_rounds;
      c.mismatched_bytes += b;
    } else if (line.rfind("PCR ", 0) == 0) {
      ++c.pcr_reads;
      std::string v = line.substr(4);
      if (c.first_pcr.empty()) c.first_pcr = v;
      if (v != c.first_pcr || v.size() != 64) ++c.pcr_errors;
    } else if (line.rfind("PCR-ERR", 0) == 0) {
      ++c.pcr_reads;
      ++c.pcr_errors;
    } else if (sscanf(line.c_str(), "IO-ERRORS %llu", &a) == 1) {
      c.kernel_errors = int64_t(a);
    } else if (line.rfind("WORKLOAD-FAILED", 0) == 0) {
      c.failed = true;
    }
  }
  return c;
}

// The guest's script: the stream to the host, disk write/read-back rounds
// on its disk and (with a vTPM) PCR reads, each line a verdict the host
// parses; the host ends it by connecting to port + 2.
std::string guest_script(const Config& c, uint64_t stream_seed) {
  std::string s = "ip addr add " + c.guest_addr + "/24 dev eth0\nip link set eth0 up\n";
  s += "axl-tool recv " + c.guest_addr + " " + std::to_string(c.port + 2) +
       " --timeout 604800 >/dev/null &\nstopper=$!\n";
  s += "axl-tool gen " + std::to_string(stream_seed) + " 16384G | axl-tool send " + c.host_addr +
       " " + std::to_string(c.port) + " --retry 30 &\nsender=$!\n";
  if (c.vtpm)
    s += R"(P=/sys/class/tpm/tpm0/pcr-sha256/9
( while kill -0 $stopper 2>/dev/null; do
    if v=$(cat $P 2>/dev/null); then echo "PCR $v"; else echo PCR-ERR; fi
    sleep 0.5
  done ) &
pcr=$!
)";
  s += R"(round=0
while kill -0 $stopper 2>/dev/null; do
  round=$((round + 1))
  seed=$((round % 7 + 1))
  off=$(( (round % 16) * 16 ))
  axl-tool gen $seed 2M | dd of=/dev/vda bs=128K seek=$off oflag=direct 2>/dev/null || { echo WORKLOAD-FAILED write; break; }
  dd if=/dev/vda of=/tmp/got bs=128K skip=$off count=16 iflag=direct 2>/dev/null || { echo WORKLOAD-FAILED read; break; }
  got=$(sha256sum /tmp/got | cut -d' ' -f1)
  want=$(axl-tool gen $seed 2M | sha256sum | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then
    echo ROUND $round
  else
    echo ROUND-MISMATCH $round BYTES $(axl-tool gen $seed 2M | cmp -l - /tmp/got | wc -l)
  fi
done
kill $sender 2>/dev/null
wait $sender 2>/dev/null
)";
  if (c.vtpm) s += "wait $pcr 2>/dev/null\n";
  s += "echo IO-ERRORS $(dmesg | grep -ciE 'I/O error|blk_update_request|Buffer I/O|"
       "virtio.*(error|reset)|eth0.*(timeout|reset)')\n";
  return s;
}

std::string guest_toml(const Config& c) {
  std::string t =
      "name = " + quoted(c.name) + "\nmemory_mib = " + std::to_string(c.memory_mib) + "\n";
  t += "[[disk]]\ndriver = " + quoted(c.disk_driver) + "\nimage = " + quoted(c.image) + "\n";
  t += "[[nic]]\ndriver = " + quoted(c.nic_driver) + "\nmac = " + quoted(c.mac) + "\n";
  t += "[guest]\nscript = \"guest.sh\"\n";
  if (c.vtpm) t += "[vtpm]\nenabled = true\n";
  return t;
}

// Restarts and pids of everything a fault can take down.
struct Snapshot {
  bool ok = false;
  std::map<std::string, uint32_t> restarts;     // drivers, and "vtpm"
  std::map<std::string, std::string> failures;  // their last failure
  int hv_pid = 0, supervisor_pid = 0;
};

int read_pid(const std::string& f) {
  std::ifstream in(f);
  int pid = 0;
  in >> pid;
  return pid;
}

Snapshot snapshot(const HostPaths& p, const Config& c) {
  Snapshot s;
  s.hv_pid = read_pid(p.state_dir + "/hv.pid");
  s.supervisor_pid = read_pid(p.state_dir + "/supervisor.pid");
  auto d = call(p.supervisor_socket(), control::list_drivers(), 2000);
  if (!d) return s;
  for (auto x : d->get().getDrivers()) {
    s.restarts[x.getName()] = x.getRestarts();
    s.failures[x.getName()] = x.getLastFailure();
  }
  if (c.vtpm) {
    auto v = call(p.supervisor_socket(), control::supervisor::list_vtpms(), 2000);
    if (!v) return s;
    for (auto x : v->get().getVtpms())
      if (x.getDomain() == c.name) {
        s.restarts["vtpm"] = x.getRestarts();
        s.failures["vtpm"] = x.getLastFailure();
      }
  }
  s.ok = true;
  return s;
}

// The key of a target in a snapshot's restarts.
std::string key_of(const Config& c, Target t) {
  switch (t) {
    case Target::kDisk:
      return c.disk_driver;
    case Target::kNic:
      return c.nic_driver;
    case Target::kVtpm:
      return "vtpm";
    default:
      return "";
  }
}

// The workload's progress marks.
struct Marks {
  uint64_t bytes = 0, rounds = 0, pcr = 0;
};

class Campaign {
 public:
  Campaign(const HostPaths& p, Config c) : p_(p), c_(std::move(c)), rx_(c_.seed + 1) {}

  int run(const std::vector<size_t>& order);

 private:
  Status setup();
  void teardown();
  void inject(uint32_t index, const Fault& f);
  Status send(const Fault& f);
  Marks marks() {
    Marks m;
    m.bytes = rx_.bytes();
    m.rounds = console_.rounds;
    m.pcr = console_.pcr_reads;
    return m;
  }
  // Polls the console (at most every 200 ms) and samples throughput (every
  // second); prints the progress line.
  void tick(bool force_console = false);
  bool moved(Target t, const Marks& from) const;
  void progress(bool final_line = false);
  void finish_workload();
  void write_report();

  HostPaths p_;
  Config c_;
  Receiver rx_;
  Report r_;
  Console console_;
  Clock::time_point t0_ = Clock::now(), last_console_{}, last_sample_{}, last_progress_{};
  uint64_t last_sample_bytes_ = 0;
  bool created_ = false;
  std::string work_dir_;
  bool tty_ = isatty(2);
};

Status Campaign::setup() {
  std::error_code ec;
  fs::create_directories(c_.report_dir, ec);
  if (ec) return make_error("cannot create " + c_.report_dir + ": " + ec.message());
  work_dir_ = fs::absolute(c_.report_dir, ec).string() + "/workload";
  fs::create_directories(work_dir_, ec);
  if (ec) return make_error("cannot create " + work_dir_ + ": " + ec.message());
  struct stat st {};
  if (::stat(c_.image.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < (64 << 20))
    return make_error("workload.image " + c_.image + " is not a regular file of 64 MiB or more");
  auto d = call(p_.supervisor_socket(), control::list_drivers(), 5000);
  if (!d) return d.error();
  for (auto [name, kind] : {std::pair{c_.disk_driver, "blk"}, std::pair{c_.nic_driver, "net"}}) {
    bool found = false;
    for (auto x : d->get().getDrivers())
      if (x.getName() == name) {
        found = true;
        if (std::string(x.getKind().cStr()) != kind)
          return make_error("driver '" + name + "' is a " + x.getKind().cStr() + " driver, not " +
                            kind);
      }
    if (!found) return make_error("driver '" + name + "' is not running on this host");
  }
  const std::string script = guest_script(c_, c_.seed + 1);
  const std::string toml = guest_toml(c_);
  {
    std::ofstream(work_dir_ + "/guest.sh") << script;
    std::ofstream(work_dir_ + "/guest.toml") << toml;
  }
  if (auto s = rx_.start(c_.host_addr, c_.port); !s) return s;
  auto cr = call(p_.hv_socket(), control::hv::create(toml, work_dir_, c_.vtpm ? "new" : ""));
  if (!cr) return make_error("cannot create the workload domain: " + cr.error().message);
  created_ = true;
  fprintf(stderr, "campaign: workload domain %s created; waiting for its first disk round\n",
          c_.name.c_str());
  const auto start = Clock::now();
  while (since_ms(start) < 300000 && !g_stop.load()) {
    tick(true);
    if (console_.rounds >= 1 && rx_.bytes() > 0 && (!c_.vtpm || console_.pcr_reads >= 1)) return {};
    if (console_.failed) break;
    sleep_ms(200);
  }
  if (g_stop.load()) return make_error("interrupted before the workload ran");
  return make_error("the workload did not start within 300 s (no disk round, stream or PCR read)");
}

void Campaign::tick(bool force_console) {
  const auto now = Clock::now();
  if (force_console || since_ms(last_console_, now) >= 200) {
    last_console_ = now;
    if (auto log = console_log(p_, c_.name)) console_ = parse_console(*log);
  }
  if (last_sample_ == Clock::time_point{}) {
    last_sample_ = now;
    last_sample_bytes_ = rx_.bytes();
  } else if (since_ms(last_sample_, now) >= 1000) {
    const uint64_t b = rx_.bytes();
    const double secs = since_ms(last_sample_, now) / 1000.0;
    r_.throughput.push_back(Sample{since_ms(t0_, now) / 1000.0,
                                   double(b - last_sample_bytes_) / 1048576.0 / secs,
                                   console_.rounds});
    last_sample_ = now;
    last_sample_bytes_ = b;
  }
  if (since_ms(last_progress_, now) >= 1000) progress();
}

void Campaign::progress(bool final_line) {
  last_progress_ = Clock::now();
  const size_t done = r_.injections.size();
  const double elapsed = since_ms(t0_) / 1000.0;
  const double mibs = r_.throughput.empty() ? 0 : r_.throughput.back().mib_s;
  std::string left = "-";
  if (done > 0) {
    const double per = elapsed / double(done);
    const int secs = int(per * double(r_.planned - done));
    char b[32];
    snprintf(b, sizeof b, "%d:%02d", secs / 60, secs % 60);
    left = b;
  }
  fprintf(stderr, "%scampaign: %zu/%u injected, %llu failed, %.1f MiB/s, %s left%s",
          tty_ ? "\r\033[K" : "", done, r_.planned, static_cast<unsigned long long>(r_.failures()),
          mibs, left.c_str(), tty_ && !final_line ? "" : "\n");
  fflush(stderr);
}

bool Campaign::moved(Target t, const Marks& m) const {
  const bool disk = console_.rounds > m.rounds;
  const bool net = rx_.bytes() >= m.bytes + (256 << 10);
  switch (t) {
    case Target::kDisk:
      return disk;
    case Target::kNic:
      return net;
    case Target::kVtpm:
      return console_.pcr_reads > m.pcr;
    default:
      return disk && net;
  }
}

Status Campaign::send(const Fault& f) {
  Result<control::ControlReply> r = make_error("no target");
  const std::string driver = key_of(c_, f.target);
  if (f.target == Target::kDisk || f.target == Target::kNic) {
    if (f.kind == "kill")
      r = call(p_.supervisor_socket(), control::supervisor::kill_driver(driver, "KILL"));
    else
      r = call(p_.supervisor_socket(), control::supervisor::inject_fault(driver, f.kind, {}));
  } else if (f.target == Target::kVtpm) {
    r = call(p_.supervisor_socket(), control::supervisor::inject_vtpm_fault(c_.name, f.kind));
  } else {
    r = call(f.target == Target::kHv ? p_.hv_socket() : p_.supervisor_socket(),
             control::supervisor::inject_daemon_fault(f.kind));
  }
  if (!r) return r.error();
  return {};
}

void Campaign::inject(uint32_t index, const Fault& f) {
  Injection in;
  in.index = index;
  in.fault = f.label;
  in.expect_restart = expects_restart(f);
  Snapshot before;
  for (int i = 0; i < 50 && !(before = snapshot(p_, c_)).ok; ++i) sleep_ms(100);
  const std::string key = key_of(c_, f.target);
  const auto t_inj = Clock::now();
  in.at_s = since_ms(t0_, t_inj) / 1000.0;
  Marks m = marks();
  auto finish = [&](std::string error) {
    in.error = std::move(error);
    r_.injections.push_back(in);
  };
  if (auto s = send(f); !s) return finish("not injected: " + s.error().message);

  // detected(): the restart the fault should cause has been seen.
  auto detected = [&](const Snapshot& s) {
    if (!s.ok && f.target != Target::kSupervisor) return false;
    switch (f.target) {
      case Target::kHv:
        return s.hv_pid && s.hv_pid != before.hv_pid;
      case Target::kSupervisor:
        return s.supervisor_pid && s.supervisor_pid != before.supervisor_pid && s.ok;
      default:
        return s.restarts.count(key) && s.restarts.at(key) > before.restarts[key];
    }
  };
  Clock::time_point t_detect{};
  const bool quiet = !in.expect_restart;
  if (quiet) {
    // No failure by itself: nothing may restart meanwhile.  The campaign
    // then ends it with a restart, which is the one it waits for below.
    while (since_ms(t_inj) < c_.quiet_ms && !g_stop.load()) {
      tick();
      sleep_ms(50);
    }
    Snapshot s = snapshot(p_, c_);
    if (s.ok && detected(s)) return finish(f.kind + " was taken for a failure: " + s.failures[key]);
    in.detected = true;
    if (auto r = call(p_.supervisor_socket(), control::supervisor::restart_driver(key)); !r)
      return finish("cannot end " + f.kind + " with a restart: " + r.error().message);
    m = marks();
  }
  const auto t_from = Clock::now();
  while (!g_stop.load()) {
    tick();
    if (t_detect == Clock::time_point{}) {
      Snapshot s = snapshot(p_, c_);
      if (detected(s)) {
        t_detect = Clock::now();
        if (in.expect_restart) {
          in.detected = true;
          in.detect_ms = since_ms(t_inj, t_detect);
        }
        if (!key.empty()) in.cause = s.failures[key];
        m = marks();
      }
    } else if (moved(f.target, m)) {
      in.recovered = true;
      in.outage_ms = since_ms(quiet ? t_from : t_inj);
      break;
    }
    if (since_ms(t_from) > c_.timeout_ms) break;
    sleep_ms(20);
  }
  if (g_stop.load() && !in.recovered) return finish("interrupted");
  if (t_detect == Clock::time_point{})
    return finish("not detected within " + std::to_string(c_.timeout_ms) + " ms");
  if (!in.recovered)
    return finish("the workload did not move again within " + std::to_string(c_.timeout_ms) +
                  " ms");
  // Restarts nothing explains: any but the one of the target.
  const auto settle = Clock::now();
  while (since_ms(settle) < c_.settle_ms && !g_stop.load()) {
    tick();
    sleep_ms(50);
  }
  Snapshot after;
  for (int i = 0; i < 50 && !(after = snapshot(p_, c_)).ok; ++i) sleep_ms(100);
  for (auto& [name, n] : after.restarts) {
    const uint32_t was = before.restarts.count(name) ? before.restarts[name] : 0;
    const uint32_t expected = name == key ? 1 : 0;
    if (n > was + expected)
      r_.unexpected_restarts.push_back(name + " restarted " + std::to_string(n - was - expected) +
                                       " more time(s) around #" + std::to_string(index) + " " +
                                       f.label + ": " + after.failures[name]);
  }
  if (f.target != Target::kHv && after.hv_pid != before.hv_pid)
    r_.unexpected_restarts.push_back("the hypervisor restarted around #" + std::to_string(index));
  if (f.target != Target::kSupervisor && after.supervisor_pid != before.supervisor_pid)
    r_.unexpected_restarts.push_back("the supervisor restarted around #" + std::to_string(index));
  finish("");
}

void Campaign::finish_workload() {
  // The guest's stopper listens on port + 2: a connection ends the workload.
  rx_.expect_end();
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(c_.port + 2));
  inet_pton(AF_INET, c_.guest_addr.c_str(), &sa.sin_addr);
  bool told = false;
  for (int i = 0; i < 50 && !told; ++i) {
    told = ::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    if (!told) {
      sleep_ms(200);
      s.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    }
  }
  s.reset();
  if (!told) {
    r_.workload_error = "the guest could not be told to stop";
    return;
  }
  const auto start = Clock::now();
  while (since_ms(start) < 120000 && !g_stop.load()) {
    tick(true);
    if (console_.kernel_errors >= 0) return;
    sleep_ms(200);
  }
  r_.workload_error = "the guest did not finish its workload within 120 s";
}

void Campaign::teardown() {
  rx_.stop();
  if (!created_) return;
  if (auto r = call(p_.hv_socket(), control::hv::destroy(c_.name), 60000); !r)
    fprintf(stderr, "campaign: cannot destroy the workload domain %s: %s\n", c_.name.c_str(),
            r.error().message.c_str());
  created_ = false;
}

void Campaign::write_report() {
  r_.duration_s = since_ms(t0_) / 1000.0;
  r_.stream_bytes = rx_.bytes();
  r_.stream_corrupted_bytes = rx_.corrupted();
  r_.disk_rounds = console_.rounds;
  r_.disk_mismatched_rounds = console_.mismatched_rounds;
  r_.disk_corrupted_bytes = console_.mismatched_bytes;
  r_.pcr_reads = console_.pcr_reads;
  r_.pcr_errors = console_.pcr_errors;
  r_.guest_kernel_errors = console_.kernel_errors;
  if (r_.workload_error.empty()) r_.workload_error = rx_.error();
  if (r_.workload_error.empty() && console_.failed)
    r_.workload_error = "the guest's workload script failed (WORKLOAD-FAILED on its console)";
  const std::string dir = c_.report_dir;
  std::ofstream(dir + "/report.json") << to_json(r_);
  std::ofstream(dir + "/report.txt") << to_text(r_);
  std::ofstream(dir + "/outage.svg") << outage_svg(r_);
  std::ofstream(dir + "/throughput.svg") << throughput_svg(r_);
}

int Campaign::run(const std::vector<size_t>& order) {
  r_.seed = c_.seed;
  r_.planned = uint32_t(order.size());
  if (auto s = setup(); !s) {
    teardown();
    if (g_stop.load()) {
      r_.interrupted = true;
      write_report();
    }
    return fail(s.error().message);
  }
  t0_ = Clock::now();
  for (size_t i = 0; i < order.size() && !g_stop.load(); ++i) {
    inject(uint32_t(i + 1), c_.mix[order[i]]);
    if (!r_.injections.back().error.empty())
      fprintf(stderr, "%scampaign: #%zu %s: %s\n", tty_ ? "\r\033[K" : "", i + 1,
              r_.injections.back().fault.c_str(), r_.injections.back().error.c_str());
  }
  r_.interrupted = g_stop.load();
  if (!r_.interrupted) finish_workload();
  progress(true);
  teardown();
  write_report();
  fputs(to_text(r_).c_str(), stdout);
  printf("report: %s/report.json, report.txt, outage.svg, throughput.svg\n", c_.report_dir.c_str());
  if (r_.interrupted) {
    fprintf(stderr, "campaign: interrupted; the partial report is written\n");
    return 130;
  }
  return r_.passed() ? 0 : 1;
}

}  // namespace

int campaign(const HostPaths& p, const std::string& file, bool plan_only) {
  auto text = config::read_file(file);
  if (!text) return fail(text.error().message);
  std::error_code ec;
  const std::string base = fs::path(fs::absolute(file, ec)).parent_path().string();
  auto cfg = parse(*text, file, base);
  if (!cfg) return fail(cfg.error().message);
  const std::vector<size_t> order = plan(*cfg);
  if (plan_only) {
    printf("seed %llu, %zu injections\n", static_cast<unsigned long long>(cfg->seed), order.size());
    for (size_t i = 0; i < order.size(); ++i)
      printf("%zu %s\n", i + 1, cfg->mix[order[i]].label.c_str());
    return 0;
  }
  // Ctrl-C (or TERM) ends the campaign between steps: the workload domain
  // is destroyed and the partial report written.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  Campaign c(p, std::move(cfg).value());
  return c.run(order);
}

}  // namespace axl::cli
