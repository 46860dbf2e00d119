#include "channel/liveness.h"

#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <mutex>
#include <thread>

#include "channel/layout.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

namespace axl::channel {

namespace {
constexpr size_t kHeaderMap = 4096;
static_assert(sizeof(Header) <= kHeaderMap);

struct WaitV {  // struct futex_waitv (linux/futex.h, 5.16)
  uint64_t val;
  uint64_t uaddr;
  uint32_t flags;
  uint32_t reserved;
};

long futex_wake(const void* addr, int flags) {
  return ::syscall(SYS_futex, addr, FUTEX_WAKE | flags, INT_MAX, nullptr, nullptr, 0);
}
}  // namespace

struct DeathWatch::Shared {
  void* map = MAP_FAILED;
  std::atomic<uint32_t>* word = nullptr;  // in the driver-writable header
  std::atomic<uint32_t> stop{0};          // private futex: 1 once the owner is gone
  std::atomic<State> state{State::kIdle};
  std::mutex report;  // held while on_death runs; the destructor takes it
  bool stopped = false;
  ~Shared() {
    if (map != MAP_FAILED) ::munmap(map, kHeaderMap);
  }
};

const char* to_string(DeathWatch::State s) {
  switch (s) {
    case DeathWatch::State::kIdle:
      return "idle";
    case DeathWatch::State::kWaiting:
      return "waiting";
    case DeathWatch::State::kDied:
      return "died";
    case DeathWatch::State::kReleased:
      return "released";
    case DeathWatch::State::kUnclaimed:
      return "unclaimed";
    case DeathWatch::State::kUnsupported:
      return "unsupported";
    case DeathWatch::State::kStopped:
      return "stopped";
  }
  return "?";
}

bool DeathWatch::supported() {
  // No futexes: EINVAL where the call exists, ENOSYS where it does not.
  return !(::syscall(SYS_futex_waitv, nullptr, 0, 0, nullptr, CLOCK_MONOTONIC) < 0 &&
           errno == ENOSYS);
}

Result<std::unique_ptr<DeathWatch>> DeathWatch::open(int memfd) {
  auto s = std::make_shared<Shared>();
  s->map = ::mmap(nullptr, kHeaderMap, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (s->map == MAP_FAILED) return make_error(std::string("liveness mmap: ") + strerror(errno));
  auto* h = static_cast<Header*>(s->map);
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(h->liveness.__data.__lock));
  s->word = reinterpret_cast<std::atomic<uint32_t>*>(&h->liveness.__data.__lock);
  return std::unique_ptr<DeathWatch>(new DeathWatch(std::move(s)));
}

DeathWatch::State DeathWatch::state() const { return s_->state.load(); }

bool DeathWatch::owner_died() const {
  return s_->word->load(std::memory_order_acquire) & FUTEX_OWNER_DIED;
}

void DeathWatch::arm(std::function<void()> on_death) {
  if (s_->state.load() != State::kIdle) return;
  s_->state = State::kWaiting;
  std::thread([s = s_, on_death = std::move(on_death)] {
    auto finish = [&](State st) {
      std::lock_guard<std::mutex> g(s->report);
      if (s->stopped) return;
      s->state = st;
      if (st == State::kDied && on_death) on_death();
    };
    bool waited = false;
    for (;;) {
      if (s->stop.load()) return;
      uint32_t v = s->word->load(std::memory_order_acquire);
      if (v & FUTEX_OWNER_DIED) return finish(State::kDied);
      if ((v & FUTEX_TID_MASK) == 0)  // never taken, or given back on detach
        return finish(waited ? State::kReleased : State::kUnclaimed);
      // The kernel wakes a waiter at the owner's death only if the word says
      // someone waits.
      if (!(v & FUTEX_WAITERS)) {
        if (!s->word->compare_exchange_strong(v, v | FUTEX_WAITERS)) continue;
        v |= FUTEX_WAITERS;
      }
      WaitV w[2] = {
          {v, reinterpret_cast<uint64_t>(s->word), FUTEX_32, 0},
          {0, reinterpret_cast<uint64_t>(&s->stop), FUTEX_32 | FUTEX_PRIVATE_FLAG, 0},
      };
      long r = ::syscall(SYS_futex_waitv, w, 2, 0, nullptr, CLOCK_MONOTONIC);
      if (r < 0 && errno == ENOSYS) return finish(State::kUnsupported);
      waited = true;
      // Woken (r is the index), the value changed (EAGAIN) or a signal: look again.
    }
  }).detach();
}

DeathWatch::~DeathWatch() {
  {
    std::lock_guard<std::mutex> g(s_->report);
    s_->stopped = true;
    State st = s_->state.load();
    if (st == State::kIdle || st == State::kWaiting) s_->state = State::kStopped;
  }
  s_->stop.store(1);
  futex_wake(&s_->stop, FUTEX_PRIVATE_FLAG);
}

}  // namespace axl::channel
