// The driver domains connected to this hypervisor.  A driver connects to the
// driver socket and says Hello; after that the hypervisor attaches device
// instances to it.  Everything a driver sends is untrusted.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>
#include "channel/liveness.h"
#include "common/asio.h"

#include "common/config.h"
#include "common/fd_store.h"
#include "common/result.h"
#include "common/schema/driver.capnp.h"
#include "common/unique_fd.h"
#include "common/wire.h"

namespace axl::hv {

class DriverConnection {
 public:
  DriverConnection(std::string name, config::DriverKind kind, int pid, UniqueFd sock,
                   boost::asio::io_context& io);
  const std::string& name() const { return name_; }
  config::DriverKind kind() const { return kind_; }
  int pid() const { return pid_; }  // as the driver said in its hello
  // The connecting process as the kernel saw it (SO_PEERCRED).  For a
  // sandboxed driver that is the supervisor, which connects on its behalf.
  int peer_pid() const { return peer_pid_; }
  // The instance the hypervisor names when it asks for a replacement: the
  // connecting process when it is the driver itself; else (the supervisor
  // connected for a sandboxed driver) the host pid the supervisor gave the
  // driver to announce.  A driver that lies there can only name a process
  // the supervisor does not hold as that driver's active instance, and the
  // supervisor ignores such a report.
  int instance_pid() const { return pid_; }
  // Unique for the hypervisor's life: tells a connection from a later one
  // that happens to be allocated at the same address.
  uint64_t serial() const { return serial_; }
  size_t devices() const { return devices_; }
  boost::asio::posix::stream_descriptor& watcher() { return watch_; }
  // Kept across a crash of the hypervisor (DriverRegistry::keep_in): the
  // connection's name in the fd store and its record; the device ids the
  // driver holds and the next one to give.
  const std::string& key() const { return key_; }
  const std::set<uint32_t>& live_ids() const { return live_; }
  uint32_t next_device_id() const { return next_device_id_; }

  // How long a driver may take to answer an Attach (DriverRegistry sets it).
  static constexpr int kAttachTimeoutMs = 5000;
  void set_attach_timeout_ms(int ms) { attach_timeout_ms_ = ms; }

  // An adopted connection (one a predecessor kept): its key, and the ids
  // to go on from; the driver's devices with `stale` ids are detached (their
  // channels went with the predecessor).
  void adopted(std::string key, uint32_t next_device_id, const std::set<uint32_t>& stale);
  // Called whenever what key()'s record says changes, and once when the
  // connection goes (gone = true).  Set by the registry.
  void on_record_change(std::function<void(const DriverConnection&, bool gone)> f) {
    record_change_ = std::move(f);
  }

  // Sends Attach with the channel fds (and the image fd for blk) and returns
  // at once; `done` runs later on the loop with the device id once the
  // driver answers, or with an Error.
  struct AttachArgs {
    uint32_t slots = 0, slot_size = 0;
    std::vector<int> fds;  // memfd, req_kick, resp_kick, then the kind's own
    // Fills the device kind's part of the message (device_kinds.h).
    std::function<void(schema::Attach::Builder)> kind_part;
  };
  // A malformed answer is an Error with code Errc::kMalformed, and the
  // connection is dropped (see drop()); no answer within kAttachTimeoutMs
  // is an Error with code Errc::kTimeout, the connection is dropped and the
  // violation reported (on_violation), so the supervisor replaces that
  // instance; a refusal is an Error that leaves the connection as it was;
  // a connection that goes away fails what it had pending (Errc::kClosed).
  using AttachDone = std::function<void(Result<uint32_t>)>;
  void attach(const AttachArgs& a, AttachDone done);
  // Each message the driver sends, from the registry's watch: the answer
  // to a pending attach, or a violation (the connection is then dropped).
  void on_message(wire::Received& m);
  // A packet that is no message at all (wire's Errc::kMalformed): the same.
  void on_bad_packet(const Error& e);
  // Where protocol violations are reported (the engine asks the supervisor
  // to replace the instance).
  void on_violation(std::function<void(DriverConnection&, const std::string& cause)> f) {
    on_violation_ = std::move(f);
  }
  // The kernel released this driver's liveness lock in one of its channels
  // (channel/liveness.h): the process is exiting.  Runs on the loop, at most
  // once per connection, usually before the socket reports end of file.
  void on_died(std::function<void(DriverConnection&)> f) { on_died_ = std::move(f); }
  // Whether the kernel marked a channel lock of this driver's dead (its
  // watch's report may still be on its way).
  bool death_seen() const;
  // Whether its hello said it is a standby (it may stand in as the active
  // until the active says hello).
  bool said_standby() const { return said_standby_; }
  void set_said_standby(bool s) { said_standby_ = s; }
  // Whether the instance is gone (or going): dropped, its channel lock or
  // its socket said so, or its process is no more (or a zombie).
  bool gone() const;
  // CLOCK_MONOTONIC when its channel lock told of its death (0: not yet).
  uint64_t death_ns() const { return death_ns_; }
  ~DriverConnection();
  void detach(uint32_t device_id);
  // The driver broke the protocol: the connection is shut down, and the
  // registry forgets it once its watch sees that.  Later attaches fail.
  void drop();

