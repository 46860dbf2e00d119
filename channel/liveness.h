// The hypervisor's side of the channel's liveness lock (layout.h): learning
// that a driver died as early as the kernel can say so.
//
// A driver takes a robust futex-based lock in each channel it serves.  When
// any of its threads that holds such a lock exits, the kernel walks the
// thread's robust list (exit_robust_list, early in do_exit, before the
// address space is torn down and the files closed), sets FUTEX_OWNER_DIED in
// the lock word and wakes one waiter.  The watch waits on that word from a
// thread of its own and reports the death once.
//
// The word lives in memory the driver can write, so it is only a hint: a
// driver that fakes FUTEX_OWNER_DIED gets itself treated as dead (replaced),
// which it could have had by exiting.  Nothing else is read from it.
// See the kernel's Documentation/locking/robust-futex-ABI.rst.
#pragma once
#include <functional>
#include <memory>

#include "common/result.h"

namespace axl::channel {

class DeathWatch {
 public:
  // Maps the header of the channel in `memfd` (the caller keeps its fd).
  // Nothing is watched until arm().
  static Result<std::unique_ptr<DeathWatch>> open(int memfd);
  // Whether this kernel has futex_waitv (Linux 5.16), which the watch needs;
  // without it a watch ends at once as kUnsupported.
  static bool supported();
  // Starts waiting.  `on_death` runs at most once, on the watch's own thread
  // (post to your loop from it), and never after the watch is destroyed.
  // The driver must hold the lock by now (it takes it before it answers the
  // attach); if it does not, the watch reports nothing and ends: the caller
  // still learns of the death from the driver's socket or pidfd.
  void arm(std::function<void()> on_death);
  // What the watch saw, for logs and tests.
  enum class State { kIdle, kWaiting, kDied, kReleased, kUnclaimed, kUnsupported, kStopped };
  State state() const;
  // Whether the lock word says its owner died, read now (the watch's thread
  // may not have run yet).  The kernel marks it before it closes the dead
  // process's files, so by the time its socket reports end of file this is
  // already true for a driver that died.
  bool owner_died() const;
  ~DeathWatch();  // stops the thread without waiting for it

  struct Shared;

 private:
  explicit DeathWatch(std::shared_ptr<Shared> s) : s_(std::move(s)) {}
  std::shared_ptr<Shared> s_;
};

const char* to_string(DeathWatch::State s);

}  // namespace axl::channel
