// A fake driver domain for tests: serves a channel's DriverEnd on a thread.
// blk ops run against an in-memory disk; net TX frames are collected and RX
// frames can be injected into posted buffers.
#pragma once
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "channel/channel.h"

namespace axl::hv::io::testing {

struct ChannelPair {
  std::optional<channel::HvEnd> hv;
  std::optional<channel::DriverEnd> drv;
};

inline ChannelPair make_channel(uint32_t slots, uint32_t slot_size) {
  ChannelPair p;
  auto fds = channel::create(slots, slot_size);
  if (!fds) return p;
  auto m1 = channel::Mapping::map(fds->mem.get(), slots, slot_size);
  auto m2 = channel::Mapping::map(fds->mem.get(), slots, slot_size);
  if (!m1 || !m2) return p;
  UniqueFd rk(::dup(fds->req_kick.get())), pk(::dup(fds->resp_kick.get()));
  p.hv.emplace(std::move(m1).value(), std::move(fds->req_kick), std::move(fds->resp_kick));
  p.drv.emplace(std::move(m2).value(), std::move(rk), std::move(pk));
  return p;
}

class FakeDriver {
 public:
  // Called for each request; returns the response to push (or nullopt to
  // hold it, e.g. a posted RX buffer).
  using Serve =
      std::function<std::optional<channel::Response>(channel::DriverEnd&, const channel::Request&)>;
  FakeDriver(channel::DriverEnd drv, Serve serve) : drv_(std::move(drv)), serve_(std::move(serve)) {
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    thread_ = std::thread([this] { run(); });
  }
  ~FakeDriver() {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, 8);
    thread_.join();
  }
  // Runs `fn` on the driver thread (which owns the DriverEnd).
  void post(std::function<void(channel::DriverEnd&)> fn) {
    {
      std::lock_guard<std::mutex> g(mu_);
      jobs_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, 8);
  }

 private:
  void run() {
    for (;;) {
      pollfd p[3] = {
          {stop_.get(), POLLIN, 0}, {drv_.req_kick_fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      ::poll(p, 3, 100);
      if (p[0].revents) return;
      if (p[2].revents) {
        uint64_t v;
        (void)!::read(wake_.get(), &v, 8);
        std::deque<std::function<void(channel::DriverEnd&)>> jobs;
        {
          std::lock_guard<std::mutex> g(mu_);
          jobs.swap(jobs_);
        }
        for (auto& j : jobs) j(drv_);
        drv_.kick();
      }
      drv_.ack_doorbell();
      for (;;) {
        auto r = drv_.pop();
        if (!r || !r->has_value()) break;
        auto resp = serve_(drv_, **r);
        if (resp) drv_.push(*resp);
      }
      drv_.kick();
    }
  }
  channel::DriverEnd drv_;
  Serve serve_;
  UniqueFd stop_, wake_;
  std::mutex mu_;
  std::deque<std::function<void(channel::DriverEnd&)>> jobs_;
  std::thread thread_;
};

}  // namespace axl::hv::io::testing
