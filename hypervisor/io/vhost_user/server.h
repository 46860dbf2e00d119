// The device thread of one vhost-user device: a listening SOCK_STREAM Unix
// socket (QEMU connects as the client, `-chardev socket,...,reconnect=1`),
// one front-end connection at a time, the rings' kick eventfds, the device's
// own fds (channel doorbell) and a stop eventfd, all in one poll loop.  On
// disconnect it goes back to accepting; the device state survives.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/poll_window.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "hypervisor/io/vhost_user/backend.h"
#include "hypervisor/io/vhost_user/handler.h"
#include "hypervisor/io/vhost_user/session.h"

namespace axl::vhost_user {

class Server {
 public:
  // `backend` and `dma` must outlive the server.
  Server(std::string socket_path, Backend& backend, iommu::DmaContext& dma);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Stops and joins the thread, closes the socket and unlinks its path.
  ~Server();

  // The socket exists and listens when this returns.
  Status start();
  // The uid QEMU runs as (one of its own per domain): the socket is made
  // its (0600) before it listens, and a connection is taken from it or
  // root only.  Set before start().
  // Polling (config::DriverConfig::poll_us): after a round that found an fd
  // ready, the thread checks its fds without sleeping (poll with a zero
  // timeout) for up to `us` before it blocks again.  Set before start().
  void set_poll_us(uint32_t us) { poll_ = PollWindow(std::chrono::microseconds(us)); }
  void set_front_end(uid_t uid, gid_t gid) {
    fe_uid_ = uid;
    fe_gid_ = gid;
  }
  // Where the session is kept for a successor (session.h); set before
  // start() or resume().
  void set_keeper(SessionKeeper* k) {
    keeper_ = k;
    handler_.set_keeper(k);
  }
  // Instead of start(): takes over a session a predecessor kept (its
  // listening socket, QEMU's connection and the setup replayed), so QEMU
  // sees no disconnect.  A session that does not replay is closed (QEMU
  // then reconnects and sets the device up afresh); an Error only when
  // there is no listening socket to serve on.
  Status resume(KeptSession kept);

  // Runs `fn` on the device thread (inline before start()) and waits for it.
  // Never call it from the device thread itself.
  Status run_on_thread(std::function<void()> fn);

  iommu::IommuContext::Stats iotlb_stats() const { return handler_.iotlb_stats(); }
  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t protocol_errors() const { return handler_.protocol_errors() + dropped_.load(); }

 private:
  void run();
  void drop_connection(const char* why);
  void start_thread();
  SessionKeeper* keeper_ = nullptr;
  uid_t fe_uid_ = 0;
  gid_t fe_gid_ = 0;

  std::string path_;
  Backend& backend_;
  Handler handler_;
  UniqueFd listen_, conn_, stop_, task_;
  std::mutex task_mu_;
  std::deque<std::function<void()>> tasks_;
  std::thread thread_;
  PollWindow poll_;  // adapted (common/poll_window.h); touched by the device thread only
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace axl::vhost_user
