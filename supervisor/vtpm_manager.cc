#include "supervisor/vtpm_manager.h"

#include "common/fs.h"
#include "vtpm/kdf.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "common/config.h"
#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"
#include "supervisor/driver_manager.h"

namespace axl::supervisor {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

const char* to_string(VtpmState s) {
  switch (s) {
    case VtpmState::kStarting:
      return "starting";
    case VtpmState::kRunning:
      return "running";
    case VtpmState::kFailed:
      return "failed";
    case VtpmState::kStopped:
      return "stopped";
  }
  return "?";
}

namespace {

// The last non-empty line of a log: what a vTPM that failed to start said.
std::string last_line(const std::string& path) {
  auto text = config::read_file(path);
  if (!text) return "";
  std::string s = *text;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  if (auto p = s.rfind('\n'); p != std::string::npos) s = s.substr(p + 1);
  return s;
}

Status make_private_dir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return make_error("cannot create " + path + ": " + ec.message());
  if (::chmod(path.c_str(), 0700) != 0)
    return make_error("cannot chmod " + path + ": " + strerror(errno));
  return {};
}

Error sys_error(const std::string& what) { return make_error(what + ": " + strerror(errno)); }

// The names in a directory (not . and ..).
Result<std::vector<std::string>> entries(int dirfd, const std::string& path) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("cannot read " + path);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return sys_error("cannot read " + path);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

Result<UniqueFd> unix_listen(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return sys_error("socket");
  if (auto b = wire::bind_private(fd.get(), path); !b) return b.error();
  if (::listen(fd.get(), 4) != 0) {
    Error err = sys_error("cannot listen on " + path);
    ::unlink(path.c_str());
    return err;
  }
  return fd;
}

Result<UniqueFd> tcp_listen(uint32_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return sys_error("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd.get(), 16) != 0)
    return sys_error("cannot listen on 127.0.0.1:" + std::to_string(port));
  return fd;
}

// Where each fd lies in a serving instance (the argv below names them).
constexpr int kReadyFd = 3, kHandoverFd = 4, kCtrlConnFd = 5, kDataConnFd = 6, kStateFd = 7,
              kKeyFd = 8, kMeasureLogFd = 9, kCtrlListenFd = 10, kCmdListenFd = 11, kPortCmdFd = 12,
              kPortCtrlFd = 13, kHealthFd = 14, kGenerationFd = 15;

// vtpm/state_store.h: a state dir without it holds no TPM yet.
constexpr const char* kPermanentState = "permanent.state";

}  // namespace

VtpmManager::VtpmManager(asio::io_context& io, std::string vtpm_bin, std::string state_dir,
                         cgroup::Manager* cgroups)
    : io_(io),
      bin_(std::move(vtpm_bin)),
      state_dir_(std::move(state_dir)),
      cgroups_(cgroups),
      reaper_(io) {}

VtpmManager::~VtpmManager() { stop_all(); }

Status VtpmManager::ensure_host_key() {
  if (auto s = make_private_dir(state_dir_ + "/vtpm-host"); !s) return s;
  if (auto s = make_private_dir(state_dir_ + "/vtpm-host/ca"); !s) return s;
  const std::string key = state_dir_ + "/vtpm-host/key";
  UniqueFd fd(::open(key.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) return {};
    return make_error("cannot create " + key + ": " + strerror(errno));
  }
  uint8_t k[32];
  if (getrandom(k, sizeof k, 0) != sizeof k || ::write(fd.get(), k, sizeof k) != sizeof k ||
      ::fsync(fd.get()) != 0) {
    ::unlink(key.c_str());
    return make_error("cannot write " + key + ": " + strerror(errno));
  }
  AXL_INFO("created the host vTPM key %s", key.c_str());
  return {};
}

std::string VtpmManager::counter_path(const std::string& domain) const {
  return state_dir_ + "/vtpm-host/counters/" + domain;
}

uint32_t VtpmManager::rollback_floor(VtpmDomain& v) {
  uint32_t recorded = 0;
  if (auto text = config::read_file(counter_path(v.domain)))
    recorded = uint32_t(std::strtoul(text->c_str(), nullptr, 10));
  uint32_t newest = recorded;
  uint8_t b[4];
  // The reports are datagrams of 4 bytes; anything else is skipped.  The
  // instance is untrusted: a value only ever raises the floor of its own
  // state, which at worst refuses that state (its own denial of service).
  for (ssize_t n; v.generations &&
                  (n = ::recv(v.generations.get(), b, sizeof b, MSG_DONTWAIT | MSG_TRUNC)) >= 0;)
    if (n == ssize_t(sizeof b))
      newest = std::max(newest,
                        uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3]);
  if (newest != recorded) {
    const std::string path = counter_path(v.domain), tmp = path + ".new";
    UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    const std::string text = std::to_string(newest) + "\n";
    if (!f || ::write(f.get(), text.data(), text.size()) != ssize_t(text.size()) ||
        ::fsync(f.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0)
      AXL_ERROR("vTPM of domain %s: cannot record generation %u in %s: %s", v.domain.c_str(),
                newest, path.c_str(), strerror(errno));
  }
  return newest;
}

Result<UniqueFd> VtpmManager::new_generation_pipe(VtpmDomain& v) {
  (void)rollback_floor(v);  // what the last instance reported is kept first
  if (auto s = make_private_dir(state_dir_ + "/vtpm-host/counters"); !s) return s.error();
  int p[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, p) != 0)
    return sys_error("socketpair");
  ::shutdown(p[0], SHUT_WR);
  v.generations.reset(p[0]);
  return UniqueFd(p[1]);
}

