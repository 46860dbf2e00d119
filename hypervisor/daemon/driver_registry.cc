#include "hypervisor/daemon/driver_registry.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "common/kv_record.h"
#include "common/log.h"
#include "common/schema/driver.capnp.h"
#include "common/wire.h"
#include "hypervisor/daemon/driver_messages.h"

namespace axl::hv {

namespace asio = boost::asio;

namespace {
uint64_t next_serial() {
  static uint64_t n = 0;  // the loop's thread only
  return ++n;
}

// Who is on the other end of a connection that has not said who it is.
int peer_pid_of(int fd) {
  struct ucred cred {};
  socklen_t len = sizeof cred;
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
}
}  // namespace

DriverConnection::DriverConnection(std::string name, config::DriverKind kind, int pid,
                                   UniqueFd sock, asio::io_context& io)
    : name_(std::move(name)),
      kind_(kind),
      pid_(pid),
      sock_(std::move(sock)),
      watch_(io),
      serial_(next_serial()),
      io_(io) {
  watch_.assign(::dup(sock_.get()));
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) peer_pid_ = cred.pid;
}

DriverConnection::~DriverConnection() {
  if (record_change_) record_change_(*this, true);
  *alive_ = false;
  fail_all(make_error(Errc::kClosed, "driver '" + name_ + "' went away before answering attach"));
}

void DriverConnection::attach(const AttachArgs& a, AttachDone done) {
  auto fail_soon = [&](Error e) {
    asio::post(io_, [done = std::move(done), e = std::move(e)] { done(e); });
  };
  if (broken_)
    return fail_soon(make_error(Errc::kClosed, "driver '" + name_ + "' is being dropped"));
  uint32_t id = next_device_id_++;
  capnp::MallocMessageBuilder mb;
  auto at = mb.initRoot<schema::DriverMsg>().initAttach();
  at.setDeviceId(id);
  at.setSlots(a.slots);
  at.setSlotSize(a.slot_size);
  if (a.kind_part) a.kind_part(at);
  // The fds travel with the send (SCM_RIGHTS): the caller may close its own now.
  if (auto s = wire::send(sock_.get(), mb, a.fds); !s)
    return fail_soon(make_error(s.error().code, "driver '" + name_ + "': " + s.error().message));
  Pending p;
  p.done = std::move(done);
  // Mapped now, while the caller's memfd is open; watched once accepted.
  if (!a.fds.empty()) {
    auto w = channel::DeathWatch::open(a.fds[0]);
    if (w)
      p.death = std::move(w).value();
    else
      AXL_WARN("driver '%s': no death watch for device %u: %s", name_.c_str(), id,
               w.error().message.c_str());
  }
  p.deadline =
      std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(attach_timeout_ms_));
  p.deadline->async_wait([this, id](const boost::system::error_code& ec) {
    if (ec || !pending_.count(id)) return;
    const std::string cause =
        "no answer to attach within " + std::to_string(attach_timeout_ms_) + " ms";
    AXL_WARN("driver '%s' (pid %d): %s", name_.c_str(), pid_, cause.c_str());
    complete(id, make_error(Errc::kTimeout, "driver '" + name_ + "': " + cause));
    violation(cause);
  });
  pending_.emplace(id, std::move(p));
}

void DriverConnection::complete(uint32_t id, Result<uint32_t> r) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  AttachDone done = std::move(it->second.done);
  auto death = std::move(it->second.death);
  pending_.erase(it);  // cancels its deadline
  if (r) {
    ++devices_;
    live_.insert(id);
    record_changed();
    if (death) arm_death_watch(id, std::move(death));
  }
  done(std::move(r));
}

