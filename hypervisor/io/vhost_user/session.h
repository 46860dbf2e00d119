// Keeping a vhost-user session across a crash of the hypervisor
// (docs/architecture.md, "The hypervisor's own crash").
//
// QEMU's `reconnect=` waits whole seconds, and a reconnect makes QEMU stop
// and restart the device.  So the session is never closed: the device hands
// a copy of every fd the session lives on (the listening socket, QEMU's
// connection, guest memory, ring eventfds, the back-end channel, the
// inflight region) to the daemon's fd store, and records the last message
// of each kind that set up state still in force.  A successor takes the fds
// back and replays those messages through the same handler, as if QEMU had
// just sent them; the rings then resume from the inflight region
// (hypervisor/io/virtio/inflight.h), so nothing is lost and nothing
// completes twice.  QEMU never notices.
//
// IOTLB messages, the only ones that keep coming while a guest runs, are
// taken out of the socket only once handled and answered
// (peek_iotlb_message): a successor handles again one its predecessor died
// on, so QEMU, which waits for each one's REPLY_ACK, is answered.  (Dying
// between the answer and the taking leaves QEMU one extra, identical ack.)
// Limit: a setup message QEMU had sent but the dead process had not finished
// reading or answering is lost; those come only while the guest (re)starts
// a device.
#pragma once
#include <map>
#include <string>

#include "common/kv_record.h"
#include "common/unique_fd.h"

namespace axl::vhost_user {

// Where a device keeps its session.  Called on the device thread.
class SessionKeeper {
 public:
  virtual ~SessionKeeper() = default;
  // Keeps a copy of `fd` under `name` ("listen", "conn", "mem.0", ...),
  // replacing one of that name.
  virtual void keep_fd(const std::string& name, int fd) = 0;
  virtual void drop_fd(const std::string& name) = 0;
  // The session's messages as they stand now (Handler's journal).
  virtual void keep_record(const KvRecord& rec) = 0;
  // The device is gone for good (destroyed): drop everything.
  virtual void forget() = 0;
};

// What a successor resumes a device with.
struct KeptSession {
  UniqueFd listen, conn;
  KvRecord record;
  std::map<std::string, UniqueFd> fds;  // by the names given to keep_fd
};

}  // namespace axl::vhost_user