// What a vTPM is handed as its key: a memfd with the key derived for its
// own id (vtpm/kdf.h), never the host key itself, so one vTPM that is
// broken into unseals no other's state.
Result<UniqueFd> VtpmManager::instance_key_fd(const std::string& domain) {
  UniqueFd host(::open(host_key().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!host) return sys_error("cannot open " + host_key());
  vtpm::Key k;
  uint8_t extra = 0;
  if (::read(host.get(), k.bytes.data(), k.bytes.size()) != ssize_t(k.bytes.size()) ||
      ::read(host.get(), &extra, 1) != 0)
    return make_error(host_key() + ": the host vTPM key is 32 bytes");
  const vtpm::Key mine = vtpm::derive_instance_key(k, domain);
  UniqueFd fd(::memfd_create("vtpm-key", MFD_CLOEXEC));
  if (!fd ||
      ::write(fd.get(), mine.bytes.data(), mine.bytes.size()) != ssize_t(mine.bytes.size()) ||
      ::lseek(fd.get(), 0, SEEK_SET) != 0)
    return sys_error("cannot hand the vTPM of " + domain + " its key");
  return fd;
}

void VtpmManager::start(const std::string& domain, bool measure_log, uint32_t command_port,
                        std::function<void(Status)> done) {
  if (!config::valid_name(domain))
    return done(make_error("startVtpm: bad domain name '" + domain + "'"));
  if (command_port != 0 && (command_port < 1024 || command_port > 65534))
    return done(make_error("startVtpm: command port " + std::to_string(command_port) +
                           " out of range 1024..65534"));
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(),
                         [&](const auto& v) { return v->domain == domain; });
  if (it != vtpms_.end()) {
    if ((*it)->state == VtpmState::kRunning || (*it)->state == VtpmState::kStarting)
      return done(make_error("domain '" + domain + "' already has a " + to_string((*it)->state) +
                             " vTPM (pid " + std::to_string((*it)->pid()) + ")"));
    vtpms_.erase(it);  // a stopped or failed one of an earlier life of this domain
  }
  struct stat st {};
  if (::stat(dom_dir(domain).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return done(make_error("startVtpm: no domain directory " + dom_dir(domain)));
  if (auto s = ensure_host_key(); !s) return done(s.error());
  auto needs = clear_unprovisioned(domain);
  if (!needs) return done(needs.error());
  // Listed from here on (as starting), so a second start is refused and a
  // stop cancels this one.
  vtpms_.push_back(std::make_unique<VtpmDomain>());
  VtpmDomain* v = vtpms_.back().get();
  v->domain = domain;
  v->measure_log = measure_log;
  v->command_port = command_port;
  v->on_started = std::move(done);
  if (!*needs) return start_instance(v);
  provision(*v, [this, v](const Status& s) {
    if (!s) return start_failed(v, s.error());
    start_instance(v);
  });
}

void VtpmManager::start_instance(VtpmDomain* v) {
  if (auto s = own_state_dir(v->domain); !s) return start_failed(v, s.error());
  if (auto s = listen(*v); !s) return start_failed(v, s.error());
  launch(*v, [this, v](const Status& s) {
    if (!s) return start_failed(v, s.error());
    AXL_INFO("vTPM of domain %s started: pid %d", v->domain.c_str(), v->pid());
    if (auto done = std::move(v->on_started)) done({});
  });
}

void VtpmManager::start_failed(VtpmDomain* v, Error e) {
  close_listeners(*v);
  auto done = std::move(v->on_started);
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(), [&](const auto& p) { return p.get() == v; });
  if (it != vtpms_.end()) vtpms_.erase(it);  // `v` is gone from here on
  if (done) done(std::move(e));
}

// Makes STATE/vtpm/NAME ready for a confined instance: provisioned, and
// owned by the sandbox uid with everything in it (a dir an older version
// made is root's).  Nothing here follows a symlink a confined instance may
// have planted in its dir.
Result<bool> VtpmManager::clear_unprovisioned(const std::string& domain) {
  if (auto s = make_private_dir(state_dir_ + "/vtpm"); !s) return s.error();
  const std::string dir = vtpm_dir(domain);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("cannot create " + dir);
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) return sys_error("cannot open " + dir);
  struct stat st {};
  if (::fstatat(dfd.get(), kPermanentState, &st, AT_SYMLINK_NOFOLLOW) == 0) return false;
  if (errno != ENOENT) return sys_error("cannot stat " + dir + "/" + kPermanentState);
  // No TPM yet.  Whatever else lies here is left over (a TPM's other
  // files mean nothing without its permanent state) and goes, so that the
  // provisioning instance, which runs as root, writes into an empty dir
  // that no confined instance (the only other ones that reach it) runs in.
  auto names = entries(dfd.get(), dir);
  if (!names) return names.error();
  for (const auto& n : *names)
    if (::unlinkat(dfd.get(), n.c_str(), 0) != 0 &&
        (errno != EISDIR || ::unlinkat(dfd.get(), n.c_str(), AT_REMOVEDIR) != 0))
      return sys_error("cannot clear " + dir + "/" + n);
  // A new TPM (a new EK): its generations start again at 1.
  ::unlink(counter_path(domain).c_str());
  return true;
}

