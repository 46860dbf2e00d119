#include "driverdom/testing/fake_hypervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef AXL_DRIVERDOM_BIN
#error "AXL_DRIVERDOM_BIN must name the axolotl-driverdom binary"
#endif

namespace axl::driverdom::testing {

bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do rc = ::poll(&p, 1, timeout_ms);
  while (rc < 0 && errno == EINTR);
  return rc == 1;
}

FakeHypervisor::FakeHypervisor() {
  char tmpl[] = "/tmp/axl-driverdom-test-XXXXXX";
  if (!::mkdtemp(tmpl)) return;
  dir_ = tmpl;
  path_ = dir_ + "/driver.sock";
  auto l = wire::listen(path_);
  if (l) listener_ = std::move(l).value();
}

FakeHypervisor::~FakeHypervisor() {
  conn_.reset();
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  listener_.reset();
  if (!path_.empty()) ::unlink(path_.c_str());
  if (!dir_.empty()) ::rmdir(dir_.c_str());
}

Status FakeHypervisor::spawn(const std::string& name, const std::string& kind, int tap_fd) {
  std::vector<std::string> args = {AXL_DRIVERDOM_BIN, "--name", name, "--kind", kind,
                                   "--hv-socket",     path_};
  if (tap_fd >= 0) {
    args.push_back("--tap-fd");
    args.push_back(std::to_string(kChildTapFd));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return make_error(std::string("fork: ") + strerror(errno));
  if (pid == 0) {
    // dup2 clears FD_CLOEXEC on the new number: these survive exec.
    if (tap_fd >= 0 && ::dup2(tap_fd, kChildTapFd) < 0) ::_exit(126);
    int leak = ::open("/dev/null", O_RDONLY);
    if (leak < 0 || ::dup2(leak, kChildLeakedFd) < 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  return {};
}

Status FakeHypervisor::accept(int timeout_ms) {
  if (!wait_readable(listener_.get(), timeout_ms)) return make_error("driver never connected");
  conn_.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn_) return make_error(std::string("accept: ") + strerror(errno));
  return {};
}

Result<wire::Received> FakeHypervisor::recv(int timeout_ms) {
  if (!wait_readable(conn_.get(), timeout_ms)) return make_error("no message from the driver");
  return wire::recv(conn_.get());
}

std::optional<int> FakeHypervisor::wait_exit(int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(st)) return WEXITSTATUS(st);
      return std::nullopt;
    }
    ::usleep(10 * 1000);
  }
  return std::nullopt;
}

Result<TestChannel> make_channel(uint32_t slots, uint32_t slot_size) {
  auto fds = channel::create(slots, slot_size);
  if (!fds) return fds.error();
  auto m = channel::Mapping::map(fds->mem.get(), slots, slot_size);
  if (!m) return m.error();
  TestChannel t;
  t.send_fds.mem.reset(::fcntl(fds->mem.get(), F_DUPFD_CLOEXEC, 0));
  t.send_fds.req_kick.reset(::fcntl(fds->req_kick.get(), F_DUPFD_CLOEXEC, 0));
  t.send_fds.resp_kick.reset(::fcntl(fds->resp_kick.get(), F_DUPFD_CLOEXEC, 0));
  t.hv = std::make_unique<channel::HvEnd>(std::move(m).value(), std::move(fds->req_kick),
                                          std::move(fds->resp_kick));
  return t;
}

}  // namespace axl::driverdom::testing