 private:
  std::string name_;
  config::DriverKind kind_;
  int pid_;
  int peer_pid_ = 0;
  UniqueFd sock_;
  boost::asio::posix::stream_descriptor watch_;  // borrows sock_ for readiness only
  uint32_t next_device_id_ = 1;
  size_t devices_ = 0;
  std::string key_;
  bool said_standby_ = false;
  std::set<uint32_t> live_;
  std::function<void(const DriverConnection&, bool)> record_change_;
  void record_changed() {
    if (record_change_) record_change_(*this, false);
  }
  bool broken_ = false;  // drop() was called
  uint64_t serial_;
  int attach_timeout_ms_ = kAttachTimeoutMs;
  boost::asio::io_context& io_;
  struct Pending {
    AttachDone done;
    std::unique_ptr<boost::asio::steady_timer> deadline;
    std::unique_ptr<channel::DeathWatch> death;  // armed once the driver accepts
  };
  // One per attached device; the first to fire reports the death.
  std::map<uint32_t, std::unique_ptr<channel::DeathWatch>> deaths_;
  std::function<void(DriverConnection&)> on_died_;
  bool died_ = false;
  uint64_t death_ns_ = 0;  // when the watch's thread saw the lock released
  // Lives as long as the connection: the death watches' posted reports
  // check it before touching the connection.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  void arm_death_watch(uint32_t id, std::unique_ptr<channel::DeathWatch> w);
  std::map<uint32_t, Pending> pending_;
  std::function<void(DriverConnection&, const std::string&)> on_violation_;
  void complete(uint32_t id, Result<uint32_t> r);
  void violation(const std::string& cause);
  std::unique_ptr<boost::asio::steady_timer> shutdown_timer_;
  void fail_all(const Error& e);  // every pending attach, from the loop
};

class DriverRegistry {
 public:
  explicit DriverRegistry(boost::asio::io_context& io) : io_(io) {}
  // Called after a driver said hello, including a restarted instance of a
  // driver seen before (which replaces the old connection).
  void on_connect(std::function<void(DriverConnection&)> f) { on_connect_ = std::move(f); }
  // A warm standby said hello (it gets channels now, requests once promoted).
  void on_standby(std::function<void(DriverConnection&)> f) { on_standby_ = std::move(f); }
  // The active instance went away and its standby took over, here and now:
  // promotion needs no process start and no supervisor round trip.
  void on_promote(std::function<void(DriverConnection&)> f) { on_promote_ = std::move(f); }
  // Keeps every connection across a crash of the hypervisor: its fd in
  // `store` and a record in `dir` (role, pid, the device ids the driver
  // holds), so a successor takes the connection over with adopt_kept() and
  // the driver never sees it close (docs/architecture.md, "The
  // hypervisor's own crash").  Call before anything connects.
  void keep_in(FdStore& store, std::string dir);
  // Takes back the connections a predecessor kept, each in the role it had,
  // without a hello; what the driver still holds from before is detached.
  // A record without its fd is removed.  Returns how many were adopted.
  size_t adopt_kept();
  // For tests: how long drivers connecting from now on may take to answer an attach.
  void set_attach_timeout_ms(int ms) { attach_timeout_ms_ = ms; }
  // A connection broke the protocol (installed on every connection).
  void on_violation(std::function<void(DriverConnection&, const std::string& cause)> f) {
    on_violation_ = std::move(f);
  }
  DriverConnection* find_standby(const std::string& name);
  // Fences the active instance of `name` (its connection is dropped, its
  // channels are read no more) and promotes its standby now: the supervisor
  // asks this before it kills an instance itself.  Error if no standby.
  Status promote(const std::string& name);
  // The active or standby connection of `name` with this serial, if it is still there.
  DriverConnection* find_serial(const std::string& name, uint64_t serial);
  Status listen(const std::string& path);
  // Serves on a socket already listening (kept across a restart).
  void listen(UniqueFd sock);
  DriverConnection* find(const std::string& name);
  std::vector<const DriverConnection*> all() const;
  // CLOCK_MONOTONIC when the hypervisor last learned that the active
  // instance of `name` died (its channel lock); 0: never.
  uint64_t last_death_ns(const std::string& name) const {
    auto it = last_death_ns_.find(name);
    return it == last_death_ns_.end() ? 0 : it->second;
  }

 private:
  void accept_next();
  // Installs the handlers every connection gets, and keeps it (keep_in).
  void setup(DriverConnection* c);
  // Puts its fd in the store and writes its record.
  void keep(DriverConnection* c);
  void write_record(const DriverConnection& c);
  FdStore* store_ = nullptr;
  std::string record_dir_;
  void await_hello(const std::shared_ptr<boost::asio::posix::stream_descriptor>& s, int fd);
  void watch(DriverConnection* c);
  void watch_standby(DriverConnection* c);
  // The active connection of `name` is gone: its standby, if any, takes over.
  void take_over(const std::string& name);
  // A connection's driver died (its liveness lock said so): forget it as if
  // its socket had closed.
  void died(DriverConnection& c);

  boost::asio::io_context& io_;
  UniqueFd listen_fd_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> listen_watch_;
  std::map<std::string, std::unique_ptr<DriverConnection>> drivers_;
  std::map<std::string, std::unique_ptr<DriverConnection>> standbys_;
  std::function<void(DriverConnection&)> on_connect_, on_standby_, on_promote_;
  std::function<void(DriverConnection&, const std::string&)> on_violation_;
  int attach_timeout_ms_ = DriverConnection::kAttachTimeoutMs;
  std::map<std::string, uint64_t> last_death_ns_;
};

}  // namespace axl::hv