// Hands the (provisioned) state dir and everything in it to the sandbox uid.
Status VtpmManager::own_state_dir(const std::string& domain) {
  const std::string dir = vtpm_dir(domain);
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) return sys_error("cannot open " + dir);
  if (::fchown(dfd.get(), kSandboxUid, kSandboxGid) != 0 || ::fchmod(dfd.get(), 0700) != 0)
    return sys_error("cannot hand " + dir + " to uid " + std::to_string(kSandboxUid));
  auto names = entries(dfd.get(), dir);
  if (!names) return names.error();
  for (const auto& n : *names)
    if (::fchownat(dfd.get(), n.c_str(), kSandboxUid, kSandboxGid, AT_SYMLINK_NOFOLLOW) != 0)
      return sys_error("cannot hand " + dir + "/" + n + " to uid " + std::to_string(kSandboxUid));
  return {};
}

// Runs `axolotl-vtpm --provision` on the (empty) state dir; `done` once it exited.
void VtpmManager::provision(VtpmDomain& v, std::function<void(Status)> done) {
  const std::string domain = v.domain;
  auto key = instance_key_fd(domain);
  if (!key) return done(key.error());
  auto gen = new_generation_pipe(v);
  if (!gen) return done(gen.error());
  proc::SpawnOptions so;
  so.argv = {bin_,
             "--state-dir",
             vtpm_dir(domain),
             "--key-fd",
             std::to_string(kKeyFd),
             "--generation-fd",
             std::to_string(kGenerationFd),
             "--vtpm-id",
             domain,
             "--ca-dir",
             state_dir_ + "/vtpm-host/ca",
             "--provision"};
  so.fds = {{key->get(), kKeyFd}, {gen->get(), kGenerationFd}};
  so.log_path = log_path(domain);
  so.file_size_limit = proc::kConfinedLogLimit;
  so.new_session = true;
  auto spawned = proc::spawn(so);
  if (!spawned) return done(spawned.error());
  // Held by the domain meanwhile: a stop() ends it.
  v.active = std::make_unique<Instance>(io_, std::move(spawned).value(), UniqueFd(), nullptr);
  VtpmDomain* raw = &v;
  v.waiting = proc::ChildWait::start(
      io_, v.active->child().pidfd.get(), UniqueFd(), kReadyTimeout,
      [this, raw, domain, done = std::move(done)](proc::ChildWait::Outcome o) {
        raw->waiting.reset();
        auto st = proc::wait_for(raw->active->child(), 0ms);
        const int status = st ? *st : raw->active->stop(1000ms);
        raw->active.reset();
        if (o == proc::ChildWait::Outcome::kTimedOut || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
          std::string why = last_line(log_path(domain));
          return done(make_error("vTPM of domain " + domain + " could not be provisioned (" +
                                 (o == proc::ChildWait::Outcome::kTimedOut
                                      ? std::string("timed out")
                                      : proc::describe_status(status)) +
                                 ")" + (why.empty() ? "" : ": " + why)));
        }
        AXL_INFO("vTPM of domain %s provisioned", domain.c_str());
        done({});
      });
}

