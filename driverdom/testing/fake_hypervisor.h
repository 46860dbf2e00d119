// Test peer: the hypervisor side of the driver control socket.  It listens,
// starts the real axolotl-driverdom binary against itself, and speaks
// common/schema/driver.capnp with timeouts so a broken driver fails a test
// instead of hanging it.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire.h"

namespace axl::driverdom::testing {

class FakeHypervisor {
 public:
  // The fd number a TAP is handed to the driver under, and one left open
  // (without CLOEXEC) across exec that the driver must close.
  static constexpr int kChildTapFd = 10;
  static constexpr int kChildLeakedFd = 20;

  FakeHypervisor();
  ~FakeHypervisor();  // kills a still-running driver, removes the socket
  FakeHypervisor(const FakeHypervisor&) = delete;
  FakeHypervisor& operator=(const FakeHypervisor&) = delete;

  const std::string& socket_path() const { return path_; }
  bool listening() const { return listener_.valid(); }

  // Starts the driver (`tap_fd` >= 0 is passed as --tap-fd kChildTapFd).
  Status spawn(const std::string& name, const std::string& kind, int tap_fd = -1);
  pid_t pid() const { return pid_; }
  Status accept(int timeout_ms = 5000);
  int conn() const { return conn_.get(); }
  void hang_up() { conn_.reset(); }

  Result<wire::Received> recv(int timeout_ms = 5000);
  // Waits for the driver to exit; its exit code, or nullopt on timeout/signal.
  std::optional<int> wait_exit(int timeout_ms = 5000);

 private:
  std::string dir_, path_;
  UniqueFd listener_, conn_;
  pid_t pid_ = -1;
};

// Waits until `fd` is readable.
bool wait_readable(int fd, int timeout_ms);

// A fresh channel split into the hypervisor end and the fds to send.
struct TestChannel {
  std::unique_ptr<channel::HvEnd> hv;
  channel::ChannelFds send_fds;  // dups of what `hv` uses
};
Result<TestChannel> make_channel(uint32_t slots, uint32_t slot_size);

}  // namespace axl::driverdom::testing