bool DriverConnection::gone() const {
  if (broken_ || death_seen()) return true;
  // Its end closed (the process exited) and we have not read that yet.
  char b;
  const ssize_t n = ::recv(sock_.get(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
  // Exited and not reaped yet: a zombie holds no socket, but its peer may
  // still see it open for a moment.
  auto stat = config::read_file("/proc/" + std::to_string(pid_) + "/stat");
  if (!stat) return true;
  const auto close = stat->rfind(')');
  return close == std::string::npos || close + 2 >= stat->size() || (*stat)[close + 2] == 'Z' ||
         (*stat)[close + 2] == 'X';
}

bool DriverConnection::death_seen() const {
  for (auto& [id, w] : deaths_)
    if (w->state() == channel::DeathWatch::State::kDied || w->owner_died()) return true;
  return false;
}

void DriverConnection::arm_death_watch(uint32_t id, std::unique_ptr<channel::DeathWatch> w) {
  // From the watch's thread: hop to the loop, where the connection may be
  // gone by then.
  w->arm([this, alive = std::weak_ptr<bool>(alive_), &io = io_] {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const uint64_t seen = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    asio::post(io, [this, alive, seen] {
      auto a = alive.lock();
      if (!a || !*a || died_) return;
      died_ = true;
      death_ns_ = seen;
      // A copy: the registry forgets (destroys) this connection in it.
      if (auto f = on_died_) f(*this);
    });
  });
  deaths_[id] = std::move(w);
}

void DriverConnection::fail_all(const Error& e) {
  for (auto& [id, p] : pending_) asio::post(io_, [done = std::move(p.done), e] { done(e); });
  pending_.clear();
}

void DriverConnection::on_message(wire::Received& m) {
  if (broken_) return;  // nothing more is taken from it
  auto id = attached_device_id(m);
  if (id && pending_.count(*id)) {
    auto ans = decode_attached(m, *id);
    if (!ans) {
      complete(*id, make_error(Errc::kMalformed,
                               "driver '" + name_ + "' answered attach with a malformed message: " +
                                   ans.error().message));
      violation("protocol violation: malformed attach answer");
      return;
    }
    if (!ans->ok)
      return complete(*id, make_error("driver '" + name_ + "' refused the device: " + ans->error));
    return complete(*id, *id);
  }
  // A driver only speaks when asked: anything else (an answer to no pending
  // attach among them) breaks the protocol, and whatever it meant is unknown.
  on_bad_packet(make_error(Errc::kMalformed, id ? "attached names device " + std::to_string(*id) +
                                                      ", which no pending attach has"
                                                : id.error().message));
}

void DriverConnection::on_bad_packet(const Error& e) {
  if (broken_) return;
  AXL_WARN("driver '%s' sent an unsolicited or malformed message (%s); dropping it", name_.c_str(),
           e.message.c_str());
  fail_all(
      make_error(Errc::kMalformed,
                 "driver '" + name_ + "' answered attach with a malformed message: " + e.message));
  violation("protocol violation: malformed control message");
}

// The driver broke the control protocol: nothing more is taken from it
// (later attaches fail, its messages are ignored) and the supervisor is asked
// to replace it with `cause`.  Its connection is shut down a moment later,
// unless the supervisor's kill closed it first: shut down at once, the driver
// would read end of file and exit before the report arrived, and the outage
// would be recorded as a plain exit.  Without a supervisor the shutdown still
// comes.
void DriverConnection::violation(const std::string& cause) {
  if (broken_) return;
  broken_ = true;
  if (on_violation_) on_violation_(*this, cause);
  shutdown_timer_ = std::make_unique<asio::steady_timer>(io_, std::chrono::seconds(1));
  shutdown_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    AXL_WARN("driver '%s' (pid %d): dropping its connection", name_.c_str(), pid_);
    ::shutdown(sock_.get(), SHUT_RDWR);
  });
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
  deaths_.erase(device_id);  // the driver gives the lock back as it detaches
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::DriverMsg>().initDetach().setDeviceId(device_id);
  if (auto s = wire::send(sock_.get(), mb); !s)
    AXL_WARN("driver %s: detach %u: %s", name_.c_str(), device_id, s.error().message.c_str());
  if (devices_) --devices_;
  if (live_.erase(device_id)) record_changed();
}