Status VtpmManager::listen(VtpmDomain& v) {
  const std::string dd = dom_dir(v.domain);
  auto ctrl = unix_listen(dd + "/vtpm.ctrl");
  if (!ctrl) return ctrl.error();
  v.ctrl_listen = std::move(ctrl).value();
  auto cmd = unix_listen(dd + "/vtpm.cmd");
  if (!cmd) return cmd.error();
  v.cmd_listen = std::move(cmd).value();
  if (v.command_port) {
    auto pc = tcp_listen(v.command_port);
    if (!pc) return pc.error();
    v.port_cmd_listen = std::move(pc).value();
    auto pt = tcp_listen(v.command_port + 1);
    if (!pt) return pt.error();
    v.port_ctrl_listen = std::move(pt).value();
  }
  keep(v, "ctrl-listen", v.ctrl_listen.get());
  keep(v, "cmd-listen", v.cmd_listen.get());
  if (v.command_port) {
    keep(v, "port-cmd", v.port_cmd_listen.get());
    keep(v, "port-ctrl", v.port_ctrl_listen.get());
  }
  return {};
}

namespace {
std::string store_name(const std::string& domain, const char* what) {
  return "vtpmfd." + domain + "." + what;
}
const char* const kDomainFds[] = {"ctrl-listen", "cmd-listen", "port-cmd",
                                  "port-ctrl",   "ctrl-conn",  "data-conn"};
}  // namespace

void VtpmManager::keep(const VtpmDomain& v, const char* what, int fd) {
  if (!journal_ || fd < 0) return;
  if (auto s = journal_->store().put(store_name(v.domain, what), fd); !s)
    AXL_WARN("vTPM of domain %s: %s", v.domain.c_str(), s.error().message.c_str());
}

void VtpmManager::drop(const VtpmDomain& v, const char* what) {
  if (journal_) journal_->store().remove(store_name(v.domain, what));
}

UniqueFd VtpmManager::take(const std::string& domain, const char* what) {
  return journal_ ? journal_->store().take(store_name(domain, what)) : UniqueFd();
}

void VtpmManager::close_listeners(VtpmDomain& v) {
  const std::string dd = dom_dir(v.domain);
  if (v.ctrl_listen) ::unlink((dd + "/vtpm.ctrl").c_str());
  if (v.cmd_listen) ::unlink((dd + "/vtpm.cmd").c_str());
  v.ctrl_listen.reset();
  v.cmd_listen.reset();
  v.port_cmd_listen.reset();
  v.port_ctrl_listen.reset();
  for (const char* what : kDomainFds) drop(v, what);
}

