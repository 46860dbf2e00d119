// virtio-blk's side of the driver channel (hypervisor/io/blk/device.h): a
// driver domain writes whatever it likes into the response ring of a real
// channel (channel/) and the device's completion path runs on it.  A fake
// guest (fake_guest.h) keeps issuing well-formed requests; the driver side
// is the input:
//   0 guest request: type u8, sector u8, data sectors u8, split u8
//   1 response:      id u8, status i8, len u16 (the slot is filled first)
//   2 the response doorbell rings: the device handles what is in the ring
//   3 the driver sets the response ring head to any u32
//   4 restart: the device is rebound to a fresh channel (or one of the
//     wrong shape, which it must refuse) and replays what is in flight
//   5 the driver pops the requests the device sent
// Oracle: what reaches the guest is consistent (fake_guest.h: no duplicate
// or invented completions, no length beyond the buffers, a status byte the
// spec knows), and every request the device puts in the channel names its
// own slot and fits it.
#include <map>
#include <optional>
#include <set>

#include "fuzz/fake_guest.h"
#include "hypervisor/io/blk/device.h"
#include "hypervisor/io/testing/fake_driver.h"

namespace {

using namespace axl;
using namespace axl::hv::io;
using fuzz::FakeGuest;

constexpr uint32_t kSlots = 8;
constexpr uint32_t kSlotSize = 4096;
constexpr uint64_t kCapacity = 64 * 1024;
// Per guest request k (at most kNum / 3 chains out): header, data, status.
constexpr uint64_t kHdr = FakeGuest::kData;
constexpr uint64_t kStatus = FakeGuest::kData + 0x1000;
constexpr uint64_t kBuf = FakeGuest::kData + 0x2000;  // 8 KiB per request

struct Driver {
  std::optional<channel::DriverEnd> end;
};

void check_request(const channel::Request& r, uint32_t slot_size) {
  AXL_FUZZ_CHECK(r.id < kSlots);
  AXL_FUZZ_CHECK(r.pool_off == uint64_t(r.id) * slot_size);
  AXL_FUZZ_CHECK(r.len <= slot_size);
  auto op = static_cast<channel::Op>(r.op);
  AXL_FUZZ_CHECK(op == channel::Op::kBlkRead || op == channel::Op::kBlkWrite ||
                 op == channel::Op::kBlkFlush || op == channel::Op::kBlkGetId);
  if (op == channel::Op::kBlkRead || op == channel::Op::kBlkWrite) {
    AXL_FUZZ_CHECK(r.len % 512 == 0);
    AXL_FUZZ_CHECK(r.sector * 512 + r.len <= kCapacity);
  }
  if (op == channel::Op::kBlkGetId) AXL_FUZZ_CHECK(r.len <= blk::kIdBytes);
  if (op == channel::Op::kBlkFlush) AXL_FUZZ_CHECK(r.len == 0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint8_t cfg = in.byte();
  FakeGuest guest(1, cfg & 1);
  auto ch = testing::make_channel(kSlots, kSlotSize);
  if (!ch.hv || !ch.drv) abort();
  Driver drv{std::move(ch.drv)};
  hv::BlkDeviceSpec spec{kCapacity, bool(cfg & 2), "fuzz-serial"};
  blk::BlkDevice dev(spec, std::move(*ch.hv));
  dev.queue_started(0, guest.vq(0));
  dev.set_acked_features(dev.features());

  // The request ring holds `slots` entries: it cannot overflow while the
  // driver answers only requests it has read.  One that answers unread ones
  // (or forges the response ring) overflows it, which only hurts itself.
  std::set<uint32_t> read_ids;
  bool driver_cheated = false;
  // Which request area each chain out uses (head -> k).
  std::map<uint16_t, int> area;
  auto free_area = [&]() -> int {
    for (int k = 0; k < 16; ++k) {
      bool busy = false;
      for (auto& [h, a] : area) busy |= a == k;
      if (!busy) return k;
    }
    return -1;
  };
  for (int step = 0; step < 256 && !in.empty(); ++step) {
    switch (in.byte() % 6) {
      case 0: {
        uint8_t type_sel = in.byte();
        uint32_t type = type_sel % 5 == 4 ? 7
                                          : (uint32_t[]){blk::kTIn, blk::kTOut, blk::kTFlush,
                                                         blk::kTGetId}[type_sel % 5];
        uint64_t sector = in.byte();
        uint32_t len = 512 * (in.byte() % 10);  // up to 4.5 KiB: a slot holds 4 KiB
        uint8_t split = in.byte();
        int k = free_area();
        if (k < 0) break;
        uint8_t hdr[16] = {};
        memcpy(hdr, &type, 4);
        memcpy(hdr + 8, &sector, 8);
        memcpy(guest.at(kHdr + 16 * k), hdr, 16);
        *guest.at(kStatus + k) = 0xff;
        bool writable = type != blk::kTOut;
        uint64_t buf = kBuf + 0x2000ull * k;
        std::vector<FakeGuest::Buf> bufs{{kHdr + 16 * k, 16, false}};
        if (type == blk::kTFlush) len = 0;
        if (type == blk::kTGetId) len = blk::kIdBytes;
        uint32_t first = (split & 1) && len > 1 ? len / 2 : len;
        if (first) bufs.push_back({buf, first, writable});
        if (len - first) bufs.push_back({buf + first, len - first, writable});
        bufs.push_back({kStatus + k, 1, true});
        if (auto head = guest.add_chain(0, bufs)) {
          area[*head] = k;
          dev.queue_kicked(0);
        }
        break;
      }
      case 1: {
        channel::Response r{};
        r.id = in.byte();
        r.status = in.take<int8_t>();
        r.len = in.take<uint16_t>();
        if (!read_ids.erase(r.id)) driver_cheated = true;
        if (r.id < kSlots) memset(drv.end->slot(r.id), 0xa5, kSlotSize);
        drv.end->push(r);
        drv.end->kick();
        break;
      }
      case 2:
        for (int fd : dev.extra_fds()) dev.extra_fd_ready(fd);
        break;
      case 3:
        drv.end->mapping().header()->resp.head.store(in.take<uint32_t>());
        driver_cheated = true;
        break;
      case 4: {
        bool wrong_shape = in.byte() & 1;
        auto fresh = testing::make_channel(kSlots, wrong_shape ? kSlotSize * 2 : kSlotSize);
        if (!fresh.hv || !fresh.drv) abort();
        Status st = dev.rebind(std::move(*fresh.hv));
        AXL_FUZZ_CHECK(st.ok() != wrong_shape);
        if (st.ok()) {
          drv.end.reset();
          drv.end.emplace(std::move(*fresh.drv));
          AXL_FUZZ_CHECK(!dev.quarantined());
          read_ids.clear();
          driver_cheated = false;
        }
        break;
      }
      case 5:
        for (;;) {
          auto r = drv.end->pop();
          AXL_FUZZ_CHECK(r.ok() || driver_cheated);
          if (!r || !r->has_value()) break;
          read_ids.insert((**r).id);
          check_request(**r, kSlotSize);
        }
        break;
    }
    for (const virtio::UsedElem& e : guest.reap(0)) {
      // Every request here is well formed, so each completion carries at
      // least the status byte, and the status is one virtio-blk defines.
      int k = area.at(uint16_t(e.id));
      area.erase(uint16_t(e.id));
      uint8_t st = *guest.at(kStatus + k);
      AXL_FUZZ_CHECK(e.len >= 1);
      AXL_FUZZ_CHECK(st == blk::kSOk || st == blk::kSIoErr || st == blk::kSUnsupp);
    }
  }
  return 0;
}
