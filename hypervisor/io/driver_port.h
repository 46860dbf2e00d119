// One device's port to its driver domain: everything between a device's
// virtio logic and the channel (channel/channel.h) that does not depend on
// the device kind (docs/architecture.md, "Data path").
//
// - issue: a request goes to a free slot, stamped with its send order and time;
// - answers: every response the driver writes is validated (an id that is in
//   flight and not answered yet, a known status, no more bytes than posted)
//   before the device sees it; the first bad one quarantines the channel;
// - the progress watchdog: the oldest owed request past the deadline
//   quarantines the channel;
// - drain: a ring stop waits, bounded, for the driver to answer what it holds;
// - rebind: a fresh channel from a new driver instance; owed requests are
//   replayed in the order first sent, waiting ones (net RX buffers) are
//   released for the device to post again;
// - the service clock (rebind and first completion after it) and counters.
//
// States: live (requests and answers flow), draining (a ring stop: answers
// are read, the device issues nothing new for that ring) and quarantined
// (nothing is read or issued until the next rebind).  Runs on the device
// thread only, like the device.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "hypervisor/guest_device.h"
#include "hypervisor/io/progress_watchdog.h"
#include "hypervisor/io/service_clock.h"

namespace axl::hv::io {

class DriverPort {
 public:
  enum class State { kLive, kDraining, kQuarantined };
  // Owed requests (blk requests, net TX frames) must be answered in time and
  // are replayed on a rebind; waiting ones (net RX buffers) wait for the
  // outside world as long as it takes and are posted afresh after a rebind.
  enum class Kind : uint8_t { kOwed, kWaiting };

  struct Hooks {
    std::function<void(const std::string& cause)> quarantined;
    std::function<void(uint64_t rebind_ns, uint64_t served_ns)> first_served;
  };
  // `what` names the device in logs ("virtio-blk").
  DriverPort(const char* what, channel::HvEnd chan, uint32_t io_timeout_ms, Hooks hooks);

  State state() const { return state_; }
  bool quarantined() const { return state_ == State::kQuarantined; }
  uint32_t slots() const { return chan_->slots(); }
  uint32_t slot_size() const { return chan_->slot_size(); }
  uint8_t* slot(uint32_t id) const { return chan_->slot(id); }
  bool busy(uint32_t id) const { return table_[id].busy; }
  const channel::Request& request(uint32_t id) const { return table_[id].req; }

  // Queues `r` (r.id must be a slot not in flight; pool_off is filled in);
  // the doorbell rings at kick().
  void issue(channel::Request r, Kind kind = Kind::kOwed);
  void kick() { chan_->kick(); }

  // A valid answer: its slot is free again when this runs.
  using OnAnswer =
      std::function<void(uint32_t id, const channel::Request& req, const channel::Response& resp)>;
  // The fds the device thread polls for the port (none while quarantined).
  std::vector<int> fds() const;
  // Handles one of fds() that polled readable: reads answers or checks
  // progress.  False if `fd` is not the port's.
  bool fd_ready(int fd, const OnAnswer& on_answer);
  // Reads every answer the driver has written.
  void read_answers(const OnAnswer& on_answer);
  // A ring stop: reads answers until `pending()` is 0, the channel is
  // quarantined, or two seconds passed (then the rest is abandoned to the
  // driver and its late answers go nowhere).
  void drain(const std::function<size_t()>& pending, const OnAnswer& on_answer);

  // Moves to `fresh` (same shape).  Waiting slots are released; each owed
  // request still in flight is offered to `replay` in first-sent order: true
  // sends it again (the device has refilled its pool slot), false frees it.
  // Returns how many were sent again.
  Result<size_t> rebind(channel::HvEnd fresh,
                        const std::function<bool(uint32_t id, const channel::Request&)>& replay);

  // The driver broke the protocol or made no progress: quarantine.
  void violation(const std::string& cause);

  void fill(DeviceStats& s) const;

 private:
  struct Entry {
    bool busy = false;
    bool answered = false;  // since last issued on this channel: a second answer is a duplicate
    Kind kind = Kind::kOwed;
    uint64_t seq = 0;      // send order
    uint64_t sent_ns = 0;  // when handed to the current channel
    channel::Request req{};
  };
  bool check(const channel::Response& r);
  void check_progress();

  const char* what_;
  std::unique_ptr<channel::HvEnd> chan_;  // replaced whole by rebind() (HvEnd is not assignable)
  std::vector<Entry> table_;
  uint64_t next_seq_ = 0;
  State state_ = State::kLive;
  ProgressWatchdog watchdog_;
  Hooks hooks_;
  std::atomic<uint64_t> violations_{0};
  ServiceClock clock_;
};

}  // namespace axl::hv::io
