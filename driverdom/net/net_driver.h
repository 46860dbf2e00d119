// The net driver kind: one driver domain serves the NICs of several guests
// plus a TAP, switching frames between them (Switch) like Xen's dom0 bridge.
//
// Each guest NIC is a channel.  From the hypervisor it gets kNetTx (a frame
// in the slot, virtio_net_hdr_v1 first) and kNetRxPost (an empty buffer to
// fill later).  Posted RX buffers wait in a per-port FIFO; a frame for a port
// with none posted is dropped and counted, as a real NIC drops when its RX
// ring is empty.
#pragma once
#include <boost/asio/io_context.hpp>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "driverdom/net/switch.h"
#include "driverdom/net/tap.h"
#include "driverdom/runtime/driver.h"
#include "driverdom/runtime/fault_hooks.h"
#include "driverdom/runtime/fd_watch.h"

namespace axl::driverdom::net {

struct NetStats {
  uint64_t tx_frames = 0;      // frames guests sent
  uint64_t rx_frames = 0;      // frames delivered into guest RX buffers
  uint64_t rx_no_buffer = 0;   // dropped: destination guest had no RX buffer posted
  uint64_t rx_too_big = 0;     // dropped: frame larger than the oldest posted buffer
  uint64_t bad_requests = 0;   // requests failing validation
  uint64_t tap_rx_frames = 0;  // frames read from the TAP
  uint64_t tap_tx_frames = 0;  // frames written to the TAP
  uint64_t tap_tx_drops = 0;   // TAP write would block
  uint64_t tap_errors = 0;     // TAP read/write failures and runts
  uint64_t tap_waits = 0;      // TAP left unread: no guest had an RX buffer posted
};

class NetDriver final : public Driver {
 public:
  // The TAP's switch port; guest NICs use their device id (< 2^32).
  static constexpr PortId kTapPort = PortId(1) << 32;
  // Requests or TAP frames handled per wakeup before yielding to other fds.
  static constexpr uint32_t kBudget = 256;
  // A TAP read returns at most one (possibly GSO) frame of 64 KiB plus header.
  // The largest TSO frame: header + 14-byte Ethernet + 65535-byte IP packet.
  static constexpr size_t kTapBufBytes = kVnetHdrBytes + 14 + 65535;

  // `tap` may be empty: the switch then connects the guests only.
  // `faults` (may be null): the data-path fault hooks every response goes through.
  NetDriver(boost::asio::io_context& io, UniqueFd tap, DataPathFaults* faults = nullptr);
  ~NetDriver() override;

  // Validates the TAP.  An active instance starts reading it at once; a warm
  // standby holds the fd but neither reads nor writes it until it is
  // promoted (docs/architecture.md, "Warm standbys"): frames a standby read
  // would be dropped, since no guest has posted it an RX buffer yet, and they
  // would be taken from the active instance that the guest is listening to.
  enum class Mode { kActive, kStandby };
  Status start(Mode mode = Mode::kActive);
  // True once the TAP is being read (active from the start, or promoted).
  bool tap_live() const { return tap_state_ == TapState::kUp; }

  size_t extra_fds(const AttachSpec&) const override { return 0; }
  Status attach(const AttachSpec& spec, channel::DriverEnd end,
                std::vector<UniqueFd> extra) override;
  bool detach(uint32_t device_id) override;

  // Event handlers, public so tests can drive them without a loop.  Each
  // returns true when it stopped on kBudget with work left.
  bool service_guest(uint32_t device_id);
  bool service_tap();

  const NetStats& stats() const { return stats_; }
  const Switch& fabric() const { return switch_; }

 private:
  struct RxPost {
    uint32_t id;
    uint32_t len;
  };
  struct GuestPort {
    // kBroken: the request ring index was corrupted; the port gets nothing more.
    enum class State { kServing, kBroken };
    GuestPort(channel::DriverEnd e) : end(std::move(e)) {}
    channel::DriverEnd end;
    std::deque<RxPost> rx;
    State state = State::kServing;
    std::unique_ptr<FdWatch> watch;  // last: destroyed before `end` owns no fd
  };
  // kHeld: a standby's TAP, validated but untouched until promotion.
  enum class TapState { kAbsent, kHeld, kUp, kFailed };

  // A standby learns that it was promoted from the first request on any of
  // its channels: the hypervisor sends nothing to a standby before that.
  void promote();
  Status watch_tap();

  void handle_request(uint32_t device_id, GuestPort& port, const channel::Request& r);
  void forward(PortId ingress, std::span<const uint8_t> frame);
  void deliver_to_guest(GuestPort& port, std::span<const uint8_t> frame);
  void write_tap(std::span<const uint8_t> frame);
  void kick_all();
  bool any_rx_posted() const;
  // owed: the hypervisor waits for this answer (not a frame into a posted RX buffer).
  void respond(GuestPort& port, uint32_t posted_len, const channel::Response& r, bool owed = true);

  boost::asio::io_context& io_;
  DataPathFaults* faults_;
  std::optional<Tap> tap_;
  TapState tap_state_ = TapState::kAbsent;
  std::unique_ptr<FdWatch> tap_watch_;
  Switch switch_;
  std::map<uint32_t, std::unique_ptr<GuestPort>> guests_;
  std::vector<uint8_t> tap_buf_;
  std::vector<PortId> dests_;  // scratch, reused per frame
  NetStats stats_;
};

}  // namespace axl::driverdom::net
