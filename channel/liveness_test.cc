// The liveness lock between two real processes: a forked "driver" takes it,
// the test process watches it.
#include "channel/liveness.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <linux/futex.h>
#include <sys/syscall.h>

#include "channel/channel.h"

namespace axl::channel {
namespace {

using namespace std::chrono_literals;

struct Event {
  std::mutex m;
  std::condition_variable cv;
  int fired = 0;
  void fire() {
    std::lock_guard<std::mutex> g(m);
    ++fired;
    cv.notify_all();
  }
  bool wait(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> g(m);
    return cv.wait_for(g, d, [this] { return fired > 0; });
  }
};

enum class Child { kHold, kRelease, kNoClaim };

// Forks a driver that maps the channel and (unless kNoClaim) takes its
// liveness lock, says so through a pipe, then holds it (kHold) or gives it
// back and waits (kRelease).  Returns its pid.
pid_t fork_driver(const ChannelFds& fds, Child what) {
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    auto m = Mapping::map(fds.mem.get(), 8, 4096);
    if (!m) _exit(2);
    auto* end = new DriverEnd(std::move(m).value(), UniqueFd(::dup(fds.req_kick.get())),
                              UniqueFd(::dup(fds.resp_kick.get())));
    if (what != Child::kNoClaim && !end->claim_liveness()) _exit(3);
    if (what == Child::kRelease) delete end;
    char c = 'r';
    if (::write(p[1], &c, 1) != 1) _exit(4);
    for (;;) ::pause();
  }
  ::close(p[1]);
  char c;
  EXPECT_EQ(::read(p[0], &c, 1), 1);
  ::close(p[0]);
  return pid;
}

class Liveness : public ::testing::Test {
 protected:
  void SetUp() override {
    // Without it the hypervisor learns of a death from the socket only.
    if (!DeathWatch::supported())
      GTEST_SKIP() << "this kernel has no futex_waitv (Linux 5.16+): the channel lock cannot be "
                      "watched here";
  }
};

void reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

TEST_F(Liveness, KillOfTheHolderIsReported) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kHold);
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok()) << w.error().message;
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  ::kill(pid, SIGKILL);
  EXPECT_TRUE(ev.wait(5s));
  EXPECT_EQ((*w)->state(), DeathWatch::State::kDied);
  EXPECT_TRUE((*w)->owner_died());
  ::waitpid(pid, nullptr, 0);
  EXPECT_EQ(ev.fired, 1);
}

TEST_F(Liveness, ACrashIsReportedToo) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kHold);
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok());
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  ::kill(pid, SIGSEGV);
  EXPECT_TRUE(ev.wait(5s));
  ::waitpid(pid, nullptr, 0);
}

TEST_F(Liveness, AStoppedDriverIsNotDead) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kHold);
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok());
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  ::kill(pid, SIGSTOP);
  EXPECT_FALSE(ev.wait(300ms));
  EXPECT_EQ((*w)->state(), DeathWatch::State::kWaiting);
  EXPECT_FALSE((*w)->owner_died());
  ::kill(pid, SIGKILL);
  EXPECT_TRUE(ev.wait(5s));
  ::waitpid(pid, nullptr, 0);
}

TEST_F(Liveness, ALockGivenBackIsNoDeath) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kRelease);
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok());
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  reap(pid);
  EXPECT_FALSE(ev.wait(300ms));
  EXPECT_EQ((*w)->state(), DeathWatch::State::kUnclaimed);
}

TEST_F(Liveness, ReleaseWhileWatchedIsNoDeath) {
  // The driver gives the lock back (a detach) while the watch waits.
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  auto m = Mapping::map(fds->mem.get(), 8, 4096);
  ASSERT_TRUE(m.ok());
  auto end = std::make_unique<DriverEnd>(std::move(m).value(), UniqueFd(::dup(fds->req_kick.get())),
                                         UniqueFd(::dup(fds->resp_kick.get())));
  ASSERT_TRUE(end->claim_liveness().ok());
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok());
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  std::this_thread::sleep_for(50ms);  // let it wait
  end.reset();
  for (int i = 0; i < 500 && (*w)->state() == DeathWatch::State::kWaiting; ++i)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ((*w)->state(), DeathWatch::State::kReleased);
  EXPECT_EQ(ev.fired, 0);
}

TEST_F(Liveness, NothingIsReportedAfterTheWatchIsGone) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kHold);
  Event ev;
  {
    auto w = DeathWatch::open(fds->mem.get());
    ASSERT_TRUE(w.ok());
    (*w)->arm([&] { ev.fire(); });
    std::this_thread::sleep_for(20ms);
  }
  reap(pid);
  EXPECT_FALSE(ev.wait(300ms));
}

TEST_F(Liveness, AForgedOwnerDiedIsTakenAsDeath) {
  // The word is driver-writable: a driver that sets FUTEX_OWNER_DIED itself
  // is replaced, nothing worse.
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  pid_t pid = fork_driver(*fds, Child::kHold);
  auto w = DeathWatch::open(fds->mem.get());
  ASSERT_TRUE(w.ok());
  Event ev;
  (*w)->arm([&] { ev.fire(); });
  auto m = Mapping::map(fds->mem.get(), 8, 4096);
  ASSERT_TRUE(m.ok());
  auto* word = reinterpret_cast<std::atomic<uint32_t>*>(&m->header()->liveness.__data.__lock);
  std::this_thread::sleep_for(20ms);
  word->fetch_or(0x40000000);  // FUTEX_OWNER_DIED
  ::syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  EXPECT_TRUE(ev.wait(5s));
  reap(pid);
}

}  // namespace
}  // namespace axl::channel
