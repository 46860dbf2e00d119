#include "driverdom/runtime/fd_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>

#include "common/unique_fd.h"

namespace axl::driverdom {
namespace {

void ring(int fd) {
  uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof one), ssize_t(sizeof one));
}
void drain(int fd) {
  uint64_t v;
  (void)!::read(fd, &v, sizeof v);
}

TEST(FdWatch, RunsOnReadinessAndAgainWhileBudgetIsExhausted) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0;
  FdWatch w(io, ev.get(), "test eventfd", [&] {
    drain(ev.get());
    ++calls;
    return calls < 3;  // two "more work" rounds without any new readiness
  });
  ASSERT_TRUE(w.start().ok());
  ring(ev.get());
  io.run_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls, 3);
  ring(ev.get());
  io.restart();
  io.run_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls, 4);
}

// Polling: work that appears (in "shared memory") within the window after a
// wake-up is served with no readiness at all; after the window the watch
// waits on the fd again, and an idle watch never spins.
TEST(FdWatch, PollingServesWorkWithinTheWindowWithoutAWakeUp) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0, looks = 0;
  bool work = false;
  FdWatch w(io, ev.get(), "test eventfd", [&] {
    drain(ev.get());
    work = false;
    ++calls;
    return false;
  });
  w.set_poll(std::chrono::milliseconds(200), [&] {
    ++looks;
    return work ? FdWatch::Poll::kWork : FdWatch::Poll::kIdle;
  });
  ASSERT_TRUE(w.start().ok());
  // Idle: no wake-up, so no look at all.
  io.run_for(std::chrono::milliseconds(30));
  EXPECT_EQ(looks, 0);
  ring(ev.get());
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls, 1);
  EXPECT_GT(looks, 0);  // spinning in the window
  work = true;          // no doorbell rung
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls, 2);
  // The window (renewed by that call) runs out; then nothing spins.
  io.restart();
  io.run_for(std::chrono::milliseconds(300));
  const int after = looks;
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(looks, after);
  work = true;  // now only a doorbell brings it
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls, 2);
  ring(ev.get());
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls, 3);
}

// The idle back-off and the way back (common/poll_window.h).
TEST(PollWindow, HalvesAfterEmptySpinsAndGrowsBackOnShortSleeps) {
  using std::chrono::microseconds;
  PollWindow w(microseconds(64));
  EXPECT_TRUE(w.enabled());
  EXPECT_EQ(w.current(), microseconds(64));
  for (int i = 0; i < 7; ++i) w.spun_empty();
  EXPECT_EQ(w.current(), microseconds(0));  // no spinning once idle
  w.slept(std::chrono::milliseconds(5));    // a long sleep: spinning would not have helped
  EXPECT_EQ(w.current(), microseconds(0));
  w.slept(microseconds(20));  // work came soon after: spin again, from an eighth
  EXPECT_EQ(w.current(), microseconds(8));
  w.slept(microseconds(20));
  EXPECT_EQ(w.current(), microseconds(16));
  for (int i = 0; i < 5; ++i) w.slept(microseconds(1));
  EXPECT_EQ(w.current(), microseconds(64));  // never past the maximum
  EXPECT_FALSE(PollWindow().enabled());
  PollWindow off;
  off.slept(microseconds(1));
  EXPECT_EQ(off.current(), microseconds(0));
}

// A watch whose spins keep finding nothing stops spinning.
TEST(FdWatch, PollingBacksOffWhenSpinsFindNothing) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  FdWatch w(io, ev.get(), "test eventfd", [&] {
    drain(ev.get());
    return false;
  });
  w.set_poll(std::chrono::milliseconds(8), [] { return FdWatch::Poll::kIdle; });
  ASSERT_TRUE(w.start().ok());
  EXPECT_EQ(w.poll_window(), std::chrono::milliseconds(8));
  // Each wake-up comes long after the last spin ended: every spin is empty.
  for (int i = 0; i < 3; ++i) {
    io.restart();
    io.run_for(std::chrono::milliseconds(30));
    ring(ev.get());
    io.restart();
    io.run_for(std::chrono::milliseconds(30));
  }
  EXPECT_LT(w.poll_window(), std::chrono::milliseconds(8));
}

// kStop ends the spin at once.
TEST(FdWatch, PollingStopsWhenAskedTo) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int looks = 0;
  FdWatch w(io, ev.get(), "test eventfd", [&] {
    drain(ev.get());
    return false;
  });
  w.set_poll(std::chrono::milliseconds(500), [&] {
    ++looks;
    return FdWatch::Poll::kStop;
  });
  ASSERT_TRUE(w.start().ok());
  ring(ev.get());
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(looks, 1);
}

// Paused from its own handler while the fd stays readable (nothing drains
// it): no further calls, no spinning; resume() picks the readiness up again.
TEST(FdWatch, PausedWatchIgnoresReadinessUntilResumed) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0;
  std::unique_ptr<FdWatch> w;
  w = std::make_unique<FdWatch>(io, ev.get(), "test eventfd", [&] {
    ++calls;
    w->pause();
    return false;
  });
  ASSERT_TRUE(w->start().ok());
  ring(ev.get());
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(w->paused());
  ring(ev.get());
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls, 1);
  w->resume();
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls, 2);
  w->resume();  // from outside a handler, twice in a row: one wait, one call
  w->resume();
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls, 3);
}

TEST(FdWatch, DoesNotCloseTheFdAndMayBeDestroyedFromItsHandler) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0;
  std::unique_ptr<FdWatch> w;
  w = std::make_unique<FdWatch>(io, ev.get(), "test eventfd", [&] {
    ++calls;
    w.reset();
    return true;  // would repost, but the watch is gone
  });
  ASSERT_TRUE(w->start().ok());
  ring(ev.get());
  io.run_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls, 1);
  EXPECT_GE(::fcntl(ev.get(), F_GETFD), 0);  // still open: the watch only borrowed it
}

TEST(FdWatch, ReadinessQueuedBeforeDestructionIsIgnored) {
  boost::asio::io_context io;
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0;
  auto w = std::make_unique<FdWatch>(io, ev.get(), "test eventfd", [&] {
    ++calls;
    return false;
  });
  ASSERT_TRUE(w->start().ok());
  ring(ev.get());
  io.poll_one();  // the reactor sees the readiness, the handler may now be queued
  w.reset();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_LE(calls, 1);
}

TEST(FdWatch, RegularFileIsNotPollable) {
  UniqueFd f(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(check_pollable(f.get()).ok());
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  EXPECT_TRUE(check_pollable(ev.get()).ok());
}

}  // namespace
}  // namespace axl::driverdom