void DriverConnection::adopted(std::string key, uint32_t next_device_id,
                               const std::set<uint32_t>& stale) {
  key_ = std::move(key);
  next_device_id_ = std::max(next_device_id_, next_device_id);
  for (uint32_t id : stale) {
    if (id >= next_device_id_) next_device_id_ = id + 1;
    capnp::MallocMessageBuilder mb;
    mb.initRoot<schema::DriverMsg>().initDetach().setDeviceId(id);
    if (auto s = wire::send(sock_.get(), mb); !s)
      AXL_WARN("driver %s: detach %u: %s", name_.c_str(), id, s.error().message.c_str());
  }
}

namespace {
uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
}  // namespace

void DriverRegistry::keep_in(FdStore& store, std::string dir) {
  store_ = &store;
  record_dir_ = std::move(dir);
  if (::mkdir(record_dir_.c_str(), 0700) != 0 && errno != EEXIST)
    AXL_WARN("cannot create %s: %s", record_dir_.c_str(), strerror(errno));
}

void DriverRegistry::write_record(const DriverConnection& c) {
  std::string ids;
  for (uint32_t id : c.live_ids()) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const bool standby = find_standby(c.name()) == &c;
  KvRecord r{{"name", c.name()},
             {"kind", config::to_string(c.kind())},
             {"pid", std::to_string(c.pid())},
             {"role", standby ? "standby" : "active"},
             {"next_id", std::to_string(c.next_device_id())},
             {"devices", ids}};
  if (auto s = write_kv_record(record_dir_ + "/" + c.key(), r); !s)
    AXL_WARN("%s", s.error().message.c_str());
}

void DriverRegistry::setup(DriverConnection* c) {
  c->on_violation(on_violation_);
  c->on_died([this](DriverConnection& x) { died(x); });
  c->set_attach_timeout_ms(attach_timeout_ms_);
  if (!store_) return;
  if (c->key().empty())
    c->adopted("drv." + c->name() + "." + std::to_string(c->pid()) + "." + std::to_string(now_ns()),
               1, {});
  c->on_record_change([this](const DriverConnection& x, bool gone) {
    if (gone) {
      store_->remove(x.key());
      ::unlink((record_dir_ + "/" + x.key()).c_str());
      return;
    }
    write_record(x);
  });
}

void DriverRegistry::keep(DriverConnection* c) {
  if (!store_) return;
  if (auto s = store_->put(c->key(), c->watcher().native_handle()); !s)
    AXL_WARN("driver '%s': %s", c->name().c_str(), s.error().message.c_str());
  write_record(*c);
}

size_t DriverRegistry::adopt_kept() {
  if (!store_) return 0;
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(record_dir_, ec)) {
    const std::string key = e.path().filename().string();
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".tmp") == 0) {
      ::unlink(e.path().c_str());
      continue;
    }
    UniqueFd fd = store_->take(key);
    auto r = read_kv_record(e.path().string());
    auto pid = r ? kv_number(*r, "pid", INT32_MAX) : Result<uint64_t>(r.error());
    auto next = r ? kv_number(*r, "next_id", UINT32_MAX) : Result<uint64_t>(r.error());
    std::optional<config::DriverKind> kind;
    if (r && (*r)["kind"] == "net") kind = config::DriverKind::kNet;
    if (r && (*r)["kind"] == "blk") kind = config::DriverKind::kBlk;
    if (!fd || !pid || !next || !kind || (*r)["name"].empty()) {
      AXL_WARN("driver connection record %s dropped: %s", key.c_str(),
               !fd ? "its connection was not kept" : "malformed");
      store_->remove(key);
      ::unlink(e.path().c_str());
      continue;
    }
    std::set<uint32_t> stale;
    const std::string ids = (*r)["devices"];
    for (size_t at = 0; at < ids.size();) {
      size_t comma = ids.find(',', at);
      if (comma == std::string::npos) comma = ids.size();
      const unsigned long v = strtoul(ids.substr(at, comma - at).c_str(), nullptr, 10);
      if (v > 0 && v <= UINT32_MAX) stale.insert(uint32_t(v));
      at = comma + 1;
    }
    const std::string name = (*r)["name"];
    const bool standby = (*r)["role"] == "standby";
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
    auto conn = std::make_unique<DriverConnection>(name, *kind, int(*pid), std::move(fd), io_);
    DriverConnection* raw = conn.get();
    raw->adopted(key, uint32_t(*next), stale);
    AXL_INFO("driver '%s' (%s, pid %d) adopted%s; %zu stale device%s detached", name.c_str(),
             config::to_string(*kind), int(*pid), standby ? " as standby" : "", stale.size(),
             stale.size() == 1 ? "" : "s");
    if (standby) {
      standbys_[name] = std::move(conn);
      setup(raw);
      write_record(*raw);
      watch_standby(raw);
    } else {
      drivers_[name] = std::move(conn);
      setup(raw);
      write_record(*raw);
      watch(raw);
    }
    ++n;
  }
  return n;
}

