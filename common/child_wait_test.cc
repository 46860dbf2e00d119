// ChildWait over real children: each outcome, and a cancel that silences it.
#include "common/child_wait.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <utility>

namespace axl::proc {
namespace {

using namespace std::chrono_literals;

struct Kid {
  Kid() = default;
  Kid(Kid&& o) noexcept
      : pid(std::exchange(o.pid, -1)), pidfd(std::move(o.pidfd)), ready(std::move(o.ready)) {}
  pid_t pid = -1;
  UniqueFd pidfd, ready;  // ready: our read end of its pipe
  ~Kid() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// A child that writes a byte after `say_ms` (never if < 0), then lives
// until `live_ms` have passed.
Kid spawn_kid(int say_ms, int live_ms) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  Kid k;
  k.pid = ::fork();
  if (k.pid == 0) {
    if (say_ms >= 0) {
      ::usleep(useconds_t(say_ms) * 1000);
      (void)!::write(p[1], "R", 1);
    }
    ::usleep(useconds_t(live_ms) * 1000);
    _exit(0);
  }
  ::close(p[1]);
  k.ready.reset(p[0]);
  k.pidfd.reset(int(::syscall(SYS_pidfd_open, k.pid, 0)));
  return k;
}

std::optional<ChildWait::Outcome> run(Kid& k, std::chrono::milliseconds deadline,
                                      bool use_ready = true) {
  boost::asio::io_context io;
  std::optional<ChildWait::Outcome> got;
  auto w = ChildWait::start(io, k.pidfd.get(), use_ready ? std::move(k.ready) : UniqueFd(),
                            deadline, [&](ChildWait::Outcome o) { got = o; });
  io.run_for(5s);
  return got;
}

TEST(ChildWait, ReadyWhenTheChildSaysSo) {
  Kid k = spawn_kid(20, 2000);
  EXPECT_EQ(run(k, 3000ms), ChildWait::Outcome::kReady);
}

TEST(ChildWait, ExitedWhenItDiesFirst) {
  Kid k = spawn_kid(-1, 20);
  EXPECT_EQ(run(k, 3000ms), ChildWait::Outcome::kExited);
  Kid quiet = spawn_kid(-1, 20);
  EXPECT_EQ(run(quiet, 3000ms, false), ChildWait::Outcome::kExited);
}

TEST(ChildWait, TimedOutWhenNothingHappens) {
  Kid k = spawn_kid(-1, 3000);
  EXPECT_EQ(run(k, 50ms), ChildWait::Outcome::kTimedOut);
}

TEST(ChildWait, CancelledWaitsNeverCallBack) {
  Kid k = spawn_kid(10, 20);
  boost::asio::io_context io;
  bool called = false;
  auto w = ChildWait::start(io, k.pidfd.get(), std::move(k.ready), 3000ms,
                            [&](ChildWait::Outcome) { called = true; });
  w->cancel();
  io.run_for(200ms);
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace axl::proc
