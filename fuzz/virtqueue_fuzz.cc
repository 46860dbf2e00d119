// Split-virtqueue chain parsing (hypervisor/io/virtio/virtqueue.h) against a
// guest that owns every byte of its RAM.  The input picks the queue size
// and features, then fills the fake guest RAM (descriptor table, avail ring,
// indirect tables, data) and, between pops, rewrites parts of it as a
// concurrent driver could.  Every chain handed out must be valid: head in
// range, readable segments before writable ones, byte counts that add up,
// every segment inside guest RAM, no more segments than the queue size.
#include "fuzz/fuzz_support.h"
#include "hypervisor/io/virtio/virtqueue.h"

namespace {

using namespace axl;

constexpr uint64_t kBase = 0x10000;  // guest-physical base of the fake RAM
constexpr size_t kRam = 0x8000;
// Ring parts at fixed, aligned places (room for a 256-entry queue).
constexpr size_t kDescOff = 0x0000, kAvailOff = 0x1000, kUsedOff = 0x1400;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint8_t cfg = in.byte();
  uint32_t num = 1u << (cfg % 9);  // 1..256
  bool event_idx = cfg & 0x10;
  bool indirect = cfg & 0x20;
  uint16_t start = in.take<uint16_t>();

  alignas(16) static uint8_t ram[kRam];
  memset(ram, 0, sizeof ram);
  // The first part of the input is the RAM image (descriptors first).
  auto image = in.take<uint16_t>() % (kRam + 1);
  auto img = in.bytes(image);
  memcpy(ram, img.data(), img.size());
  auto* avail_idx = reinterpret_cast<uint16_t*>(ram + kAvailOff + 2);
  // A readable starting point: avail idx a little ahead of where the
  // device starts (the fuzzer can still write any value into the ring).
  if (!(cfg & 0x40)) *avail_idx = uint16_t(start + (cfg >> 7 ? num : 1));

  auto mem = iommu::GuestMemory::borrow({{kBase, 0x7f0000000000, {ram, kRam}}});
  if (!mem) abort();
  iommu::DmaContext dma;
  dma.set_memory(mem->get());
  virtio::Virtqueue vq(&dma, {num, ram + kDescOff, ram + kAvailOff, ram + kUsedOff}, start,
                       event_idx, indirect);

  uint16_t used_start = vq.used_idx();
  uint16_t pushed = 0;
  for (int step = 0; step < 64; ++step) {
    uint8_t op = in.byte();
    if (op & 1) {  // the driver rewrites some bytes
      size_t off = in.take<uint16_t>() % kRam;
      auto b = in.bytes(in.byte() % 64);
      if (off + b.size() > kRam) b = b.first(kRam - off);
      memcpy(ram + off, b.data(), b.size());
    }
    auto p = vq.pop();
    if (p.error != virtio::ChainError::kNone) {
      AXL_FUZZ_CHECK(!p.chain);
      AXL_FUZZ_CHECK(virtio::to_string(p.error)[0] != '?');
      if (p.bad_head) {
        AXL_FUZZ_CHECK(*p.bad_head < num);
        vq.push(*p.bad_head, 0);
        ++pushed;
      }
      if (p.error == virtio::ChainError::kAvailIndex) AXL_FUZZ_CHECK(vq.broken());
    } else if (p.chain) {
      const virtio::Chain& c = *p.chain;
      AXL_FUZZ_CHECK(c.head < num);
      AXL_FUZZ_CHECK(!c.segs.empty() && c.segs.size() <= num);
      uint64_t rd = 0, wr = 0;
      bool seen_w = false;
      for (const iommu::Segment& s : c.segs) {
        AXL_FUZZ_CHECK(!(seen_w && !s.device_writable));
        seen_w |= s.device_writable;
        (s.device_writable ? wr : rd) += s.len;
        // Inside the one RAM region (a zero-length segment too names a
        // mapped address).
        AXL_FUZZ_CHECK(s.addr >= kBase && s.addr - kBase < kRam &&
                       s.len <= kRam - (s.addr - kBase));
      }
      AXL_FUZZ_CHECK(rd == c.readable_bytes && wr == c.writable_bytes);
      AXL_FUZZ_CHECK(dma.check(c.segs) == iommu::Fault::kNone);
      // The device may read all it can read and write all it can write.
      std::vector<uint8_t> buf(c.readable_bytes + c.writable_bytes);
      auto r = dma.copy_from_guest(c.segs, 0, {buf.data(), size_t(c.readable_bytes)});
      AXL_FUZZ_CHECK(r.ok() && r.bytes == c.readable_bytes);
      auto w = dma.copy_to_guest(c.segs, c.readable_bytes, {buf.data(), size_t(c.writable_bytes)});
      AXL_FUZZ_CHECK(w.ok() && w.bytes == c.writable_bytes);
      vq.push(c.head, uint32_t(c.writable_bytes));
      ++pushed;
    }
    if (op & 2) (void)vq.should_notify();
    if (op & 4) (void)vq.enable_notification();
    if (in.empty()) break;
  }
  // The device's own used index moved by exactly what it pushed (the guest
  // may scribble over the copy in RAM; the device never re-reads it).
  AXL_FUZZ_CHECK(vq.used_idx() == uint16_t(used_start + pushed));
  return 0;
}
