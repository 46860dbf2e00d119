#include "supervisor/cgroup/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/log.h"

namespace axl::cgroup {
namespace {

// CFS bandwidth period: the kernel's default, short enough that a capped
// driver is throttled in slices well below a heartbeat interval.
constexpr uint64_t kCpuPeriodUs = 100000;
// How long a destructor waits for killed processes to leave the group.
constexpr auto kKillWait = std::chrono::seconds(2);

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Result<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return make_error(errno_text(path));
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(errno_text(path));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

// cgroupfs takes one value per write(2); a short write or an error is the
// kernel refusing the value (EBUSY, EINVAL, ...), reported as such.
Status write_file(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return make_error(errno_text("open " + path));
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n < 0) return make_error(errno_text("write '" + value + "' to " + path));
  return {};
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// "key value" lines (memory.events, pids.events, memory.oom_control).
// Returns -1 when the key is absent.
int64_t keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  int64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return -1;
}

int64_t keyed_file_value(const std::string& path, const std::string& key) {
  auto text = read_file(path);
  return text ? keyed_value(*text, key) : -1;
}

std::string join_path(const std::string& a, const std::string& b) {
  if (b.empty() || b == "/") return a;
  if (!a.empty() && a.back() == '/') return b.front() == '/' ? a + b.substr(1) : a + b;
  return b.front() == '/' ? a + b : a + "/" + b;
}

bool valid_component(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\n') == std::string::npos;
}

// mkdir that treats "already there" as success: a prefix left by a previous
// supervisor with the same pid is reused rather than failing startup.
Status make_dir(const std::string& path, bool* created) {
  if (::mkdir(path.c_str(), 0755) == 0) {
    if (created) *created = true;
    return {};
  }
  if (errno == EEXIST) return {};
  return make_error(errno_text("mkdir " + path));
}

struct Mount {
  std::string dir;
  std::vector<std::string> options;
};

// Mounts of one filesystem type from /proc/self/mounts.
std::vector<Mount> mounts_of_type(const std::string& type) {
  std::vector<Mount> out;
  auto text = read_file("/proc/self/mounts");
  if (!text) return out;
  for (const auto& line : split(*text, '\n')) {
    auto f = words(line);
    if (f.size() < 4 || f[2] != type) continue;
    out.push_back({f[1], split(f[3], ',')});
  }
  return out;
}

// Our own cgroup path per hierarchy, from /proc/self/cgroup: key "" is the
// cgroup2 entry ("0::/path"), otherwise one key per v1 controller.
std::string own_cgroup(const std::string& controller) {
  auto text = read_file("/proc/self/cgroup");
  if (!text) return "/";
  for (const auto& line : split(*text, '\n')) {
    auto first = line.find(':');
    auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    std::string ctrls = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (controller.empty() ? ctrls.empty() : contains(split(ctrls, ','), controller)) return path;
  }
  return "/";
}

// Parents worth trying, best first: our own cgroup keeps the drivers inside
// whatever the service manager accounts to the supervisor; the root is the
// fallback when our own cgroup cannot have children with controllers.
std::vector<std::string> candidate_parents(const std::string& own) {
  std::vector<std::string> out{own};
  if (own != "/") out.push_back("/");
  return out;
}

std::vector<pid_t> read_procs(const std::string& dir) {
  std::vector<pid_t> out;
  auto text = read_file(dir + "/cgroup.procs");
  if (!text) return out;
  std::istringstream in(*text);
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

int pidfd_open(pid_t pid) { return int(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return int(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// SIGKILLs every process listed in dir/cgroup.procs, and nothing else: a pid
// is pinned with a pidfd and signalled only if it is still listed after the
// pin, so a pid recycled by an unrelated process is never hit (a pidfd whose
// process died in between just gets ESRCH).
void kill_listed(const std::string& dir) {
  std::vector<std::pair<pid_t, UniqueFd>> pinned;
  for (pid_t p : read_procs(dir)) {
    UniqueFd fd(pidfd_open(p));
    if (fd) pinned.emplace_back(p, std::move(fd));
  }
  if (pinned.empty()) return;
  auto still = read_procs(dir);
  for (auto& [p, fd] : pinned) {
    if (std::find(still.begin(), still.end(), p) != still.end())
      pidfd_send_signal(fd.get(), SIGKILL);
  }
}

Status remove_dir(const std::string& dir) {
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
  return make_error(errno_text("rmdir " + dir));
}

struct V2Probe {
  std::string base;  // <mount><parent>/<prefix>
  std::vector<std::string> made;
  bool cpu = false;
};

// Tries one cgroup2 parent: the controllers must be available to it, enabled
// in its subtree_control (which fails with EBUSY on a non-root cgroup that
// holds processes, the "no internal processes" rule), and then enabled again
// in <prefix>'s subtree_control so every group below gets them.
Result<V2Probe> probe_v2_parent(const std::string& mount, const std::string& parent,
                                const std::string& prefix) {
  std::string dir = join_path(mount, parent);
  auto avail_text = read_file(dir + "/cgroup.controllers");
  if (!avail_text) return avail_text.error();
  auto avail = words(*avail_text);
  std::string missing;
  for (const char* c : {"memory", "pids"}) {
    if (!contains(avail, c)) missing += std::string(missing.empty() ? "" : ",") + c;
  }
  if (!missing.empty()) {
    std::string have;
    for (const auto& c : avail) have += (have.empty() ? "" : ",") + c;
    return make_error(dir + " lacks " + missing + " (has: " + (have.empty() ? "none" : have) + ")");
  }
  bool cpu = contains(avail, "cpu");
  auto enabled_text = read_file(dir + "/cgroup.subtree_control");
  if (!enabled_text) return enabled_text.error();
  auto enabled = words(*enabled_text);
  if (!contains(enabled, "memory") || !contains(enabled, "pids") ||
      (cpu && !contains(enabled, "cpu"))) {
    // One controller per write so a refused cpu (e.g. realtime tasks present)
    // does not cost us memory and pids.
    for (const char* c : {"memory", "pids"}) {
      if (contains(enabled, c)) continue;
      auto st = write_file(dir + "/cgroup.subtree_control", std::string("+") + c);
      if (!st) return st.error();
    }
    if (cpu && !contains(enabled, "cpu"))
      cpu = bool(write_file(dir + "/cgroup.subtree_control", "+cpu"));
  }
  V2Probe probe;
  probe.base = join_path(dir, prefix);
  bool created = false;
  auto st = make_dir(probe.base, &created);
  if (!st) return st.error();
  // Also one a predecessor made: it is ours to remove once empty.
  probe.made.push_back(probe.base);
  for (const auto& c : words(cpu ? "+memory +pids +cpu" : "+memory +pids")) {
    auto wst = write_file(probe.base + "/cgroup.subtree_control", c);
    if (!wst) {
      if (c == "+cpu") {
        cpu = false;
        continue;
      }
      if (created) ::rmdir(probe.base.c_str());
      return wst.error();
    }
  }
  probe.cpu = cpu;
  return probe;
}

}  // namespace

const char* breach_name(Breach b) {
  switch (b) {
    case Breach::kNone:
      return "none";
    case Breach::kMemory:
      return "memory";
    case Breach::kPids:
      return "pids";
  }
  return "?";
}

// ---------------------------------------------------------------- Manager

Result<std::unique_ptr<Manager>> Manager::detect(const std::string& prefix) {
  if (!valid_component(prefix))
    return make_error("cgroup prefix '" + prefix + "' is not one path component");
  std::string v2_reason, v1_reason;

  // cgroup2 first: it is what a user's host has, and it alone offers
  // cgroup.kill and memory.events.
  auto v2_mounts = mounts_of_type("cgroup2");
  if (v2_mounts.empty()) {
    v2_reason = "no cgroup2 mount";
  } else {
    const std::string& mount = v2_mounts.front().dir;
    for (const auto& parent : candidate_parents(own_cgroup(""))) {
      auto probe = probe_v2_parent(mount, parent, prefix);
      if (probe) {
        std::unique_ptr<Manager> m(new Manager(Version::kV2));
        m->memory_base_ = m->pids_base_ = probe->base;
        if (probe->cpu) m->cpu_base_ = probe->base;
        m->made_ = probe->made;
        m->description_ = "cgroup2 at " + probe->base +
                          (probe->cpu ? " (memory, pids, cpu)" : " (memory, pids; no cpu)");
        return m;
      }
      if (!v2_reason.empty()) v2_reason += "; ";
      v2_reason += probe.error().message;
    }
    v2_reason = "cgroup2: " + v2_reason;
  }

  // cgroup v1: one hierarchy per controller (cpu often co-mounted with
  // cpuacct, which is fine: the directory serves both).
  auto v1_mounts = mounts_of_type("cgroup");
  auto find_mount = [&](const std::string& c) -> std::string {
    for (const auto& m : v1_mounts) {
      if (contains(m.options, c)) return m.dir;
    }
    return "";
  };
  std::unique_ptr<Manager> m(new Manager(Version::kV1));
  std::vector<std::string> have;
  for (const char* c : {"memory", "pids", "cpu"}) {
    std::string mount = find_mount(c);
    std::string reason;
    std::string base;
    if (mount.empty()) {
      reason = std::string("no ") + c + " mount";
    } else {
      for (const auto& parent : candidate_parents(own_cgroup(c))) {
        std::string dir = join_path(join_path(mount, parent), prefix);
        bool created = false;
        auto st = make_dir(dir, &created);
        if (st) {
          m->made_.push_back(dir);  // also a predecessor's: ours to remove
          base = dir;
          break;
        }
        reason = st.error().message;
      }
    }
    if (base.empty()) {
      if (std::string(c) == "cpu") continue;  // optional: limits without a CPU cap
      v1_reason = "cgroup v1: " + reason;
      break;
    }
    have.push_back(c);
    if (std::string(c) == "memory") m->memory_base_ = base;
    if (std::string(c) == "pids") m->pids_base_ = base;
    if (std::string(c) == "cpu") m->cpu_base_ = base;
  }
  if (v1_reason.empty()) {
    // Worth a line: on a hybrid host it explains why limits live in v1.
    AXL_INFO("cgroup: using v1; %s", v2_reason.c_str());
    std::string list;
    for (const auto& c : have) list += (list.empty() ? "" : ", ") + c;
    m->description_ = "cgroup v1 (" + list + ")";
    return m;
  }
  // m's destructor removes whatever prefix directories it made.
  return make_error("no usable cgroups: " + v2_reason + "; " + v1_reason);
}

Manager::~Manager() {
  // Children first: made_ is in creation order and holds only prefixes, so
  // order does not matter, but a prefix still holding groups stays (EBUSY).
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
    auto st = remove_dir(*it);
    if (!st) AXL_WARN("cgroup: %s", st.error().message.c_str());
  }
}

std::string Manager::describe() const { return description_; }

Result<std::unique_ptr<Group>> Manager::create(const std::string& name, const Limits& limits) {
  if (!valid_component(name))
    return make_error("cgroup name '" + name + "' is not one path component");
  if (limits.cpu_percent != 0 && cpu_base_.empty())
    return make_error("cgroup: cpu limit requested but no cpu controller is available");
  std::unique_ptr<Group> g(new Group(version_, name));
  // The group's destructor undoes partial creation, so every early return
  // below leaves nothing behind.
  auto make = [&](const std::string& base) -> Result<std::string> {
    std::string dir = join_path(base, name);
    for (const auto& d : g->dirs_) {
      if (d == dir) return dir;  // cgroup2: one directory serves all controllers
    }
    if (::mkdir(dir.c_str(), 0755) != 0) return make_error(errno_text("mkdir " + dir));
    g->dirs_.push_back(dir);
    return dir;
  };
  auto mem = make(memory_base_);
  if (!mem) return mem.error();
  g->memory_dir_ = *mem;
  auto pids = make(pids_base_);
  if (!pids) return pids.error();
  g->pids_dir_ = *pids;
  if (!cpu_base_.empty()) {
    auto cpu = make(cpu_base_);
    if (!cpu) return cpu.error();
    g->cpu_dir_ = *cpu;
  }
  if (auto st = g->apply(limits); !st) return st.error();
  if (auto st = g->watch(); !st) {
    // Limits still hold without notification; breach() still works by polling.
    AXL_WARN("cgroup %s: no event notification: %s", name.c_str(), st.error().message.c_str());
  }
  return g;
}

Result<std::unique_ptr<Group>> Manager::adopt(const std::string& name) {
  if (!valid_component(name))
    return make_error("cgroup name '" + name + "' is not one path component");
  std::unique_ptr<Group> g(new Group(version_, name));
  auto find = [&](const std::string& base) -> Result<std::string> {
    std::string dir = join_path(base, name);
    if (!exists(dir + "/cgroup.procs")) return make_error("no cgroup " + dir);
    for (const auto& d : g->dirs_)
      if (d == dir) return dir;
    g->dirs_.push_back(dir);
    return dir;
  };
  auto mem = find(memory_base_);
  if (!mem) return mem.error();
  g->memory_dir_ = *mem;
  auto pids = find(pids_base_);
  if (!pids) return pids.error();
  g->pids_dir_ = *pids;
  if (!cpu_base_.empty()) {
    if (auto cpu = find(cpu_base_)) g->cpu_dir_ = *cpu;
  }
  if (auto st = g->watch(); !st)
    AXL_WARN("cgroup %s: no event notification: %s", name.c_str(), st.error().message.c_str());
  return g;
}

// ---------------------------------------------------------------- Group

Status Group::apply(const Limits& limits) {
  if (version_ == Version::kV2) {
    if (limits.memory_max_bytes) {
      if (auto st =
              write_file(memory_dir_ + "/memory.max", std::to_string(limits.memory_max_bytes));
          !st)
        return st;
      // Without this, a driver over its limit swaps instead of being killed,
      // and the limit stops bounding what it can take from the host.
      if (exists(memory_dir_ + "/memory.swap.max")) {
        if (auto st = write_file(memory_dir_ + "/memory.swap.max", "0"); !st) return st;
      }
    }
    // A driver domain is one unit: if the OOM killer picks one of its
    // processes, take them all so the restart starts clean.
    if (exists(memory_dir_ + "/memory.oom.group"))
      (void)write_file(memory_dir_ + "/memory.oom.group", "1");
    if (limits.pids_max) {
      if (auto st = write_file(pids_dir_ + "/pids.max", std::to_string(limits.pids_max)); !st)
        return st;
    }
    if (limits.cpu_percent) {
      uint64_t quota = std::max<uint64_t>(1000, kCpuPeriodUs * limits.cpu_percent / 100);
      if (auto st = write_file(cpu_dir_ + "/cpu.max",
                               std::to_string(quota) + " " + std::to_string(kCpuPeriodUs));
          !st)
        return st;
    }
    return {};
  }

  // v1.  A new memcg inherits oom_kill_disable from its parent; the point of
  // the limit is that the kernel kills the offender, so force it off.
  if (exists(memory_dir_ + "/memory.oom_control")) {
    if (auto st = write_file(memory_dir_ + "/memory.oom_control", "0"); !st) return st;
  }
  if (limits.memory_max_bytes) {
    std::string v = std::to_string(limits.memory_max_bytes);
    // memsw must stay >= the memory limit, so the memory limit goes first.
    if (auto st = write_file(memory_dir_ + "/memory.limit_in_bytes", v); !st) return st;
    if (exists(memory_dir_ + "/memory.memsw.limit_in_bytes")) {
      if (auto st = write_file(memory_dir_ + "/memory.memsw.limit_in_bytes", v); !st) return st;
    }
  }
  if (limits.pids_max) {
    if (auto st = write_file(pids_dir_ + "/pids.max", std::to_string(limits.pids_max)); !st)
      return st;
  }
  if (limits.cpu_percent) {
    uint64_t quota = std::max<uint64_t>(1000, kCpuPeriodUs * limits.cpu_percent / 100);
    if (auto st = write_file(cpu_dir_ + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs)); !st)
      return st;
    if (auto st = write_file(cpu_dir_ + "/cpu.cfs_quota_us", std::to_string(quota)); !st) return st;
  }
  return {};
}

// One epoll fd gathers every source so the supervisor waits on a single fd
// per group: inotify on memory.events / pids.events (the kernel raises a
// modify event on them, cgroup-v2.rst "memory.events"), and on v1 an eventfd
// registered for memory.oom_control (cgroup-v1/memory.rst section 9).
Status Group::watch() {
  events_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!events_) return make_error(errno_text("epoll_create1"));
  std::string reasons;
  auto add_source = [&](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return ::epoll_ctl(events_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
  };

  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  int watches = 0;
  if (inotify_) {
    // On v1, Linux 6.13 and later notify only a pids.events.local that v1
    // lacks, so this watch may stay silent there; breach() still reads the
    // count, and the memory eventfd below still fires.
    std::vector<std::string> files{pids_dir_ + "/pids.events"};
    if (exists(pids_dir_ + "/pids.events.local")) files.push_back(pids_dir_ + "/pids.events.local");
    if (version_ == Version::kV2) files.push_back(memory_dir_ + "/memory.events");
    for (const auto& f : files) {
      if (::inotify_add_watch(inotify_.get(), f.c_str(), IN_MODIFY) >= 0)
        ++watches;
      else
        reasons += errno_text("inotify " + f) + " ";
    }
  }
  if (watches > 0)
    add_source(inotify_.get());
  else
    inotify_.reset();

  if (version_ == Version::kV1) {
    oom_eventfd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    oom_control_.reset(::open((memory_dir_ + "/memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC));
    bool ok =
        oom_eventfd_ && oom_control_ &&
        write_file(memory_dir_ + "/cgroup.event_control",
                   std::to_string(oom_eventfd_.get()) + " " + std::to_string(oom_control_.get()))
            .ok();
    if (ok) {
      add_source(oom_eventfd_.get());
    } else {
      reasons += "memory.oom_control notification unavailable";
      oom_eventfd_.reset();
      oom_control_.reset();
    }
  }
  if (!inotify_ && !oom_eventfd_) {
    events_.reset();
    return make_error(reasons);
  }
  return {};
}

void Group::ack_events() {
  char buf[4096];
  if (inotify_) {
    while (::read(inotify_.get(), buf, sizeof buf) > 0) {
    }
  }
  if (oom_eventfd_) {
    uint64_t v;
    while (::read(oom_eventfd_.get(), &v, sizeof v) > 0) {
    }
  }
}

Status Group::add(pid_t pid) {
  std::string p = std::to_string(pid);
  for (const auto& d : dirs_) {
    if (auto st = write_file(d + "/cgroup.procs", p); !st) return st;
  }
  return {};
}

Result<std::vector<UniqueFd>> Group::open_procs_files() const {
  std::vector<UniqueFd> out;
  for (const auto& d : dirs_) {
    std::string path = d + "/cgroup.procs";
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return make_error(errno_text("open " + path));
    out.push_back(std::move(fd));
  }
  return out;
}

Breach Group::breach() const {
  if (version_ == Version::kV2) {
    if (keyed_file_value(memory_dir_ + "/memory.events", "oom_kill") > 0) return Breach::kMemory;
  } else {
    auto oom = read_file(memory_dir_ + "/memory.oom_control");
    int64_t kills = oom ? keyed_value(*oom, "oom_kill") : -1;
    if (kills > 0) return Breach::kMemory;
    // Kernels before 4.13 do not count oom_kill; a hit on the limit is the
    // best evidence left (it also counts reclaim that succeeded, hence last).
    if (kills < 0) {
      auto fail = read_file(memory_dir_ + "/memory.failcnt");
      if (fail && std::strtoll(fail->c_str(), nullptr, 10) > 0) return Breach::kMemory;
    }
  }
  // pids.events.local (Linux 6.13) is where a cgroup2 mounted with
  // pids_localevents counts the forks refused inside this group.
  if (keyed_file_value(pids_dir_ + "/pids.events", "max") > 0 ||
      keyed_file_value(pids_dir_ + "/pids.events.local", "max") > 0)
    return Breach::kPids;
  return Breach::kNone;
}

std::vector<pid_t> Group::pids() const {
  std::vector<pid_t> out;
  for (const auto& d : dirs_) {
    for (pid_t p : read_procs(d)) {
      if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
    }
  }
  return out;
}

bool Group::kill_all() {
  // cgroup.kill (Linux 5.14) kills atomically, forks in flight included.
  bool used_kill_file = false;
  if (version_ == Version::kV2 && !dirs_.empty() && exists(dirs_.front() + "/cgroup.kill"))
    used_kill_file = write_file(dirs_.front() + "/cgroup.kill", "1").ok();
  auto deadline = std::chrono::steady_clock::now() + kKillWait;
  for (;;) {
    bool empty = true;
    for (const auto& d : dirs_) {
      if (read_procs(d).empty()) continue;
      empty = false;
      // Repeated so children forked between a read and the kill are caught
      // on the next round; pids.max bounds how many there can be.
      if (!used_kill_file) kill_listed(d);
    }
    if (empty) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool Group::remove_step() {
  events_.reset();
  oom_eventfd_.reset();
  oom_control_.reset();
  inotify_.reset();
  bool occupied = false;
  for (const auto& d : dirs_) {
    if (read_procs(d).empty()) continue;
    occupied = true;
    if (version_ == Version::kV2 && exists(d + "/cgroup.kill"))
      (void)write_file(d + "/cgroup.kill", "1");
    else
      kill_listed(d);
  }
  if (occupied) return false;
  while (!dirs_.empty()) {
    if (::rmdir(dirs_.back().c_str()) != 0) {
      if (errno == EBUSY) return false;
      if (errno != ENOENT)
        AXL_WARN("cgroup %s: rmdir %s: %s", name_.c_str(), dirs_.back().c_str(),
                 std::strerror(errno));
    }
    dirs_.pop_back();
  }
  return true;
}

Group::~Group() {
  // Unregister before removal: closing the eventfd drops the v1 event.
  events_.reset();
  oom_eventfd_.reset();
  oom_control_.reset();
  inotify_.reset();
  if (!kill_all()) AXL_WARN("cgroup %s: processes still inside after SIGKILL", name_.c_str());
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    // An exiting task can keep the group busy for a moment after it left
    // cgroup.procs; retry briefly rather than leak the directory.
    int err = 0;
    for (int i = 0; i < 200; ++i) {
      err = ::rmdir(it->c_str()) == 0 ? 0 : errno;
      if (err != EBUSY) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (err != 0 && err != ENOENT)
      AXL_WARN("cgroup %s: rmdir %s: %s", name_.c_str(), it->c_str(), std::strerror(err));
  }
}

}  // namespace axl::cgroup
