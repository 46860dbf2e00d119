// The frontend's view of the vhost-user wire format and of the virtio-blk and
// split-virtqueue layouts it drives. Only what the benchmark frontend needs;
// the hypervisor keeps its own (backend-side) definitions.
#pragma once
#include <cstdint>

namespace axl::bench {

// vhost-user message header: request, flags, payload size (all little endian;
// this code only runs on little-endian hosts, like the rest of Axolotl).
struct VhostUserHeader {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};
static_assert(sizeof(VhostUserHeader) == 12);

inline constexpr uint32_t kVhostUserVersion = 0x1;
inline constexpr uint32_t kVhostUserFlagReply = 0x4;
inline constexpr uint32_t kVhostUserFlagNeedReply = 0x8;

enum class VhostUserRequest : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kSetMemTable = 5,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kSetVringEnable = 18,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kGetConfig = 24,
};

// Feature bits (virtio and vhost-user).
inline constexpr int kBlkFSizeMax = 1;
inline constexpr int kBlkFSegMax = 2;
inline constexpr int kBlkFRo = 5;
inline constexpr int kBlkFBlkSize = 6;
inline constexpr int kBlkFFlush = 9;
inline constexpr int kRingFIndirectDesc = 28;
inline constexpr int kRingFEventIdx = 29;
inline constexpr int kVhostUserFProtocolFeatures = 30;
inline constexpr int kFVersion1 = 32;
inline constexpr int kFAccessPlatform = 33;

// Protocol feature bits we may accept; everything else offered is declined so
// the backend never waits for messages this frontend does not send.
inline constexpr int kProtocolFReplyAck = 3;
inline constexpr int kProtocolFConfig = 9;
// Only with --iommu: the device IOTLB and the back-end channel its misses use.
inline constexpr int kProtocolFIotlb = 1;
inline constexpr int kProtocolFBackendReq = 5;

// VHOST_USER_IOTLB_MSG payload (struct vhost_iotlb_msg, padded to 32 bytes).
struct IotlbMsg {
  uint64_t iova;
  uint64_t size;
  uint64_t uaddr;
  uint8_t perm;  // 1 RO, 2 WO, 3 RW
  uint8_t type;  // 2 update
  uint8_t pad[6];
};
static_assert(sizeof(IotlbMsg) == 32);
inline constexpr uint8_t kIotlbUpdate = 2;
inline constexpr uint8_t kIotlbPermRw = 3;

struct VringState {
  uint32_t index;
  uint32_t num;
};

struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

struct MemoryRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};

struct MemoryTableOne {
  uint32_t nregions;
  uint32_t padding;
  MemoryRegion region;
};
static_assert(sizeof(MemoryTableOne) == 40);

struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
};

// The part of struct virtio_blk_config this frontend reads (offsets fixed by
// the virtio spec). Requesting only this prefix keeps older backends happy:
// some reject GET_CONFIG larger than the struct they know.
struct BlkConfigPrefix {
  uint64_t capacity;  // 512-byte sectors
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;
};
static_assert(sizeof(BlkConfigPrefix) == 24);

// virtio-blk request header and codes.
struct BlkReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(BlkReqHeader) == 16);
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint64_t kSectorSize = 512;

// Split virtqueue.
struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

struct VringUsedElem {
  uint32_t id;
  uint32_t len;
};
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;

}  // namespace axl::bench
