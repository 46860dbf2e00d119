// vhost-user wire format (QEMU docs/interop/vhost-user.rst, "Message
// Specification"): a 12-byte header (request, flags, size) followed by
// `size` payload bytes, little-endian, over a SOCK_STREAM Unix socket with
// fds attached by SCM_RIGHTS.  Everything here parses untrusted front-end
// input into typed values; a message whose size does not fit its request is
// an Error, never a partial read.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::vhost_user {

enum class Req : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kResetDevice = 34,
  kGetMaxMemSlots = 36,
};
const char* to_string(Req r);

// Header flags: bits 0-1 version (must be 1), bit 2 reply, bit 3 need-reply.
constexpr uint32_t kVersion = 1;
constexpr uint32_t kFlagVersionMask = 0x3;
constexpr uint32_t kFlagReply = 1u << 2;
constexpr uint32_t kFlagNeedReply = 1u << 3;

// Feature bit in GET/SET_FEATURES that enables the protocol-feature handshake.
constexpr unsigned kFProtocolFeatures = 30;
// Protocol feature bits (vhost-user.rst "Protocol features").
constexpr unsigned kPfMq = 0;
constexpr unsigned kPfIotlb = 1;
constexpr unsigned kPfReplyAck = 3;
constexpr unsigned kPfBackendReq = 5;  // "SLAVE_REQ" in older texts
constexpr unsigned kPfConfig = 9;
constexpr unsigned kPfInflightShmfd = 12;  // GET/SET_INFLIGHT_FD
// virtio 1.2 §6: the device reaches memory through the platform's IOMMU;
// vhost-user ring and buffer addresses become IOVAs (vhost-user "IOMMU support").
constexpr unsigned kFAccessPlatform = 33;

// Requests the back-end sends on the back-end channel (SET_BACKEND_REQ_FD).
enum class BackendReq : uint32_t { kIotlbMsg = 1 };

// struct vhost_iotlb_msg: iova, size, uaddr (u64 each), perm, type (u8),
// padded to 8 bytes as the front-end sends it.
constexpr size_t kIotlbMsgSize = 32;
enum class IotlbType : uint8_t { kMiss = 1, kUpdate = 2, kInvalidate = 3, kAccessFail = 4 };

constexpr size_t kHeaderSize = 12;
// The largest payload we ever accept: a full memory table (8 + 8 * 32) or a
// config message (12 + 256) fit with room; anything bigger is malformed.
constexpr uint32_t kMaxPayload = 4096;
constexpr size_t kMaxFds = 8;
constexpr uint32_t kMaxConfigSize = 256;  // VHOST_USER_MAX_CONFIG_SIZE
constexpr uint64_t kVringIdxMask = 0xff;
constexpr uint64_t kVringNoFd = 1u << 8;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
};

struct Message {
  Header hdr;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
  Req req() const { return static_cast<Req>(hdr.request); }
  bool need_reply() const { return hdr.flags & kFlagNeedReply; }
};

// Blocks for one message.  nullopt = the peer closed the connection at a
// message boundary; Error = I/O error, truncated or malformed header.
Result<std::optional<Message>> recv_message(int sock);
// An IOTLB_MSG wholly in the socket, read without taking it out of the
// socket (MSG_PEEK); nullopt for anything else (read it with recv_message).
// It is taken out with consume_peeked() once handled and answered: a process
// that dies in between leaves it for its successor to handle again (an
// update or invalidation applies twice harmlessly), where taking it first
// would leave QEMU waiting forever for the REPLY_ACK of a message no one
// has any more (hypervisor/io/vhost_user/session.h).
std::optional<Message> peek_iotlb_message(int sock);
Status consume_peeked(int sock);
// Sends a reply to `req` (version 1, REPLY flag) with `payload` (and fds).
Status send_reply(int sock, const Header& req, std::span<const uint8_t> payload,
                  std::span<const int> fds = {});
// Sends a front-end->back-end style request (tests play the front-end).
Status send_request(int sock, Req r, uint32_t flags, std::span<const uint8_t> payload,
                    std::span<const int> fds = {});

// ---- typed payloads --------------------------------------------------------

struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc = 0;  // front-end virtual addresses
  uint64_t used = 0;
  uint64_t avail = 0;
  uint64_t log = 0;
};
struct MemRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};
struct VringFd {
  uint32_t index = 0;
  std::optional<UniqueFd> fd;  // nullopt with the NOFD bit (polling mode)
};
// GET/SET_INFLIGHT_FD's payload (vhost-user.rst "Inflight description").
struct InflightInfo {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
};
constexpr size_t kInflightInfoSize = 24;  // as QEMU sends it, padded to 8
struct IotlbMsg {
  uint64_t iova = 0;
  uint64_t size = 0;
  uint64_t uaddr = 0;
  uint8_t perm = 0;  // VHOST_ACCESS_RO 1, WO 2, RW 3
  IotlbType type = IotlbType::kMiss;
};
struct Config {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> data;
};

// Each checks the exact payload size its request needs (and fd count).
Result<uint64_t> parse_u64(const Message& m);
Result<VringState> parse_vring_state(const Message& m);
Result<VringAddr> parse_vring_addr(const Message& m);
Result<std::vector<MemRegion>> parse_mem_table(const Message& m);  // fds stay in m
Result<VringFd> parse_vring_fd(Message& m);
Result<Config> parse_config(const Message& m);
// GET_INFLIGHT_FD (no fd) or SET_INFLIGHT_FD (the region's fd, left in m).
Result<InflightInfo> parse_inflight(const Message& m, size_t fds);
// IOTLB_MSG from the front-end: UPDATE (perm must be RO/WO/RW, size > 0),
// INVALIDATE or ACCESS_FAIL.  MISS only travels the other way.
Result<IotlbMsg> parse_iotlb(const Message& m);
// The front-end's REPLY_ACK to a back-end-channel request of type `req`.
Result<uint64_t> parse_backend_ack(const Message& m, BackendReq req);
Status expect_empty(const Message& m);

std::vector<uint8_t> encode_u64(uint64_t v);
std::vector<uint8_t> encode_vring_state(VringState s);
std::vector<uint8_t> encode_config(const Config& c);
std::vector<uint8_t> encode_inflight(const InflightInfo& i);
std::vector<uint8_t> encode_vring_addr(const VringAddr& a);
std::vector<uint8_t> encode_mem_table(std::span<const MemRegion> regions);
std::vector<uint8_t> encode_iotlb(const IotlbMsg& m);
// Sends a back-end request (version 1, NEED_REPLY if asked) on the back-end
// channel.
Status send_backend_request(int sock, BackendReq r, bool need_reply,
                            std::span<const uint8_t> payload);

}  // namespace axl::vhost_user