// Spawns an instance; `done` runs on the loop once it listens, exited or
// timed out (then it is stopped).
void VtpmManager::launch(VtpmDomain& v, std::function<void(Status)> done) {
  auto r = [&]() -> Status {
    int sp[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
      return make_error(std::string("socketpair: ") + strerror(errno));
    UniqueFd ours(sp[0]), theirs(sp[1]);
    int pp[2];
    if (::pipe2(pp, O_CLOEXEC) != 0) return make_error(std::string("pipe: ") + strerror(errno));
    UniqueFd ready_r(pp[0]), ready_w(pp[1]);

    int hp[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, hp) != 0)
      return make_error(std::string("socketpair: ") + strerror(errno));
    UniqueFd health_ours(hp[0]), health_theirs(hp[1]);
    std::unique_ptr<cgroup::Group> group;
    std::vector<UniqueFd> join;
    if (cgroups_) {
      auto g = cgroups_->create("vtpm-" + v.domain + "-" + std::to_string(++v.instance_seq),
                                cgroup::Limits{kMemoryMax, kPidsMax, 0});
      if (!g) return make_error("vTPM of domain " + v.domain + ": " + g.error().message);
      auto fds = (*g)->open_procs_files();
      if (!fds) return make_error("vTPM of domain " + v.domain + ": " + fds.error().message);
      join = std::move(fds).value();
      group = std::move(g).value();
    }

    const std::string dd = dom_dir(v.domain);
    auto key_fd = instance_key_fd(v.domain);
    if (!key_fd) return key_fd.error();
    // Rollback protection: what earlier instances reported is the floor.
    auto gen_pipe = new_generation_pipe(v);
    if (!gen_pipe) return gen_pipe.error();
    UniqueFd gen_w = std::move(gen_pipe).value();
    const uint32_t floor = rollback_floor(v);
    UniqueFd key = std::move(key_fd).value();
    proc::SpawnOptions so;
    so.argv = {bin_,
               "--state-dir",
               vtpm_dir(v.domain),
               "--vtpm-id",
               v.domain,
               "--sandbox",
               "--state-fd",
               std::to_string(kStateFd),
               "--key-fd",
               std::to_string(kKeyFd),
               "--ctrl-listen-fd",
               std::to_string(kCtrlListenFd),
               "--command-listen-fd",
               std::to_string(kCmdListenFd),
               "--ready-fd",
               std::to_string(kReadyFd),
               "--handover-fd",
               std::to_string(kHandoverFd),
               "--health-fd",
               std::to_string(kHealthFd),
               "--generation-fd",
               std::to_string(kGenerationFd),
               "--rollback-floor",
               std::to_string(floor)};
    if (fault_injection_) so.argv.push_back("--fault-injection");
    so.fds = {{ready_w.get(), kReadyFd},
              {theirs.get(), kHandoverFd},
              {health_theirs.get(), kHealthFd},
              {gen_w.get(), kGenerationFd},
              {key.get(), kKeyFd},
              {v.ctrl_listen.get(), kCtrlListenFd},
              {v.cmd_listen.get(), kCmdListenFd}};
    UniqueFd measure_log;
    if (v.measure_log) {
      measure_log.reset(::open((dd + "/eventlog.bin").c_str(), O_RDONLY | O_CLOEXEC));
      if (!measure_log) return sys_error("cannot open " + dd + "/eventlog.bin");
      so.argv.insert(so.argv.end(), {"--measure-log-fd", std::to_string(kMeasureLogFd)});
      so.fds.push_back({measure_log.get(), kMeasureLogFd});
    }
    if (v.command_port) {
      so.argv.insert(so.argv.end(), {"--command-port-fds", std::to_string(kPortCmdFd) + "," +
                                                               std::to_string(kPortCtrlFd)});
      so.fds.push_back({v.port_cmd_listen.get(), kPortCmdFd});
      so.fds.push_back({v.port_ctrl_listen.get(), kPortCtrlFd});
    }
    if (v.ctrl_conn) {
      so.argv.insert(so.argv.end(), {"--ctrl-fd", std::to_string(kCtrlConnFd)});
      so.fds.push_back({v.ctrl_conn.get(), kCtrlConnFd});
      if (v.data_conn) {
        so.argv.insert(so.argv.end(), {"--data-fd", std::to_string(kDataConnFd)});
        so.fds.push_back({v.data_conn.get(), kDataConnFd});
      }
    }
    so.log_path = log_path(v.domain);
    so.file_size_limit = proc::kConfinedLogLimit;
    so.new_session = true;
    for (auto& f : join) so.join_cgroup_fds.push_back(f.get());
    proc::SandboxSpec sandbox;
    sandbox.host_uid = kSandboxUid;
    sandbox.host_gid = kSandboxGid;
    sandbox.mount_sources = {{vtpm_dir(v.domain), kStateFd}};
    so.sandbox = std::move(sandbox);
    auto child = proc::spawn(so);
    if (!child) return child.error();
    ready_w.reset();
    theirs.reset();
    health_theirs.reset();

    // Held by the domain while it starts: a stop() ends it.
    v.active = std::make_unique<Instance>(io_, std::move(child).value(), std::move(health_ours),
                                          std::move(group));
    if (journal_) {
      InstanceRecord rec;
      rec.kind = "vtpm";
      rec.name = v.domain;
      rec.role = "active";
      rec.seq = v.instance_seq;
      rec.port = v.command_port;
      rec.measure_log = v.measure_log;
      if (auto s = v.active->journal(journal_, std::move(rec)); !s)
        AXL_WARN("vTPM of domain %s will not outlive this supervisor: %s", v.domain.c_str(),
                 s.error().message.c_str());
      if (auto s = journal_->store().put(v.active->record().key() + ".handover", ours.get()); !s)
        AXL_WARN("vTPM of domain %s: %s", v.domain.c_str(), s.error().message.c_str());
    }
    v.state = VtpmState::kStarting;
    VtpmDomain* raw = &v;
    struct Parts {
      UniqueFd ours;
      std::string log;
    };
    auto parts = std::make_shared<Parts>(Parts{std::move(ours), so.log_path});
    v.waiting = proc::ChildWait::start(
        io_, v.active->child().pidfd.get(), std::move(ready_r), kReadyTimeout,
        [this, raw, parts, done](proc::ChildWait::Outcome o) {
          raw->waiting.reset();
          if (o != proc::ChildWait::Outcome::kReady) {
            int status = raw->active->stop(1000ms);
            raw->active.reset();
            std::string why = last_line(parts->log);
            return done(make_error("vTPM of domain " + raw->domain + " did not start (" +
                                   (o == proc::ChildWait::Outcome::kTimedOut
                                        ? std::string("no answer within ") +
                                              std::to_string(kReadyTimeout.count()) + " s"
                                        : proc::describe_status(status)) +
                                   ")" + (why.empty() ? "" : ": " + why)));
          }
          serve(*raw, std::move(parts->ours));
          done({});
        });
    return {};
  }();
  if (!r) done(r.error());
}

