#include "common/fd_store.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>

#include "common/log.h"

namespace axl {

namespace {
constexpr int kListenFdsStart = 3;  // sd_listen_fds(3)

std::string take_env(const char* name) {
  const char* v = getenv(name);
  std::string s = v ? v : "";
  ::unsetenv(name);
  return s;
}
}  // namespace

bool valid_fd_name(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name)
    if (c < 0x21 || c > 0x7e || c == ':') return false;
  return true;
}

FdStore FdStore::from_environment() {
  FdStore s;
  s.socket_ = take_env("NOTIFY_SOCKET");
  s.available_ = !s.socket_.empty();
  const std::string pid = take_env("LISTEN_PID"), count = take_env("LISTEN_FDS"),
                    names = take_env("LISTEN_FDNAMES");
  if (pid.empty() || count.empty()) return s;
  char* end = nullptr;
  const long p = strtol(pid.c_str(), &end, 10);
  if (*end || p != long(::getpid())) return s;  // meant for another process
  const long n = strtol(count.c_str(), &end, 10);
  if (*end || n <= 0 || n > 4096) {
    AXL_WARN("LISTEN_FDS=%s ignored", count.c_str());
    return s;
  }
  size_t at = 0;
  for (long i = 0; i < n; ++i) {
    const size_t colon = names.find(':', at);
    const std::string name =
        at > names.size() ? "" : names.substr(at, colon == std::string::npos ? colon : colon - at);
    at = colon == std::string::npos ? names.size() + 1 : colon + 1;
    UniqueFd fd(int(kListenFdsStart + i));
    if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) < 0) {
      (void)fd.release();  // not open: nothing to own
      continue;
    }
    if (valid_fd_name(name) && !s.inherited_.count(name)) s.inherited_[name] = std::move(fd);
  }
  return s;
}

UniqueFd FdStore::take(const std::string& name) {
  auto it = inherited_.find(name);
  if (it == inherited_.end()) return UniqueFd();
  UniqueFd fd = std::move(it->second);
  inherited_.erase(it);
  return fd;
}

std::vector<std::string> FdStore::untaken() const {
  std::vector<std::string> names;
  for (const auto& [name, fd] : inherited_) names.push_back(name);
  return names;
}

// One datagram to the store, with `fd` (if any) attached.
Status FdStore::notify(const std::string& msg, int fd) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.size() >= sizeof addr.sun_path) return make_error("NOTIFY_SOCKET too long");
  memcpy(addr.sun_path, socket_.data(), socket_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = 0;  // abstract
  const socklen_t len = socklen_t(offsetof(sockaddr_un, sun_path) + socket_.size());
  UniqueFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  iovec iov{const_cast<char*>(msg.data()), msg.size()};
  msghdr mh{};
  mh.msg_name = &addr;
  mh.msg_namelen = len;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  if (::sendmsg(s.get(), &mh, MSG_NOSIGNAL) < 0)
    return make_error("cannot reach the fd store " + socket_ + ": " + strerror(errno));
  return {};
}

Status FdStore::put(const std::string& name, int fd) {
  if (!available_) return {};
  if (!valid_fd_name(name)) return make_error("invalid fd name '" + name + "'");
  // Replacing: a store keeps every fd given under a name otherwise.
  remove(name);
  if (auto s = notify("FDSTORE=1\nFDNAME=" + name, fd); !s)
    return make_error("cannot keep fd '" + name + "': " + s.error().message);
  return {};
}

void FdStore::remove(const std::string& name) {
  if (!available_ || !valid_fd_name(name)) return;
  if (auto s = notify("FDSTOREREMOVE=1\nFDNAME=" + name); !s)
    AXL_WARN("cannot drop fd '%s' from the store: %s", name.c_str(), s.error().message.c_str());
}

void FdStore::ready() {
  if (!available_) return;
  if (auto s = notify("READY=1"); !s) AXL_WARN("%s", s.error().message.c_str());
}

}  // namespace axl
