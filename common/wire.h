// Control messages: one Cap'n Proto message per SOCK_SEQPACKET packet, file
// descriptors alongside with SCM_RIGHTS.  SEQPACKET keeps message boundaries,
// so a peer can never make us read half a message as a whole one.
#pragma once
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::wire {

constexpr size_t kMaxMessageBytes = 256 * 1024;
constexpr size_t kMaxFds = 8;

// A received message: owns its words and the fds that came with it.
class Received {
 public:
  Received(kj::Array<capnp::word> words, std::vector<UniqueFd> fds);
  template <typename T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }
  std::vector<UniqueFd>& fds() { return fds_; }

 private:
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  std::vector<UniqueFd> fds_;
};

// Sends one message. On a non-blocking socket whose buffer is full the
// Error's code is Errc::kWouldBlock; a peer that has gone is Errc::kClosed.
Status send(int sock, capnp::MessageBuilder& msg, const std::vector<int>& fds = {});
// Reads one message. The Error's code says what happened: Errc::kClosed for
// an orderly close; Errc::kWouldBlock with MSG_DONTWAIT in `flags` and
// nothing queued; Errc::kMalformed for a packet that is not one Cap'n Proto
// message (truncated, not word aligned, a bad segment table), which has been
// consumed, so the socket stays usable; Errc::kIo when recvmsg failed.
// The messages below stay as they were: logs and tests read them.
inline constexpr const char* kClosed = "closed";
inline constexpr const char* kWouldBlock = "would block";
Result<Received> recv(int sock, int flags = 0);
// Waits up to `timeout_ms` for a message: Errc::kTimeout when none came,
// else as recv.
Result<Received> recv_timeout(int sock, int timeout_ms);

// Connect / listen on a SOCK_SEQPACKET Unix socket path.  A listening
// socket is 0600 before it listens (bind_private).
Result<UniqueFd> connect(const std::string& path);
Result<UniqueFd> listen(const std::string& path);
// Connects a SOCK_STREAM Unix socket (a console, a vTPM's command socket).
Result<UniqueFd> stream_connect(const std::string& path);
// Binds a Unix socket at `path` (replacing a stale socket there, nothing
// else) and makes it 0600 before the caller listens.
Status bind_private(int sock, const std::string& path);
// Whether the peer of a connected Unix socket is root or this process's
// user (SO_PEERCRED); its uid and pid in *uid, *pid when given.
bool peer_trusted(int sock, int* uid = nullptr, int* pid = nullptr);
// Who is on the other end of a connected Unix socket, as the kernel saw it
// at connect (SO_PEERCRED, SO_PEERGROUPS): what an access policy decides on.
struct PeerCred {
  int uid = -1, gid = -1, pid = -1;
  std::vector<int> gids;  // the primary group first, then the supplementary ones
};
PeerCred peer_cred(int sock);

}  // namespace axl::wire
