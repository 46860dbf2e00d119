// The vhost-user back-end state machine (QEMU docs/interop/vhost-user.rst):
// features, ownership, memory table, ring setup and lifecycle, config space,
// REPLY_ACK.  It never touches device semantics: those sit behind Backend.
//
// Ring lifecycle ("Starting and stopping rings"): a ring starts when its kick
// fd arrives and, once VHOST_USER_F_PROTOCOL_FEATURES is negotiated, only
// while enabled by SET_VRING_ENABLE; GET_VRING_BASE stops it.
//
// Guest IOMMU ("IOMMU support"): VIRTIO_F_ACCESS_PLATFORM is always offered
// (with the IOTLB and BACKEND_REQ protocol features) and QEMU acks it only
// for a device it gave iommu_platform=on.  Once acked, ring and buffer
// addresses are IOVAs and every access goes through the device's IOTLB
// (iommu::IommuContext); a miss is asked of the front-end on the back-end
// channel and the access waits (the ring is not touched, the chain stays in
// it) until the answer; an invalidation takes effect before this handler
// replies to it.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hypervisor/io/vhost_user/backend.h"
#include "hypervisor/io/vhost_user/protocol.h"
#include "hypervisor/io/vhost_user/session.h"
#include "hypervisor/io/virtio/inflight.h"
#include "iommu/dma.h"
#include "iommu/guest_memory.h"
#include "iommu/iotlb.h"

namespace axl::vhost_user {

class Handler {
 public:
  static constexpr uint32_t kMaxQueues = 16;

  // `dma` is the device's DMA context; the handler points it at the current
  // memory table.  Both references must outlive the handler.
  Handler(Backend& backend, iommu::DmaContext& dma, std::string label = "vhost-user device");
  ~Handler();

  enum class Outcome { kKeep, kClose };
  // Handles one message from the front-end, replying on `sock`.  kClose for a
  // malformed message or a failed reply write: the caller drops the connection.
  Outcome handle(int sock, Message msg);
  // The connection is gone: stop every ring and forget per-connection state
  // (the front-end replays the whole setup when it reconnects).
  void disconnect();

  // Journals the session for a successor (session.h); set before the first
  // message.
  void set_keeper(SessionKeeper* k) { keeper_ = k; }
  // Replays a kept session's messages (KeptSession::record) with their fds,
  // taken from `fds`.  An Error names the message that did not apply; the
  // caller then drops the connection.
  Status resume(const KvRecord& record, std::map<std::string, UniqueFd>& fds);

  struct KickFd {
    int fd;
    uint32_t queue;
  };
  std::vector<KickFd> kick_fds() const;
  // `queue`'s kick fd polled readable.
  void kicked(uint32_t queue);

  // The back-end channel (SET_BACKEND_REQ_FD), -1 if none; poll it and call
  // backend_readable() when it is.
  int backend_fd() const { return backend_req_.get(); }
  void backend_readable();

  iommu::IommuContext::Stats iotlb_stats() const { return iommu_.stats(); }
  bool translating() const { return translating_; }

  uint64_t acked_features() const { return acked_features_; }
  uint64_t protocol_errors() const { return protocol_errors_.load(std::memory_order_relaxed); }

 private:
  struct Vring {
    uint32_t num = 0;
    VringAddr addr{};
    bool addr_set = false;
    uint16_t base = 0;
    UniqueFd kick, call, err;
    bool kick_ready = false;  // SET_VRING_KICK seen since the last stop
    bool enabled = false;
    std::unique_ptr<virtio::Virtqueue> vq;
  };

  // The status of one request: a value for REPLY_ACK, or a closed connection.
  struct Done {
    bool ok = true;
    bool close = false;
    bool replied = false;  // the request sent its own reply already
  };
  Done dispatch(int sock, Message& m);
  Done fail(const Message& m, const std::string& why);
  Done malformed(const Message& m, const std::string& why);
  Done reply(int sock, const Message& m, std::span<const uint8_t> payload);

  Done set_mem_table(Message& m);
  // Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking"): every
  // ring records what it took and has not completed in inflight_, QEMU's
  // region (GET/SET_INFLIGHT_FD) or, for a front-end that asks for none
  // (vhost-user-net), one of the handler's own, kept in the session.
  Done get_inflight(int sock, const Message& m);
  Done set_inflight(Message& m);
  void ensure_inflight();
  std::unique_ptr<virtio::InflightMemory> inflight_;
  Done set_vring_fd(Message& m);
  Vring* ring(uint32_t index);
  bool protocol_features_on() const { return acked_features_ & virtio::bit(kFProtocolFeatures); }
  void try_start(uint32_t index);
  void stop(uint32_t index);
  struct RingMap {
    iommu::Fault fault = iommu::Fault::kUnmapped;  // kPending: asked of the front-end
    virtio::Virtqueue::Layout layout{};
  };
  RingMap translate_ring(const Vring& r);

  uint64_t offered_features() const;
  uint64_t offered_protocol() const;
  Done set_features(const Message& m, uint64_t v);
  Done set_backend_req_fd(Message& m);
  Done iotlb_msg(const Message& m);
  bool send_miss(uint64_t iova, iommu::Access access);
  void drop_backend_channel(const std::string& why);
  // Resuming a kept session: reads and drops what already waits on the
  // back-end channel (answers to the previous process's requests).
  void discard_stale_backend_replies();
  // After an invalidation: rings whose memory is gone are suspended.
  void revalidate_rings();
  // After an update or an answer: suspended rings resume, waiting ones are
  // walked again, rings that could not start start.
  void retry_waiting();
  void set_translating(bool on);

  // The session journal: per key ("features", "mem", "r0.kick", ...) the
  // header and payload of the last message that set that state, and how
  // many fds it carried (kept as "KEY.N").
  struct Journaled {
    std::vector<uint8_t> bytes;  // header + payload
    size_t fds = 0;
  };
  std::map<std::string, Journaled> journal_;
  SessionKeeper* keeper_ = nullptr;
  void journal(const Message& m, std::vector<UniqueFd>& copies);
  void unjournal(const std::string& key);
  void unjournal_rings();
  void publish_journal();

  Backend& backend_;
  iommu::DmaContext& dma_;
  std::string label_;
  iommu::IommuContext iommu_;
  bool translating_ = false;  // VIRTIO_F_ACCESS_PLATFORM acked
  bool retry_pending_ = false;
  UniqueFd backend_req_;
  std::unique_ptr<iommu::GuestMemory> mem_;
  std::array<Vring, kMaxQueues> rings_;
  bool owner_ = false;
  bool features_set_ = false;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_ = 0;
  std::atomic<uint64_t> protocol_errors_{0};
};

}  // namespace axl::vhost_user