void VtpmManager::serve(VtpmDomain& v, UniqueFd handover) {
  v.state = VtpmState::kRunning;
  v.started_ns = monotonic_ns();
  v.pending_cause.clear();
  v.active->monitor(kHeartbeat, kHeartbeatMisses,
                    [this, p = &v](const std::string& cause, uint64_t) { kill_for(p, cause); });
  ::fcntl(handover.get(), F_SETFL, ::fcntl(handover.get(), F_GETFL) | O_NONBLOCK);
  v.handover = std::make_unique<asio::posix::stream_descriptor>(io_, handover.release());
  read_handover(&v);
  v.active->watch_exit([this, p = &v] { on_exit(p); });
}

// One message per channel: a tag byte ('C' control, 'D' data) and the fd.
// The instance is untrusted in what it sends: anything else is dropped.
void VtpmManager::read_handover(VtpmDomain* v) {
  v->handover->async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, v](const boost::system::error_code& ec) {
                            if (ec || !v->handover) return;
                            if (drain_handover(v)) read_handover(v);
                          });
}

bool VtpmManager::drain_handover(VtpmDomain* v) {
  for (;;) {
    {
      char tag = 0;
      iovec iov{&tag, 1};
      alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      ssize_t n = ::recvmsg(v->handover->native_handle(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return true;
      if (n <= 0) return false;  // the instance is gone; its exit is handled by the pidfd
      std::vector<UniqueFd> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; ++i) {
          int f;
          std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
          fds.emplace_back(f);
        }
      }
      int type = 0;
      socklen_t len = sizeof type;
      const bool ok = n == 1 && fds.size() == 1 && (tag == 'C' || tag == 'D') &&
                      ::getsockopt(fds[0].get(), SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
                      type == SOCK_STREAM;
      if (!ok) {
        AXL_WARN("vTPM of domain %s handed over something malformed; ignored", v->domain.c_str());
        continue;
      }
      if (tag == 'C') {
        v->ctrl_conn = std::move(fds[0]);
        v->data_conn.reset();  // a new control connection starts a new session
        keep(*v, "ctrl-conn", v->ctrl_conn.get());
        drop(*v, "data-conn");
      } else {
        v->data_conn = std::move(fds[0]);
        keep(*v, "data-conn", v->data_conn.get());
      }
    }
  }
}

void VtpmManager::kill_for(VtpmDomain* v, const std::string& cause) {
  if (!v->active || !v->pending_cause.empty()) return;
  AXL_WARN("vTPM of domain %s: %s; killing it", v->domain.c_str(), cause.c_str());
  v->pending_cause = cause;
  (void)v->active->signal(SIGKILL);
}

void VtpmManager::on_exit(VtpmDomain* v) {
  if (journal_ && v->active && v->active->journaled())
    journal_->store().remove(v->active->record().key() + ".handover");
  // Anything left inside and its group go after the restart, from the loop.
  int status = -1;
  const std::string cause = v->end_active(reaper_, &status);
  // What it handed over just before it died is still queued: take it.
  if (v->handover) drain_handover(v);
  v->handover.reset();
  (void)rollback_floor(*v);  // its last reports, kept
  if (stopping_) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    // An orderly end: QEMU sent CMD_SHUTDOWN (the guest is gone).
    v->state = VtpmState::kStopped;
    v->ctrl_conn.reset();
    v->data_conn.reset();
    close_listeners(*v);
    AXL_INFO("vTPM of domain %s stopped", v->domain.c_str());
    return;
  }
  v->last_failure = cause.empty() ? "crash: " + proc::describe_status(status) : cause;
  AXL_WARN("vTPM of domain %s failed: %s", v->domain.c_str(), v->last_failure.c_str());
  auto now = std::chrono::steady_clock::now();
  if (!v->budget.allows(now)) {
    v->state = VtpmState::kFailed;
    v->ctrl_conn.reset();  // QEMU now sees the TPM gone
    v->data_conn.reset();
    close_listeners(*v);
    AXL_ERROR("vTPM of domain %s failed for good: %u restarts within %lld s", v->domain.c_str(),
              v->budget.max(), static_cast<long long>(v->budget.window().count()));
    return;
  }
  v->budget.record(now);
  ++v->restarts;
  relaunch(v);
}

