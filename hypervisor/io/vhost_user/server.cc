#include "hypervisor/io/vhost_user/server.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <vector>

#include "common/log.h"
#include "common/wire.h"

namespace axl::vhost_user {

Server::Server(std::string socket_path, Backend& backend, iommu::DmaContext& dma)
    : path_(std::move(socket_path)), backend_(backend), handler_(backend, dma, path_) {}

Server::~Server() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    while (::write(stop_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  if (listen_) ::unlink(path_.c_str());
  // Destroyed on purpose: nothing of it is to be resumed.
  if (keeper_) keeper_->forget();
}

namespace {
// A front-end that stalls mid-message must not wedge the device thread: a
// partial message times out and closes the connection.
void set_timeouts(int fd) {
  struct timeval tv {
    1, 0
  };
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}
}  // namespace

void Server::start_thread() {
  thread_ = std::thread([this] { run(); });
}

Status Server::resume(KeptSession kept) {
  if (thread_.joinable()) return make_error("already started");
  int on = 0;
  socklen_t len = sizeof on;
  if (!kept.listen || ::getsockopt(kept.listen.get(), SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 ||
      !on)
    return make_error("vhost-user " + path_ + ": no kept listening socket");
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  task_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_ || !task_) return make_error(std::string("eventfd: ") + strerror(errno));
  listen_ = std::move(kept.listen);
  if (keeper_) keeper_->keep_fd("listen", listen_.get());
  if (kept.conn) {
    conn_ = std::move(kept.conn);
    set_timeouts(conn_.get());
    if (keeper_) keeper_->keep_fd("conn", conn_.get());
    connections_.fetch_add(1, std::memory_order_relaxed);
    if (auto st = handler_.resume(kept.record, kept.fds); !st) {
      AXL_WARN("vhost-user %s: %s", path_.c_str(), st.error().message.c_str());
      drop_connection("the kept session did not resume");
    } else {
      AXL_INFO("vhost-user %s: session resumed", path_.c_str());
    }
  }
  start_thread();
  return {};
}

Status Server::start() {
  if (thread_.joinable()) return make_error("already started");
  // A stale socket from an earlier run would make bind fail; only a socket
  // is removed, never another kind of file (wire::bind_private).
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return make_error(std::string("socket: ") + strerror(errno));
  if (auto b = wire::bind_private(s.get(), path_); !b) return b.error();
  if (fe_uid_ != 0 && ::lchown(path_.c_str(), fe_uid_, fe_gid_) != 0) {
    const int e = errno;
    ::unlink(path_.c_str());
    return make_error("chown " + path_ + ": " + strerror(e));
  }
  if (::listen(s.get(), 4) < 0) {
    ::unlink(path_.c_str());
    return make_error(std::string("listen: ") + strerror(errno));
  }
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  task_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_ || !task_) {
    ::unlink(path_.c_str());
    return make_error(std::string("eventfd: ") + strerror(errno));
  }
  listen_ = std::move(s);
  if (keeper_) keeper_->keep_fd("listen", listen_.get());
  start_thread();
  return {};
}

Status Server::run_on_thread(std::function<void()> fn) {
  if (!thread_.joinable()) {
    fn();
    return {};
  }
  if (std::this_thread::get_id() == thread_.get_id())
    return make_error("run_on_thread called from the device thread");
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> f = done->get_future();
  {
    std::lock_guard<std::mutex> g(task_mu_);
    tasks_.push_back([fn = std::move(fn), done] {
      fn();
      done->set_value();
    });
  }
  uint64_t one = 1;
  while (::write(task_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
  f.wait();
  return {};
}

void Server::drop_connection(const char* why) {
  AXL_INFO("vhost-user %s: front-end connection closed (%s)", path_.c_str(), why);
  conn_.reset();
  // The kept copy too: QEMU sees the connection close only once no copy is
  // left, and reconnects.
  if (keeper_) keeper_->drop_fd("conn");
  handler_.disconnect();
}

void Server::run() {
  enum Kind { kStop, kTask, kListen, kConn, kKick, kExtra, kBackendReq };
  std::vector<pollfd> pfds;
  std::vector<std::pair<Kind, uint32_t>> what;
  std::chrono::steady_clock::time_point poll_until{};
  for (;;) {
    pfds.clear();
    what.clear();
    pfds.push_back({stop_.get(), POLLIN, 0});
    what.push_back({kStop, 0});
    pfds.push_back({task_.get(), POLLIN, 0});
    what.push_back({kTask, 0});
    if (conn_) {
      pfds.push_back({conn_.get(), POLLIN, 0});
      what.push_back({kConn, 0});
      if (handler_.backend_fd() >= 0) {
        pfds.push_back({handler_.backend_fd(), POLLIN, 0});
        what.push_back({kBackendReq, 0});
      }
      for (auto k : handler_.kick_fds()) {
        pfds.push_back({k.fd, POLLIN, 0});
        what.push_back({kKick, k.queue});
      }
    } else {
      pfds.push_back({listen_.get(), POLLIN, 0});
      what.push_back({kListen, 0});
    }
    // Device fds are polled with or without a front-end: driver responses
    // keep arriving (and slots must be freed) across a QEMU reconnect.
    for (int fd : backend_.extra_fds()) {
      pfds.push_back({fd, POLLIN, 0});
      what.push_back({kExtra, uint32_t(fd)});
    }
    using Clock = std::chrono::steady_clock;
    int n = ::poll(pfds.data(), pfds.size(), poll_.enabled() ? 0 : -1);
    // Within the window after the last work: look again without sleeping.
    bool spun = false;
    while (n == 0 && Clock::now() < poll_until) {
      n = ::poll(pfds.data(), pfds.size(), 0);
      spun = true;
    }
    if (n == 0) {
      if (spun) poll_.spun_empty();  // the idle back-off
      const auto slept_since = Clock::now();
      n = ::poll(pfds.data(), pfds.size(), -1);
      if (n > 0) poll_.slept(Clock::now() - slept_since);
    }
    if (poll_.enabled() && n > 0) poll_until = Clock::now() + poll_.current();
    if (n < 0) {
      if (errno == EINTR) continue;
      AXL_ERROR("vhost-user poll: %s", strerror(errno));
      return;
    }
    for (size_t i = 0; i < pfds.size(); ++i) {
      if (!pfds[i].revents) continue;
      switch (what[i].first) {
        case kStop:
          return;
        case kTask: {
          uint64_t v;
          while (::read(task_.get(), &v, sizeof v) < 0 && errno == EINTR) {
          }
          std::deque<std::function<void()>> tasks;
          {
            std::lock_guard<std::mutex> g(task_mu_);
            tasks.swap(tasks_);
          }
          for (auto& t : tasks) t();
          // A task may have changed the device's fds.
          goto next_round;
        }
        case kListen: {
          int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) break;
          int uid = -1, pid = -1;
          if (!wire::peer_trusted(c, &uid, &pid) && !(fe_uid_ != 0 && uid == int(fe_uid_))) {
            // Only QEMU, as the uid it was given (or root), is the
            // front-end; the socket's owner and mode keep others out already.
            AXL_WARN("vhost-user %s: connection from uid %d (pid %d) refused", path_.c_str(), uid,
                     pid);
            ::close(c);
            break;
          }
          conn_.reset(c);
          set_timeouts(c);
          if (keeper_) keeper_->keep_fd("conn", c);
          connections_.fetch_add(1, std::memory_order_relaxed);
          AXL_INFO("vhost-user %s: front-end connected", path_.c_str());
          break;
        }
        case kConn: {
          if (auto peeked = peek_iotlb_message(conn_.get())) {
            const bool keep =
                handler_.handle(conn_.get(), std::move(*peeked)) == Handler::Outcome::kKeep;
            if (!consume_peeked(conn_.get()) || !keep) drop_connection("protocol error");
            goto next_round;
          }
          auto m = recv_message(conn_.get());
          if (!m) {
            dropped_.fetch_add(1, std::memory_order_relaxed);
            drop_connection(m.error().message.c_str());
          } else if (!m->has_value()) {
            drop_connection("peer closed");
          } else if (handler_.handle(conn_.get(), std::move(**m)) == Handler::Outcome::kClose) {
            drop_connection("protocol error");
          }
          // The message may have replaced or closed fds in this poll set.
          goto next_round;
        }
        case kKick:
          handler_.kicked(what[i].second);
          break;
        case kBackendReq:
          // IOTLB miss answers; may restart or close rings and fds.
          handler_.backend_readable();
          goto next_round;
        case kExtra:
          backend_.extra_fd_ready(int(what[i].second));
          break;
      }
    }
  next_round:;
  }
}

}  // namespace axl::vhost_user
