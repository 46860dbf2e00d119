// The fds a daemon's domains need it to keep must outlive a crash of that
// daemon: closed with it, they would end a channel its domains go on using
// (the supervisor's: each domain's health channel, a vTPM's sockets; the
// hypervisor's: QEMU's vhost-user connections, guest memory, ring eventfds,
// driver connections).  So the daemon hands a copy of each to whoever
// restarts it, with the fd store protocol of sd_notify(3) (FDSTORE=1,
// FDNAME=, FDSTOREREMOVE=1 on $NOTIFY_SOCKET), which systemd speaks for a
// unit with FileDescriptorStoreMax= and axolotl-monitor speaks for `axl host
// up`.  The next instance gets them back as sd_listen_fds(3) does
// ($LISTEN_FDS, $LISTEN_FDNAMES) and adopts the domains they belong to
// (docs/architecture.md, "No single point of failure").
#pragma once
#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl {

// An fd name as the protocol allows it: 1 to 255 printable ASCII characters, no ':'.
bool valid_fd_name(const std::string& name);

class FdStore {
 public:
  // Takes the fds handed down at start ($LISTEN_FDS, $LISTEN_PID,
  // $LISTEN_FDNAMES) and the store's address ($NOTIFY_SOCKET), and unsets
  // them all: no domain spawned later inherits them.
  static FdStore from_environment();
  FdStore() = default;
  FdStore(FdStore&&) = default;
  FdStore& operator=(FdStore&&) = default;

  // Whether fds put here outlive this process.
  bool available() const { return available_; }
  // The inherited fd named `name`, handed over once (empty if none).
  UniqueFd take(const std::string& name);
  // Names of inherited fds nobody took (their domains are gone).
  std::vector<std::string> untaken() const;
  // Keeps a copy of `fd` under `name` (replacing one of that name); without a
  // store, nothing.
  Status put(const std::string& name, int fd);
  // Drops the copy kept under `name`.
  void remove(const std::string& name);
  // Tells the restarter that this instance serves (READY=1).
  void ready();

 private:
  Status notify(const std::string& msg, int fd = -1);
  bool available_ = false;
  std::string socket_;  // $NOTIFY_SOCKET, taken from the environment
  std::map<std::string, UniqueFd> inherited_;
};

}  // namespace axl
