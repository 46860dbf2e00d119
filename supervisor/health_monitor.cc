#include "supervisor/health_monitor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <ctime>

#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"

namespace axl::supervisor {
uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

HealthMonitor::HealthMonitor(boost::asio::io_context& io, UniqueFd fd,
                             std::chrono::milliseconds interval, uint32_t misses, OnHang on_hang,
                             std::function<void()> on_beat)
    : fd_(std::move(fd)),
      watch_(io, ::dup(fd_.get())),
      timer_(io),
      interval_(interval),
      misses_(misses),
      on_hang_(std::move(on_hang)),
      on_beat_(std::move(on_beat)),
      last_pong_ns_(monotonic_ns()) {
  watch();
  // The first ping goes out from the loop, once the owner holds this monitor
  // (on_beat may reach it through the owner).
  boost::asio::post(io, [this, alive = alive_] {
    if (*alive) beat();
  });
}

HealthMonitor::~HealthMonitor() {
  *alive_ = false;
  stop();
}

void HealthMonitor::stop() {
  stopped_ = true;
  boost::system::error_code ec;
  timer_.cancel();
  watch_.cancel(ec);
}

void HealthMonitor::watch() {
  watch_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [this, alive = alive_](const boost::system::error_code& ec) {
                      if (ec || !*alive || stopped_) return;
                      for (;;) {
                        auto m = wire::recv(fd_.get(), MSG_DONTWAIT);
                        if (!m) {
                          if (m.error().code == Errc::kWouldBlock) break;
                          return;  // closed: the domain's exit is seen by its pidfd
                        }
                        try {
                          auto hb = m->root<schema::Heartbeat>();
                          // Only answers to pings sent, in order: the domain
                          // is untrusted and cannot answer ahead.
                          if (hb.isPong() && hb.getPong() <= ping_seq_ && hb.getPong() > pong_seq_) {
                            pong_seq_ = hb.getPong();
                            last_pong_ns_ = monotonic_ns();
                          }
                        } catch (const kj::Exception&) {
                          AXL_WARN("malformed heartbeat answer; ignored");
                        }
                      }
                      watch();
                    });
}

void HealthMonitor::beat() {
  if (stopped_) return;
  if (on_beat_) {
    auto alive = alive_;
    on_beat_();
    if (!*alive || stopped_) return;
  }
  if (ping_seq_ - pong_seq_ >= misses_) {
    stopped_ = true;
    if (on_hang_)
      on_hang_("hang: " + std::to_string(ping_seq_ - pong_seq_) + " heartbeats missed",
               last_pong_ns_);
    return;
  }
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setPing(++ping_seq_);
  (void)wire::send(fd_.get(), mb);
  timer_.expires_after(interval_);
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) beat();
  });
}

}  // namespace axl::supervisor