Status DriverRegistry::listen(const std::string& path) {
  auto l = wire::listen(path);
  if (!l) return l.error();
  listen(std::move(l).value());
  return {};
}

void DriverRegistry::listen(UniqueFd sock) {
  listen_fd_ = std::move(sock);
  listen_watch_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(listen_fd_.get()));
  accept_next();
}

void DriverRegistry::accept_next() {
  listen_watch_->async_wait(
      asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return;
        int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        int uid = -1, pid = -1;
        if (fd >= 0 && !wire::peer_trusted(fd, &uid, &pid)) {
          // Drivers are connected by the supervisor (root) or are root's own.
          AXL_WARN("driver connection from uid %d (pid %d) refused", uid, pid);
          ::close(fd);
          fd = -1;
        }
        if (fd >= 0) {
          auto s = std::make_shared<asio::posix::stream_descriptor>(io_, fd);
          await_hello(s, fd);
        }
        accept_next();
      });
}

void DriverRegistry::await_hello(const std::shared_ptr<asio::posix::stream_descriptor>& s, int fd) {
  s->async_wait(
      asio::posix::stream_descriptor::wait_read,
      [this, s, fd](const boost::system::error_code& ec) {
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
        // A name is held by the instance that said it first, as long as
        // that one lives: a second hello under it is an impostor (or a
        // confused driver), refused, and the devices stay where they are.
        // (A standby that said hello before its active did stands in as the
        // active until then: the active's hello replaces it, as before.)
        for (DriverConnection* held : {find(name), find_standby(name)}) {
          if (held && !held->gone() && held->said_standby() == h->standby &&
              (held == find(name)) == !h->standby) {
            AXL_WARN(
                "driver connection (peer pid %d): hello as '%s'%s refused: pid %d holds that "
                "name and lives",
                peer_pid_of(fd), name.c_str(), h->standby ? " standby" : "", held->pid());
            return;
          }
        }
        UniqueFd own(s->release());
        if (h->standby && drivers_.count(name)) {
          AXL_INFO("driver '%s' standby connected, pid %d", name.c_str(), h->pid);
          auto conn = std::make_unique<DriverConnection>(name, kind, h->pid, std::move(own), io_);
          DriverConnection* raw = conn.get();
          raw->set_said_standby(true);
          standbys_[name] = std::move(conn);  // a previous standby closes here
          setup(raw);
          keep(raw);
          watch_standby(raw);
          if (on_standby_) on_standby_(*raw);
          return;
        }
        if (drivers_.count(name))
          AXL_INFO("driver '%s' reconnected: its devices move to the new instance", name.c_str());
        AXL_INFO("driver '%s' (%s) connected, pid %d", name.c_str(), config::to_string(kind),
                 h->pid);
        auto conn = std::make_unique<DriverConnection>(name, kind, h->pid, std::move(own), io_);
        DriverConnection* raw = conn.get();
        raw->set_said_standby(h->standby);
        drivers_[name] = std::move(conn);  // a previous connection closes here
        setup(raw);
        keep(raw);
        watch(raw);
        if (on_connect_) on_connect_(*raw);
      });
}

