#include "driverdom/runtime/fault_hooks.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/config.h"
#include "common/log.h"

namespace axl::driverdom {

Status FaultHooks::run(const std::string& fault) {
  if (!enabled_) return make_error("fault injection is disabled for this driver");
  if (!config::is_fault_name(fault)) return make_error("unknown fault '" + fault + "'");
  AXL_WARN("fault hook: %s", fault.c_str());
  if (fault == "crash") std::abort();
  if (fault == "hang") {
    for (;;) ::pause();  // the loop never turns again; heartbeats go unanswered
  }
  if (fault == "hog-memory") {
    hog_memory_step();
    return {};
  }
  if (fault == "hog-pids") {
    hog_pids_step();
    return {};
  }
  // Data-path faults.
  if (fault == "wild-write" || fault == "bogus-id" || fault == "bogus-len" ||
      fault == "dup-completion" || fault == "stall") {
    if (!data_) return make_error("this driver has no data path to break");
    if (fault == "wild-write") data_->wild_write();
    if (fault == "bogus-id") data_->bogus_id();
    if (fault == "bogus-len") data_->arm(DataPathFaults::Mode::kBogusLen);
    if (fault == "dup-completion") data_->arm(DataPathFaults::Mode::kDupCompletion);
    if (fault == "stall") data_->arm(DataPathFaults::Mode::kStall);
    return {};
  }
  return {};
}

void DataPathFaults::remove_channel(channel::DriverEnd* end) {
  ends_.erase(std::remove(ends_.begin(), ends_.end(), end), ends_.end());
}

void DataPathFaults::answer(channel::DriverEnd& end, uint32_t posted_len,
                            channel::Response resp) {
  switch (mode_) {
    case Mode::kNone:
      end.push(resp);
      return;
    case Mode::kBogusLen:
      resp.len = posted_len + 1;
      end.push(resp);
      mode_ = Mode::kNone;
      return;
    case Mode::kDupCompletion:
      end.push(resp);
      end.push(resp);
      mode_ = Mode::kNone;
      return;
    case Mode::kStall:
      return;  // the request is never completed; heartbeats still are
  }
}

void DataPathFaults::bogus_id() {
  for (channel::DriverEnd* e : ends_) {
    // Ids are slot indices, so one at or beyond the slot count was never issued.
    e->push(channel::Response{e->slots() + 17, int32_t(channel::RespStatus::kOk), 0, 0});
    e->kick();
  }
}

void DataPathFaults::wild_write() {
  for (channel::DriverEnd* e : ends_) {
    const channel::Mapping& m = e->mapping();
    const channel::Geometry& g = m.geometry();
    // Responses already published were honest; let the hypervisor take them
    // (and copy their data) before their slots are overwritten, so what the
    // guest sees is decided by the fault alone.  Bounded: a hypervisor that
    // takes no more is not waited for.
    auto* hdr = m.header();
    for (int i = 0; i < 200; ++i) {
      if (hdr->resp.tail.load(std::memory_order_acquire) ==
          hdr->resp.head.load(std::memory_order_acquire))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    memset(reinterpret_cast<uint8_t*>(m.req_ring()), 0xa5, size_t(g.slots) * sizeof(channel::Request));
    memset(reinterpret_cast<uint8_t*>(m.resp_ring()), 0xa5,
           size_t(g.slots) * sizeof(channel::Response));
    memset(m.pool(), 0xa5, size_t(g.slots) * g.slot_size);
    // Publish one of the scribbled entries: id, status and length are all garbage.
    channel::Response garbage;
    memcpy(&garbage, m.resp_ring(), sizeof garbage);
    e->push(garbage);
    e->kick();
  }
}

// A child every millisecond, each parked forever; the loop keeps turning.
void FaultHooks::hog_pids_step() {
  if (::fork() == 0) {
    for (;;) ::pause();
  }
  if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  timer_->expires_after(std::chrono::milliseconds(1));
  timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) hog_pids_step();
  });
}

// 8 MiB every millisecond, touched so it is really charged; never freed.
void FaultHooks::hog_memory_step() {
  constexpr size_t kChunk = 8 << 20;
  auto* p = static_cast<char*>(std::malloc(kChunk));
  if (p) memset(p, 0x5a, kChunk);
  if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  timer_->expires_after(std::chrono::milliseconds(1));
  timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) hog_memory_step();
  });
}

}  // namespace axl::driverdom
