#include "hypervisor/daemon/driver_registry.h"

#include <sys/socket.h>

#include "common/log.h"
#include "common/schema/driver.capnp.h"
#include "common/wire.h"
#include "hypervisor/daemon/driver_messages.h"

namespace axl::hv {

namespace asio = boost::asio;

namespace {
// Who is on the other end of a connection that has not said who it is.
int peer_pid_of(int fd) {
  struct ucred cred{};
  socklen_t len = sizeof cred;
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
}
}  // namespace

DriverConnection::DriverConnection(std::string name, config::DriverKind kind, int pid,
                                   UniqueFd sock, asio::io_context& io)
    : name_(std::move(name)), kind_(kind), pid_(pid), sock_(std::move(sock)), watch_(io) {
  watch_.assign(::dup(sock_.get()));
  struct ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) peer_pid_ = cred.pid;
}

Result<uint32_t> DriverConnection::attach(const AttachArgs& a) {
  uint32_t id = next_device_id_++;
  capnp::MallocMessageBuilder mb;
  auto at = mb.initRoot<schema::DriverMsg>().initAttach();
  at.setDeviceId(id);
  at.setSlots(a.slots);
  at.setSlotSize(a.slot_size);
  if (kind_ == config::DriverKind::kNet) {
    at.initNet().setMac(capnp::Data::Reader(a.mac.data(), a.mac.size()));
  } else {
    auto b = at.initBlk();
    b.setReadOnly(a.read_only);
    b.setSerial(a.serial);
  }
  if (broken_) return make_error(Errc::kClosed, "driver '" + name_ + "' is being dropped");
  if (auto s = wire::send(sock_.get(), mb, a.fds); !s)
    return make_error(s.error().code, "driver '" + name_ + "': " + s.error().message);
  auto reply = wire::recv_timeout(sock_.get(), 5000);
  if (!reply) {
    if (reply.error().code == Errc::kMalformed) drop();
    return make_error(reply.error().code,
                      "driver '" + name_ + "' did not answer attach: " + reply.error().message);
  }
  auto ans = decode_attached(*reply, id);
  if (!ans) {
    drop();
    return make_error(Errc::kMalformed, "driver '" + name_ +
                                            "' answered attach with a malformed message: " +
                                            ans.error().message);
  }
  if (!ans->ok) return make_error("driver '" + name_ + "' refused the device: " + ans->error);
  ++devices_;
  return id;
}

// The driver broke the protocol: whatever it holds of the device it was
// asked to take is unknown, and a late answer would be read as the answer to
// the next attach.  Shutting the socket down (not closing it: the registry
// owns the connection) makes the registry's watch see it closed, so the
// connection is forgotten (its standby, if any, promoted) on the next turn
// of the loop, and the driver reads end of file, exits, and the supervisor
// starts a fresh instance.
void DriverConnection::drop() {
  if (broken_) return;
  broken_ = true;
  AXL_WARN("driver '%s' (pid %d): dropping its connection", name_.c_str(), pid_);
  ::shutdown(sock_.get(), SHUT_RDWR);
}

void DriverConnection::detach(uint32_t device_id) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::DriverMsg>().initDetach().setDeviceId(device_id);
  if (auto s = wire::send(sock_.get(), mb); !s)
    AXL_WARN("driver %s: detach %u: %s", name_.c_str(), device_id, s.error().message.c_str());
  if (devices_) --devices_;
}

Status DriverRegistry::listen(const std::string& path) {
  auto l = wire::listen(path);
  if (!l) return l.error();
  listen_fd_ = std::move(l).value();
  listen_watch_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(listen_fd_.get()));
  accept_next();
  return {};
}