void VtpmManager::relaunch(VtpmDomain* v) {
  launch(*v, [this, v](const Status& s) {
    if (!s) {
      v->state = VtpmState::kFailed;
      v->last_failure = s.error().message;
      v->ctrl_conn.reset();
      v->data_conn.reset();
      close_listeners(*v);
      AXL_ERROR("%s", s.error().message.c_str());
      return;
    }
    AXL_INFO("vTPM of domain %s restarted: pid %d (%s)", v->domain.c_str(), v->pid(),
             v->ctrl_conn ? "QEMU's channels handed on" : "no QEMU connection yet");
  });
}

Status VtpmManager::retire(const std::string& domain) {
  if (!config::valid_name(domain)) return make_error("bad domain name '" + domain + "'");
  for (const auto& v : vtpms_)
    if (v->domain == domain &&
        (v->state == VtpmState::kRunning || v->state == VtpmState::kStarting))
      return make_error("the vTPM of domain " + domain + " is " + to_string(v->state) +
                        ": destroy the domain first");
  const std::string dir = vtpm_dir(domain);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return make_error("domain " + domain + " has no vTPM state");
  if (auto s = remove_tree(dir); !s) return s;
  ::unlink(counter_path(domain).c_str());  // a new vTPM starts at generation 1
  vtpms_.erase(std::remove_if(vtpms_.begin(), vtpms_.end(),
                              [&](const auto& v) { return v->domain == domain; }),
               vtpms_.end());
  AXL_INFO("vTPM state of domain %s retired", domain.c_str());
  return {};
}

