// virtio-net's side of the driver channel (hypervisor/io/net/device.h): a
// driver domain answers TX frames and fills posted RX buffers with frames
// of its choosing (virtio_net_hdr_v1 included), through a real channel.  A
// fake guest (fake_guest.h) posts RX buffers and sends TX frames.  Input,
// after a features byte:
//   0 guest RX buffer:   size u16, split u8
//   1 guest TX frame:    length u16 (frame bytes come from the input)
//   2 response:          id u8, status i8, len u16, then min(len, 256) bytes
//                        written into the slot first (the frame and header)
//   3 the response doorbell rings
//   4 the driver sets the response ring head to any u32
//   5 restart: rebind to a fresh channel (or a wrong-shaped one: refused)
//   6 the driver pops the requests the device sent
//   7 the guest kicks its RX queue
// Oracle: no duplicate or invented completions on either queue, no RX
// length beyond the buffers, TX chains completed with length 0, and every
// request the device sends names its own slot of the right half.
#include <optional>
#include <set>

#include "fuzz/fake_guest.h"
#include "hypervisor/io/net/device.h"
#include "hypervisor/io/testing/fake_driver.h"

namespace {

using namespace axl;
using namespace axl::hv::io;
using fuzz::FakeGuest;

constexpr uint32_t kSlots = 8;
constexpr uint32_t kSlotSize = 2048;
constexpr uint64_t kRxBuf = FakeGuest::kData;            // 4 KiB per buffer, 16 of them
constexpr uint64_t kTxBuf = FakeGuest::kData + 0x10000;  // 4 KiB per frame, 16 of them

void check_request(const channel::Request& r) {
  AXL_FUZZ_CHECK(r.id < kSlots);
  AXL_FUZZ_CHECK(r.pool_off == uint64_t(r.id) * kSlotSize);
  auto op = static_cast<channel::Op>(r.op);
  if (op == channel::Op::kNetRxPost) {
    AXL_FUZZ_CHECK(r.id < kSlots / 2 && r.len == kSlotSize);
  } else {
    AXL_FUZZ_CHECK(op == channel::Op::kNetTx);
    AXL_FUZZ_CHECK(r.id >= kSlots / 2 && r.len >= net::kHdrBytes && r.len <= kSlotSize);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint8_t fsel = in.byte();
  FakeGuest guest(2, fsel & 0x80);
  auto ch = testing::make_channel(kSlots, kSlotSize);
  if (!ch.hv || !ch.drv) abort();
  std::optional<channel::DriverEnd> drv(std::move(ch.drv));
  net::NetDevice dev(hv::NetDeviceSpec{{0x52, 0x54, 0, 0x12, 0x34, 0x56}}, std::move(*ch.hv));
  // Any subset of what the device offers (one bit of the input each).
  const unsigned bits[] = {net::kFMrgRxbuf,  net::kFCsum,     net::kFGuestCsum, net::kFGuestTso4,
                           net::kFGuestTso6, net::kFGuestEcn, net::kFHostTso4};
  uint64_t acked = 0;
  for (size_t i = 0; i < std::size(bits); ++i)
    if (fsel & (1u << i)) acked |= virtio::bit(bits[i]);
  AXL_FUZZ_CHECK((acked & ~dev.features()) == 0);
  dev.set_acked_features(acked);
  dev.queue_started(net::kRxQueue, guest.vq(net::kRxQueue));
  dev.queue_started(net::kTxQueue, guest.vq(net::kTxQueue));

  // As in blk_responses_fuzz.cc: the request ring cannot overflow while the
  // driver answers only requests it has read.
  std::set<uint32_t> read_ids;
  bool driver_cheated = false;
  unsigned rx_next = 0, tx_next = 0;
  for (int step = 0; step < 256 && !in.empty(); ++step) {
    switch (in.byte() % 8) {
      case 0: {
        uint32_t len = in.take<uint16_t>() % 4097;
        uint8_t split = in.byte();
        uint64_t buf = kRxBuf + 0x1000ull * (rx_next++ % 16);
        std::vector<FakeGuest::Buf> bufs;
        uint32_t first = (split & 1) && len > 1 ? len / 2 : len;
        bufs.push_back({buf, first, true});
        if (len - first) bufs.push_back({buf + first, len - first, true});
        if (guest.add_chain(net::kRxQueue, bufs)) dev.queue_kicked(net::kRxQueue);
        break;
      }
      case 1: {
        uint32_t len = in.take<uint16_t>() % 4097;
        uint64_t buf = kTxBuf + 0x1000ull * (tx_next++ % 16);
        auto b = in.bytes(len);
        memcpy(guest.at(buf), b.data(), b.size());
        if (guest.add_chain(net::kTxQueue, {{buf, len, false}})) dev.queue_kicked(net::kTxQueue);
        break;
      }
      case 2: {
        channel::Response r{};
        r.id = in.byte();
        r.status = in.take<int8_t>();
        r.len = in.take<uint16_t>();
        if (!read_ids.erase(r.id)) driver_cheated = true;
        auto b = in.bytes(std::min<uint32_t>(r.len, 256));
        if (r.id < kSlots) memcpy(drv->slot(r.id), b.data(), b.size());
        drv->push(r);
        drv->kick();
        break;
      }
      case 3:
        for (int fd : dev.extra_fds()) dev.extra_fd_ready(fd);
        break;
      case 4:
        drv->mapping().header()->resp.head.store(in.take<uint32_t>());
        driver_cheated = true;
        break;
      case 5: {
        bool wrong_shape = in.byte() & 1;
        auto fresh = testing::make_channel(wrong_shape ? kSlots * 2 : kSlots, kSlotSize);
        if (!fresh.hv || !fresh.drv) abort();
        Status st = dev.rebind(std::move(*fresh.hv));
        AXL_FUZZ_CHECK(st.ok() != wrong_shape);
        if (st.ok()) {
          drv.reset();
          drv.emplace(std::move(*fresh.drv));
          AXL_FUZZ_CHECK(!dev.quarantined());
          read_ids.clear();
          driver_cheated = false;
        }
        break;
      }
      case 6:
        for (;;) {
          auto r = drv->pop();
          AXL_FUZZ_CHECK(r.ok() || driver_cheated);
          if (!r || !r->has_value()) break;
          read_ids.insert((**r).id);
          check_request(**r);
        }
        break;
      case 7:
        dev.queue_kicked(net::kRxQueue);
        break;
    }
    guest.reap(net::kRxQueue);
    for (const virtio::UsedElem& e : guest.reap(net::kTxQueue)) AXL_FUZZ_CHECK(e.len == 0);
  }
  return 0;
}
