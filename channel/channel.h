// Both ends of a channel over the shared layout in layout.h.
#pragma once
#include <optional>
#include <span>

#include "channel/layout.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::channel {

// The fds that make a channel; sent to the driver with SCM_RIGHTS.
struct ChannelFds {
  UniqueFd mem;        // memfd, sealed against shrinking
  UniqueFd req_kick;   // eventfd hv -> driver
  UniqueFd resp_kick;  // eventfd driver -> hv
};

// A mapping of a channel memfd, validated against its expected geometry.
class Mapping {
 public:
  Mapping(Mapping&&) noexcept;
  Mapping& operator=(Mapping&&) = delete;
  ~Mapping();

  Header* header() const { return reinterpret_cast<Header*>(base_); }
  Request* req_ring() const { return reinterpret_cast<Request*>(base_ + geo_.req_ring_off); }
  Response* resp_ring() const { return reinterpret_cast<Response*>(base_ + geo_.resp_ring_off); }
  uint8_t* pool() const { return base_ + geo_.pool_off; }
  uint8_t* slot(uint32_t id) const { return pool() + uint64_t(id) * geo_.slot_size; }
  const Geometry& geometry() const { return geo_; }

  // Maps `fd`; `slots`/`slot_size` are what the peer announced in the
  // control message and must agree with the memfd's size and header.
  static Result<Mapping> map(int fd, uint32_t slots, uint32_t slot_size);

 private:
  Mapping(uint8_t* base, Geometry g) : base_(base), geo_(g) {}
  uint8_t* base_ = nullptr;
  Geometry geo_{};
};

// Creates a fresh channel (new memfd, zeroed, header initialised, eventfds).
Result<ChannelFds> create(uint32_t slots, uint32_t slot_size);

// Hypervisor end: produces requests, consumes responses.
class HvEnd {
 public:
  HvEnd(Mapping m, UniqueFd req_kick, UniqueFd resp_kick);
  const Mapping& mapping() const { return map_; }
  uint32_t slots() const { return map_.geometry().slots; }
  uint32_t slot_size() const { return map_.geometry().slot_size; }
  uint8_t* slot(uint32_t id) const { return map_.slot(id); }
  int resp_kick_fd() const { return resp_kick_.get(); }

  // Queues a request (caller guarantees id < slots and id not in flight).
  void push(const Request& r);
  // Rings the doorbell if anything was pushed since the last kick.
  void kick();
  // Pops the next response, copied out of shared memory. A ring index the
  // driver corrupted (more entries than slots) returns Error.
  Result<std::optional<Response>> pop();
  // Drains the response doorbell (call after it polled readable).
  void ack_doorbell();

 private:
  Mapping map_;
  UniqueFd req_kick_, resp_kick_;
  uint32_t req_head_ = 0, resp_tail_ = 0;
  bool pending_kick_ = false;
};

// Driver end: consumes requests, produces responses.
class DriverEnd {
 public:
  DriverEnd(Mapping m, UniqueFd req_kick, UniqueFd resp_kick);
  DriverEnd(DriverEnd&&) = default;
  // Releases the liveness lock (if claimed) before the memory is unmapped.
  ~DriverEnd();
  // Initialises and takes the channel's liveness lock (layout.h); call on
  // the thread that serves the channel, before answering the attach, and
  // keep the DriverEnd on that thread.  The kernel releases it for us if
  // the process dies.
  Status claim_liveness();
  const Mapping& mapping() const { return map_; }
  uint32_t slots() const { return map_.geometry().slots; }
  uint32_t slot_size() const { return map_.geometry().slot_size; }
  uint8_t* slot(uint32_t id) const { return map_.slot(id); }
  int req_kick_fd() const { return req_kick_.get(); }

  // Next request, copied out of shared memory; malformed ring state -> Error.
  Result<std::optional<Request>> pop();
  // Whether pop() has another request now (a hint: the ring is checked by pop).
  bool more_queued() const;
  void push(const Response& r);
  void kick();
  void ack_doorbell();

 private:
  Mapping map_;
  UniqueFd req_kick_, resp_kick_;
  uint32_t resp_head_ = 0, req_tail_ = 0;
  bool pending_kick_ = false;
  bool claimed_ = false;
};

}  // namespace axl::channel