Status VtpmManager::inject(const std::string& domain, const std::string& fault) {
  if (!fault_injection_)
    return make_error(
        "fault injection is disabled for vTPM domains (set "
        "vtpm_fault_injection = true in the host config)");
  if (!config::is_vtpm_fault_name(fault))
    return make_error("unknown vTPM fault '" + fault + "' (crash, hang or die-in-command)");
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(),
                         [&](const auto& v) { return v->domain == domain; });
  if (it == vtpms_.end()) return make_error("domain '" + domain + "' has no vTPM");
  VtpmDomain& v = **it;
  if (v.state != VtpmState::kRunning || !v.active)
    return make_error("the vTPM of domain '" + domain + "' is not running");
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setFault(fault);
  // A crash or hang counts from now; die-in-command waits for a command.
  if (fault != "die-in-command") v.pending_fail_ns = monotonic_ns();
  return wire::send(v.active->health_fd(), mb);
}

Status VtpmManager::stop(const std::string& domain) {
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(),
                         [&](const auto& v) { return v->domain == domain; });
  if (it == vtpms_.end()) return make_error("domain '" + domain + "' has no vTPM");
  VtpmDomain& v = **it;
  if (v.waiting) v.waiting->cancel();
  v.waiting.reset();
  if (auto done = std::move(v.on_started))
    done(make_error("vTPM of domain " + domain + " stopped while starting"));
  v.handover.reset();
  if (journal_ && v.active && v.active->journaled())
    journal_->store().remove(v.active->record().key() + ".handover");
  if (v.active) v.active->stop(2000ms);
  v.active.reset();
  (void)rollback_floor(v);  // its last reports, kept
  close_listeners(v);
  AXL_INFO("vTPM of domain %s stopped on request", domain.c_str());
  vtpms_.erase(it);
  return {};
}

void VtpmManager::adopt_all() {
  if (!journal_) return;
  for (const auto& r : journal_->load()) {
    if (r.kind != "vtpm") continue;
    auto v = std::make_unique<VtpmDomain>();
    v->domain = r.name;
    v->measure_log = r.measure_log;
    v->command_port = r.port;
    v->instance_seq = r.seq;
    v->ctrl_listen = take(r.name, "ctrl-listen");
    v->cmd_listen = take(r.name, "cmd-listen");
    if (r.port) {
      v->port_cmd_listen = take(r.name, "port-cmd");
      v->port_ctrl_listen = take(r.name, "port-ctrl");
    }
    v->ctrl_conn = take(r.name, "ctrl-conn");
    v->data_conn = take(r.name, "data-conn");
    UniqueFd handover = journal_->store().take(r.key() + ".handover");
    const bool sockets =
        v->ctrl_listen && v->cmd_listen && (!r.port || (v->port_cmd_listen && v->port_ctrl_listen));
    auto inst = adopt_instance(io_, *journal_, cgroups_, reaper_, r);
    if (inst && sockets && handover) {
      v->active = std::move(inst).value();
      AXL_INFO("vTPM of domain %s: adopted its instance, pid %d", r.name.c_str(), r.pid);
      VtpmDomain* raw = v.get();
      vtpms_.push_back(std::move(v));
      serve(*raw, std::move(handover));
      continue;
    }
    journal_->store().remove(r.key() + ".handover");
    if (inst) {
      (*inst)->stop(500ms);
      AXL_WARN("vTPM of domain %s: pid %d not adopted: its sockets were not kept", r.name.c_str(),
               r.pid);
    } else {
      AXL_WARN("vTPM of domain %s: pid %d not adopted: %s", r.name.c_str(), r.pid,
               inst.error().message.c_str());
    }
    if (!sockets) {
      AXL_ERROR("vTPM of domain %s cannot be restarted: its sockets were not kept", r.name.c_str());
      close_listeners(*v);
      continue;
    }
    // Died while no supervisor ran: restarted on QEMU's channels.
    VtpmDomain* raw = v.get();
    vtpms_.push_back(std::move(v));
    raw->last_failure = "exited while no supervisor ran";
    raw->budget.record(std::chrono::steady_clock::now());
    ++raw->restarts;
    AXL_WARN("vTPM of domain %s: %s; restarting it", raw->domain.c_str(),
             raw->last_failure.c_str());
    relaunch(raw);
  }
}

void VtpmManager::stop_all() {
  stopping_ = true;
  while (!vtpms_.empty()) (void)stop(vtpms_.front()->domain);
  reaper_.finish();
}

}  // namespace axl::supervisor
