#include "driverdom/runtime/fault_hooks.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

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
  return {};
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
