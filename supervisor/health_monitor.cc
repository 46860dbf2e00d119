#include "supervisor/health_monitor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"

namespace axl::supervisor {
uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

std::optional<SchedSample> parse_sched(const std::string& stat, const std::string& schedstat,
                                       const std::string& status) {
  // stat: "pid (comm) S ...": comm may hold spaces and parentheses, so the
  // state is the first field after the last ')'.
  auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size() || stat[close + 1] != ' ')
    return std::nullopt;
  SchedSample s;
  s.state = stat[close + 2];
  std::istringstream in(schedstat);
  if (!(in >> s.cpu_ns >> s.wait_ns)) return std::nullopt;
  static const std::string kVoluntary = "\nvoluntary_ctxt_switches:";
  if (auto at = status.find(kVoluntary); at != std::string::npos)
    s.voluntary = std::strtoull(status.c_str() + at + kVoluntary.size(), nullptr, 10);
  return s;
}

std::optional<SchedSample> read_sched(int pid) {
  if (pid <= 0) return std::nullopt;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/";
  auto slurp = [](const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  return parse_sched(slurp(dir + "stat"), slurp(dir + "schedstat"), slurp(dir + "status"));
}

HealthMonitor::HealthMonitor(boost::asio::io_context& io, UniqueFd fd,
                             std::chrono::milliseconds interval, uint32_t misses, OnHang on_hang,
                             std::function<void()> on_beat, Probe probe)
    : fd_(std::move(fd)),
      watch_(io, ::dup(fd_.get())),
      timer_(io),
      interval_(interval),
      misses_(misses),
      on_hang_(std::move(on_hang)),
      on_beat_(std::move(on_beat)),
      probe_(std::move(probe)),
      last_pong_ns_(monotonic_ns()),
      started_ns_(last_pong_ns_) {
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
                      if (read_pongs()) watch();
                      // else closed: the domain's exit is seen by its pidfd
                    });
}

bool HealthMonitor::read_pongs() {
  for (;;) {
    auto m = wire::recv(fd_.get(), MSG_DONTWAIT);
    if (!m) return m.error().code == Errc::kWouldBlock;
    try {
      auto hb = m->root<schema::Heartbeat>();
      // Only answers to pings sent, in order: the domain is untrusted and
      // cannot answer ahead.
      if (hb.isPong() && hb.getPong() <= ping_seq_ && hb.getPong() > pong_seq_) {
        pong_seq_ = hb.getPong();
        last_pong_ns_ = monotonic_ns();
        while (!unanswered_.empty() && unanswered_.front().seq <= pong_seq_)
          unanswered_.pop_front();
        starving_ = false;
      }
    } catch (const kj::Exception&) {
      AXL_WARN("malformed heartbeat answer; ignored");
    }
  }
}

bool HealthMonitor::hung(std::string* why) {
  *why = "hang: " + std::to_string(ping_seq_ - pong_seq_) + " heartbeats missed";
  if (!probe_ || unanswered_.empty()) return true;
  auto now = probe_();
  // An answer sent while we looked counts: read what came before judging.
  read_pongs();
  if (ping_seq_ - pong_seq_ < misses_) return false;
  if (!now) return true;  // gone: its exit is reported by the pidfd anyway
  const Sent& oldest = unanswered_.front();
  if (now->state == 'T' || now->state == 't') {
    *why += " (stopped)";
    return true;
  }
  if ((now->state != 'R' && now->state != 'D') || !oldest.sched) return true;
  const uint64_t t = monotonic_ns();
  const uint64_t since = t - oldest.at_ns;
  const uint64_t ran = now->cpu_ns - std::min(now->cpu_ns, oldest.sched->cpu_ns);
  const uint64_t window_ns = uint64_t(interval_.count()) * misses_ * 1000000;
  const uint64_t cap_ns = window_ns + std::max<uint64_t>(1000000000, window_ns);
  if (pong_seq_ == 0) {
    // Never answered yet, and running: still starting (exec, dynamic
    // linking, its sandbox: tens of ms, more on a loaded host).  A warm
    // standby promoted before it finished starting is such a case.
    if (t - started_ns_ < cap_ns) return false;
    *why +=
        " (no answer since it started " + std::to_string((t - started_ns_) / 1000000) + " ms ago)";
    return true;
  }
  const bool turning = now->voluntary >= oldest.sched->voluntary + 2;
  if (turning && since < cap_ns) {
    if (!starving_) {
      starving_ = true;
      ++starved_;
      AXL_INFO(
          "%llu heartbeats unanswered, but the domain's loop went to sleep %llu times "
          "since: it turns, not hung",
          (unsigned long long)(ping_seq_ - pong_seq_),
          (unsigned long long)(now->voluntary - oldest.sched->voluntary));
    }
    return false;
  }
  if (turning) {
    *why += " (its loop turns but answers no ping)";
    return true;
  }
  if (ran >= std::max<uint64_t>(2000000, since / 4)) {
    *why += " (ran " + std::to_string(ran / 1000) + " us without answering)";
    return true;
  }
  if (since >= cap_ns) {
    *why += " (starved for " + std::to_string(since / 1000000) + " ms)";
    return true;
  }
  if (!starving_) {
    starving_ = true;
    ++starved_;
    AXL_INFO(
        "%llu heartbeats unanswered, but the domain is %s and ran %llu us in %llu ms: "
        "starved, not hung",
        (unsigned long long)(ping_seq_ - pong_seq_),
        now->state == 'R' ? "runnable" : "in a disk wait", (unsigned long long)(ran / 1000),
        (unsigned long long)(since / 1000000));
  }
  return false;
}

void HealthMonitor::beat() {
  if (stopped_) return;
  if (on_beat_) {
    auto alive = alive_;
    on_beat_();
    if (!*alive || stopped_) return;
  }
  // Answers already queued count, even if this timer ran before their watch.
  // (A domain that closed its end answers nothing more and is called hung
  // unless its exit, seen by its pidfd, stops this monitor first.)
  read_pongs();
  std::string why;
  if (ping_seq_ - pong_seq_ >= misses_ && hung(&why)) {
    stopped_ = true;
    if (on_hang_) on_hang_(why, last_pong_ns_);
    return;
  }
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setPing(++ping_seq_);
  unanswered_.push_back(Sent{ping_seq_, monotonic_ns(), probe_ ? probe_() : std::nullopt});
  (void)wire::send(fd_.get(), mb);
  timer_.expires_after(interval_);
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) beat();
  });
}

}  // namespace axl::supervisor
