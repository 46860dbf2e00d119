// Device-independent virtio constants (virtio 1.2 §6 "Reserved Feature Bits",
// §2.7 split virtqueue layout).
#pragma once
#include <cstdint>

namespace axl::virtio {

constexpr uint64_t bit(unsigned n) { return uint64_t(1) << n; }

constexpr unsigned kFRingIndirectDesc = 28;
constexpr unsigned kFRingEventIdx = 29;
constexpr unsigned kFVersion1 = 32;

// §2.7.5 descriptor flags
constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;
// §2.7.6 / §2.7.8 ring flags
constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint16_t kUsedFNoNotify = 1;

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == 16);

struct UsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(UsedElem) == 8);

// Largest queue the split layout allows (§2.7: Queue Size ≤ 32768).
constexpr uint32_t kMaxQueueSize = 32768;

// Sizes of the three parts for a queue of `num` entries (§2.7), including the
// event-index fields.
constexpr uint64_t desc_table_bytes(uint32_t num) { return 16ull * num; }
constexpr uint64_t avail_ring_bytes(uint32_t num) { return 6ull + 2ull * num; }
constexpr uint64_t used_ring_bytes(uint32_t num) { return 6ull + 8ull * num; }

}  // namespace axl::virtio
