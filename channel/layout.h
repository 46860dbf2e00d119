// The channel between the hypervisor and one driver-domain device instance.
//
// One memfd holds, in this order: a Header, the request ring (hypervisor ->
// driver), the response ring (driver -> hypervisor) and the I/O pool.  Two
// eventfds are the doorbells: `req_kick` (hv -> driver) and `resp_kick`
// (driver -> hv).  Nothing else is shared: the driver never sees guest RAM.
//
// Slot i of the pool belongs to request id i.  The hypervisor picks ids from
// its in-flight table, so at most `slots` requests are outstanding and a ring
// of `slots` entries can never overflow when both sides are honest.  The
// driver is not trusted: every Response it writes is validated by the
// hypervisor (known in-flight id, length within what was posted) and a bogus
// ring index is a protocol violation.
//
// The header also holds the driver's liveness lock: a robust, process-shared
// mutex the driver takes when it accepts the channel and holds for as long as
// it serves it.  When the driver dies the kernel marks the lock's futex word
// FUTEX_OWNER_DIED and wakes its waiters while the process is still exiting,
// before its files are closed or its pidfd reports the exit; the hypervisor
// waits on that word (see liveness.h, and docs/architecture.md, "Learning
// that a driver died").
#pragma once
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace axl::channel {

constexpr uint32_t kMagic = 0x434c5841;  // "AXLC"
constexpr uint32_t kVersion = 2;         // 2: the liveness lock

enum class Op : uint16_t {
  kBlkRead = 1,    // read `len` bytes at `sector` into the pool slot
  kBlkWrite = 2,   // write `len` bytes from the pool slot at `sector`
  kBlkFlush = 3,   // make every completed write durable
  kBlkGetId = 4,   // write up to 20 bytes of device id into the pool slot
  kNetTx = 16,     // one frame of `len` bytes (virtio_net_hdr_v1 first) to send
  kNetRxPost = 17  // an empty buffer of `len` bytes for the driver to fill with one frame
};

// Response status, virtio-like.
enum class RespStatus : int32_t { kOk = 0, kIoErr = 1, kUnsupported = 2 };

struct Request {
  uint32_t id;        // in-flight slot index; echoed in the Response
  uint16_t op;        // Op
  uint16_t flags;     // reserved, 0
  uint64_t sector;    // blk: 512-byte sector
  uint32_t pool_off;  // byte offset of the data area in the pool (== id * slot_size)
  uint32_t len;       // bytes of data (write/tx) or room (read/rx post)
  uint64_t reserved;
};
static_assert(sizeof(Request) == 32);

struct Response {
  uint32_t id;
  int32_t status;  // RespStatus
  uint32_t len;    // bytes the driver produced (read/rx/get-id), else 0
  uint32_t reserved;
};
static_assert(sizeof(Response) == 16);

// Single-producer single-consumer ring indices, free-running uint32.
struct alignas(64) RingIndex {
  std::atomic<uint32_t> head;  // written by the producer only
  char pad0[60];
  std::atomic<uint32_t> tail;  // written by the consumer only
  char pad1[60];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct alignas(64) Header {
  uint32_t magic;
  uint32_t version;
  uint32_t slots;      // power of two, ring entries == pool slots
  uint32_t slot_size;  // bytes per pool slot, multiple of 64
  uint64_t req_ring_off;
  uint64_t resp_ring_off;
  uint64_t pool_off;
  uint64_t total_size;
  RingIndex req;
  RingIndex resp;
  // Initialised and taken by the driver (DriverEnd::claim_liveness); the
  // hypervisor only waits on its futex word and never trusts it further.
  alignas(64) pthread_mutex_t liveness;
};
// The futex word of a glibc mutex is its first member (the kernel's robust
// list ABI points at it through the list entry's futex_offset).
static_assert(offsetof(pthread_mutex_t, __data.__lock) == 0);

struct Geometry {
  uint32_t slots;
  uint32_t slot_size;
  uint64_t req_ring_off, resp_ring_off, pool_off, total_size;
};

// Computes offsets; returns false for sizes that are not acceptable.
bool compute_geometry(uint32_t slots, uint32_t slot_size, Geometry* out);

}  // namespace axl::channel
