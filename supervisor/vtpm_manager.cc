#include "supervisor/vtpm_manager.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/config.h"
#include "common/log.h"
#include "supervisor/driver_manager.h"

namespace axl::supervisor {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

const char* to_string(VtpmState s) {
  switch (s) {
    case VtpmState::kRunning: return "running";
    case VtpmState::kFailed: return "failed";
    case VtpmState::kStopped: return "stopped";
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

}  // namespace

VtpmManager::VtpmManager(asio::io_context& io, std::string vtpm_bin, std::string state_dir)
    : io_(io), bin_(std::move(vtpm_bin)), state_dir_(std::move(state_dir)) {}

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

Status VtpmManager::start(const std::string& domain, bool measure_log, uint32_t command_port) {
  if (!config::valid_name(domain)) return make_error("startVtpm: bad domain name '" + domain + "'");
  if (command_port != 0 && (command_port < 1024 || command_port > 65534))
    return make_error("startVtpm: command port " + std::to_string(command_port) +
                      " out of range 1024..65534");
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(),
                         [&](const auto& v) { return v->domain == domain; });
  if (it != vtpms_.end()) {
    if ((*it)->state == VtpmState::kRunning)
      return make_error("domain '" + domain + "' already has a running vTPM (pid " +
                        std::to_string((*it)->child.pid) + ")");
    vtpms_.erase(it);  // a stopped or failed one of an earlier life of this domain
  }
  struct stat st{};
  if (::stat(dom_dir(domain).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error("startVtpm: no domain directory " + dom_dir(domain));
  if (auto s = ensure_host_key(); !s) return s;
  if (auto s = make_private_dir(state_dir_ + "/vtpm/" + domain); !s) return s;
  auto v = std::make_unique<VtpmDomain>();
  v->domain = domain;
  v->measure_log = measure_log;
  v->command_port = command_port;
  if (auto s = launch(*v); !s) return s;
  AXL_INFO("vTPM of domain %s started: pid %d", domain.c_str(), v->child.pid);
  vtpms_.push_back(std::move(v));
  return {};
}

// Spawns an instance and waits (blocking this loop, as the control request
// that asked for it does anyway) until it listens, exits or times out.
Status VtpmManager::launch(VtpmDomain& v) {
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
    return make_error(std::string("socketpair: ") + strerror(errno));
  UniqueFd ours(sp[0]), theirs(sp[1]);
  int pp[2];
  if (::pipe2(pp, O_CLOEXEC) != 0) return make_error(std::string("pipe: ") + strerror(errno));
  UniqueFd ready_r(pp[0]), ready_w(pp[1]);

  const std::string dd = dom_dir(v.domain);
  proc::SpawnOptions so;
  so.argv = {bin_,
             "--state-dir", state_dir_ + "/vtpm/" + v.domain,
             "--key-file", state_dir_ + "/vtpm-host/key",
             "--ca-dir", state_dir_ + "/vtpm-host/ca",
             "--ctrl-socket", dd + "/vtpm.ctrl",
             "--command-socket", dd + "/vtpm.cmd",
             "--ready-fd", "3",
             "--handover-fd", "4"};
  so.fds = {{ready_w.get(), 3}, {theirs.get(), 4}};
  if (v.measure_log) so.argv.insert(so.argv.end(), {"--measure-log", dd + "/eventlog.bin"});
  if (v.command_port)
    so.argv.insert(so.argv.end(), {"--command-port", std::to_string(v.command_port)});
  if (v.ctrl_conn) {
    so.argv.insert(so.argv.end(), {"--ctrl-fd", "5"});
    so.fds.push_back({v.ctrl_conn.get(), 5});
    if (v.data_conn) {
      so.argv.insert(so.argv.end(), {"--data-fd", "6"});
      so.fds.push_back({v.data_conn.get(), 6});
    }
  }
  so.log_path = log_path(v.domain);
  so.new_session = true;
  auto child = proc::spawn(so);
  if (!child) return child.error();
  ready_w.reset();
  theirs.reset();

  pollfd pf[2] = {{ready_r.get(), POLLIN, 0}, {child->pidfd.get(), POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  bool ready = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    int n = ::poll(pf, 2, int(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char c;
    if (pf[0].revents && ::read(ready_r.get(), &c, 1) == 1) ready = true;
    break;  // ready, or the pipe closed / the child exited without saying so
  }
  if (!ready) {
    int status = proc::stop(*child, 1000ms);
    ::unlink((dd + "/vtpm.ctrl").c_str());
    ::unlink((dd + "/vtpm.cmd").c_str());
    std::string why = last_line(so.log_path);
    return make_error("vTPM of domain " + v.domain + " did not start (" +
                      proc::describe_status(status) + ")" + (why.empty() ? "" : ": " + why));
  }
  v.child = std::move(child).value();
  v.state = VtpmState::kRunning;
  v.started_ns = monotonic_ns();
  ::fcntl(ours.get(), F_SETFL, ::fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  v.handover = std::make_unique<asio::posix::stream_descriptor>(io_, ours.release());
  read_handover(&v);
  v.exit_watch = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(v.child.pidfd.get()));
  v.exit_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, p = &v](const boost::system::error_code& ec) {
                             if (!ec) on_exit(p);
                           });
  return {};
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
      } else {
        v->data_conn = std::move(fds[0]);
      }
    }
  }
}

void VtpmManager::on_exit(VtpmDomain* v) {
  auto st = proc::wait_for(v->child, 0ms);
  const int status = st ? *st : -1;
  v->child.pid = -1;
  // What it handed over just before it died is still queued: take it.
  if (v->handover) drain_handover(v);
  v->handover.reset();
  v->exit_watch.reset();
  if (stopping_) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    // An orderly end: QEMU sent CMD_SHUTDOWN (the guest is gone).
    v->state = VtpmState::kStopped;
    v->ctrl_conn.reset();
    v->data_conn.reset();
    AXL_INFO("vTPM of domain %s stopped", v->domain.c_str());
    return;
  }
  v->last_failure = "crash: " + proc::describe_status(status);
  AXL_WARN("vTPM of domain %s failed: %s", v->domain.c_str(), v->last_failure.c_str());
  auto now = std::chrono::steady_clock::now();
  while (!v->recent_restarts.empty() && now - v->recent_restarts.front() > kRestartWindow)
    v->recent_restarts.pop_front();
  if (v->recent_restarts.size() >= kRestartMax) {
    v->state = VtpmState::kFailed;
    v->ctrl_conn.reset();  // QEMU now sees the TPM gone
    v->data_conn.reset();
    AXL_ERROR("vTPM of domain %s failed for good: %u restarts within %lld s", v->domain.c_str(),
              kRestartMax, static_cast<long long>(kRestartWindow.count()));
    return;
  }
  v->recent_restarts.push_back(now);
  ++v->restarts;
  if (auto s = launch(*v); !s) {
    v->state = VtpmState::kFailed;
    v->last_failure = s.error().message;
    v->ctrl_conn.reset();
    v->data_conn.reset();
    AXL_ERROR("%s", s.error().message.c_str());
    return;
  }
  AXL_INFO("vTPM of domain %s restarted: pid %d (%s)", v->domain.c_str(), v->child.pid,
           v->ctrl_conn ? "QEMU's channels handed on" : "no QEMU connection yet");
}

Status VtpmManager::stop(const std::string& domain) {
  auto it = std::find_if(vtpms_.begin(), vtpms_.end(),
                         [&](const auto& v) { return v->domain == domain; });
  if (it == vtpms_.end()) return make_error("domain '" + domain + "' has no vTPM");
  VtpmDomain& v = **it;
  if (v.exit_watch) v.exit_watch->cancel();
  v.exit_watch.reset();
  v.handover.reset();
  if (v.child.pid > 0) proc::stop(v.child, 2000ms);
  AXL_INFO("vTPM of domain %s stopped on request", domain.c_str());
  vtpms_.erase(it);
  return {};
}

void VtpmManager::stop_all() {
  stopping_ = true;
  while (!vtpms_.empty()) (void)stop(vtpms_.front()->domain);
}

}  // namespace axl::supervisor