// A driver only speaks when asked (attach); readable outside of that means it
// closed the connection or sent something unsolicited.
void DriverRegistry::watch(DriverConnection* c) {
  c->watcher().async_wait(
      asio::posix::stream_descriptor::wait_read, [this, c](const boost::system::error_code& ec) {
        if (ec) return;
        auto m = wire::recv(c->watcher().native_handle(), MSG_DONTWAIT);
        if (!m && m.error().code == Errc::kWouldBlock) return watch(c);
        if (!m && m.error().code == Errc::kMalformed) {
          c->on_bad_packet(m.error());  // dropped: closed on the next read
          return watch(c);
        }
        if (!m && c->death_seen()) return died(*c);  // the lock said so first
        if (!m) {
          AXL_WARN("driver '%s' disconnected: %s%s", c->name().c_str(), m.error().message.c_str(),
                   m.error().code == Errc::kMalformed ? " (a malformed packet: connection dropped)"
                                                      : "");
          std::string name = c->name();
          if (find(name) != c) return;  // already replaced (promote)
          drivers_.erase(name);
          take_over(name);
          return;
        }
        c->on_message(*m);
        watch(c);
      });
}

void DriverRegistry::watch_standby(DriverConnection* c) {
  c->watcher().async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, c](const boost::system::error_code& ec) {
                            if (ec) return;
                            auto m = wire::recv(c->watcher().native_handle(), MSG_DONTWAIT);
                            if (!m && m.error().code == Errc::kWouldBlock) return watch_standby(c);
                            if (!m && m.error().code == Errc::kMalformed) {
                              c->on_bad_packet(m.error());
                              return watch_standby(c);
                            }
                            if (!m && c->death_seen()) return died(*c);
                            if (!m) {
                              AXL_WARN("driver '%s' standby disconnected: %s", c->name().c_str(),
                                       m.error().message.c_str());
                              standbys_.erase(c->name());
                              return;
                            }
                            c->on_message(*m);  // its pre-attach answers
                            watch_standby(c);
                          });
}

DriverConnection* DriverRegistry::find_standby(const std::string& name) {
  auto it = standbys_.find(name);
  return it == standbys_.end() ? nullptr : it->second.get();
}

void DriverRegistry::take_over(const std::string& name) {
  auto sb = standbys_.find(name);
  if (sb == standbys_.end()) return;
  DriverConnection* raw = sb->second.get();
  drivers_[name] = std::move(sb->second);
  standbys_.erase(sb);
  // Re-arm as the active's watch: cancel the standby one.
  raw->watcher().cancel();
  AXL_INFO("driver '%s': standby pid %d promoted", name.c_str(), raw->pid());
  raw->set_said_standby(false);  // the active now, for real
  if (store_) write_record(*raw);
  if (on_promote_) on_promote_(*raw);
  io_.post([this, raw, name] {
    if (find(name) == raw) watch(raw);
  });
}

void DriverRegistry::died(DriverConnection& c) {
  const std::string name = c.name();
  if (find_standby(name) == &c) {
    AXL_WARN("driver '%s' standby (pid %d) died", name.c_str(), c.pid());
    standbys_.erase(name);
    return;
  }
  if (find(name) != &c) return;
  AXL_WARN("driver '%s' (pid %d) died: the kernel released its channel lock", name.c_str(),
           c.pid());
  uint64_t seen = c.death_ns();
  if (!seen) {  // its socket closed before the watch's report reached the loop
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    seen = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  }
  last_death_ns_[name] = seen;
  drivers_.erase(name);
  take_over(name);
}

Status DriverRegistry::promote(const std::string& name) {
  if (!find_standby(name)) return make_error("driver '" + name + "' has no standby connected");
  auto it = drivers_.find(name);
  if (it != drivers_.end()) {
    // Fenced: nothing it writes is read any more, and its connection closes.
    AXL_INFO("driver '%s' (pid %d) fenced on request", name.c_str(), it->second->pid());
    it->second->drop();
    drivers_.erase(it);
  }
  take_over(name);
  return {};
}

DriverConnection* DriverRegistry::find_serial(const std::string& name, uint64_t serial) {
  for (DriverConnection* c : {find(name), find_standby(name)})
    if (c && c->serial() == serial) return c;
  return nullptr;
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