void DriverRegistry::accept_next() {
  listen_watch_->async_wait(asio::posix::stream_descriptor::wait_read,
                            [this](const boost::system::error_code& ec) {
                              if (ec) return;
                              int fd = ::accept4(listen_fd_.get(), nullptr, nullptr,
                                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
                              if (fd >= 0) {
                                auto s = std::make_shared<asio::posix::stream_descriptor>(io_, fd);
                                await_hello(s, fd);
                              }
                              accept_next();
                            });
}

void DriverRegistry::await_hello(std::shared_ptr<asio::posix::stream_descriptor> s, int fd) {
  s->async_wait(asio::posix::stream_descriptor::wait_read, [this, s, fd](
                                                               const boost::system::error_code& ec) {
    if (ec) return;
    auto m = wire::recv(fd, MSG_DONTWAIT);
    if (!m && m.error().code == Errc::kWouldBlock) return await_hello(s, fd);
    if (!m) {
      AXL_WARN("driver connection dropped before hello: %s", m.error().message.c_str());
      return;  // `s` closes the fd
    }
    // Only this one connection is refused; every other driver and guest is
    // served on.
    auto h = decode_hello(*m);
    if (!h) {
      AXL_WARN("driver connection (peer pid %d): malformed hello: %s; closing", peer_pid_of(fd),
               h.error().message.c_str());
      return;
    }
    const std::string& name = h->name;
    const auto kind = h->kind;
    UniqueFd own(s->release());
    if (h->standby && drivers_.count(name)) {
      AXL_INFO("driver '%s' standby connected, pid %d", name.c_str(), h->pid);
      auto conn = std::make_unique<DriverConnection>(name, kind, h->pid, std::move(own), io_);
      DriverConnection* raw = conn.get();
      standbys_[name] = std::move(conn);  // a previous standby closes here
      watch_standby(raw);
      if (on_standby_) on_standby_(*raw);
      return;
    }
    if (drivers_.count(name))
      AXL_INFO("driver '%s' reconnected: its devices move to the new instance", name.c_str());
    AXL_INFO("driver '%s' (%s) connected, pid %d", name.c_str(), config::to_string(kind), h->pid);
    auto conn = std::make_unique<DriverConnection>(name, kind, h->pid, std::move(own), io_);
    DriverConnection* raw = conn.get();
    drivers_[name] = std::move(conn);  // a previous connection closes here
    watch(raw);
    if (on_connect_) on_connect_(*raw);
  });
}

// A driver only speaks when asked (attach); readable outside of that means it
// closed the connection or sent something unsolicited.
void DriverRegistry::watch(DriverConnection* c) {
  c->watcher().async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, c](const boost::system::error_code& ec) {
                            if (ec) return;
                            auto m = wire::recv(c->watcher().native_handle(), MSG_DONTWAIT);
                            if (!m && m.error().code == Errc::kWouldBlock) return watch(c);
                            if (!m) {
                              AXL_WARN("driver '%s' disconnected: %s%s", c->name().c_str(),
                                       m.error().message.c_str(),
                                       m.error().code == Errc::kMalformed
                                           ? " (a malformed packet: connection dropped)"
                                           : "");
                              std::string name = c->name();
                              drivers_.erase(name);
                              auto sb = standbys_.find(name);
                              if (sb != standbys_.end()) {
                                DriverConnection* raw = sb->second.get();
                                drivers_[name] = std::move(sb->second);
                                standbys_.erase(sb);
                                // Re-arm as the active's watch: cancel the standby one.
                                raw->watcher().cancel();
                                AXL_INFO("driver '%s': standby pid %d promoted", name.c_str(),
                                         raw->pid());
                                if (on_promote_) on_promote_(*raw);
                                io_.post([this, raw, name] {
                                  if (find(name) == raw) watch(raw);
                                });
                              }
                              return;
                            }
                            AXL_WARN("driver '%s' sent an unsolicited %s; ignored",
                                     c->name().c_str(), describe(*m).c_str());
                            watch(c);
                          });
}

void DriverRegistry::watch_standby(DriverConnection* c) {
  c->watcher().async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, c](const boost::system::error_code& ec) {
                            if (ec) return;
                            auto m = wire::recv(c->watcher().native_handle(), MSG_DONTWAIT);
                            if (!m && m.error().code == Errc::kWouldBlock)
                              return watch_standby(c);
                            if (!m) {
                              AXL_WARN("driver '%s' standby disconnected: %s", c->name().c_str(),
                                       m.error().message.c_str());
                              standbys_.erase(c->name());
                              return;
                            }
                            AXL_WARN("driver '%s' standby sent an unsolicited %s; ignored",
                                     c->name().c_str(), describe(*m).c_str());
                            watch_standby(c);
                          });
}

DriverConnection* DriverRegistry::find_standby(const std::string& name) {
  auto it = standbys_.find(name);
  return it == standbys_.end() ? nullptr : it->second.get();
}

DriverConnection* DriverRegistry::find(const std::string& name) {
  auto it = drivers_.find(name);
  return it == drivers_.end() ? nullptr : it->second.get();
}

std::vector<const DriverConnection*> DriverRegistry::all() const {
  std::vector<const DriverConnection*> v;
  for (auto& [k, d] : drivers_) v.push_back(d.get());
  return v;
}

}  // namespace axl::hv
