// The supervision pieces shared by driver and vTPM domains.
#include "supervisor/instance.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace axl::supervisor {
namespace {

using namespace std::chrono_literals;

TEST(RestartBudget, AllowsMaxWithinTheWindowThenForgets) {
  RestartBudget b(3, std::chrono::seconds(60));
  const auto t0 = RestartBudget::Clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(b.allows(t0 + std::chrono::seconds(i)));
    b.record(t0 + std::chrono::seconds(i));
  }
  EXPECT_FALSE(b.allows(t0 + std::chrono::seconds(10)));
  EXPECT_EQ(b.recent(), 3u);
  // 61 s after the first: it has left the window.
  EXPECT_TRUE(b.allows(t0 + std::chrono::seconds(61)));
  EXPECT_EQ(b.recent(), 2u);
  b.clear();
  EXPECT_EQ(b.recent(), 0u);
}

TEST(RestartBudget, ZeroAllowsNothing) {
  RestartBudget b(0, std::chrono::seconds(60));
  EXPECT_FALSE(b.allows(RestartBudget::Clock::now()));
}

TEST(Reaper, KillsAndReapsAHolderWithoutWaiting) {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (;;) ::pause();
  }
  ASSERT_GT(pid, 0);
  int pidfd = int(::syscall(SYS_pidfd_open, pid, 0));
  ASSERT_GE(pidfd, 0);
  boost::asio::io_context io;
  Reaper r(io);
  r.reap(proc::NsHolder(pid, UniqueFd(pidfd)));
  // Reaped from the loop: afterwards the pid is no child of ours any more.
  const auto end = std::chrono::steady_clock::now() + 5s;
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < end) {
    io.run_for(10ms);
    gone = ::waitpid(pid, nullptr, WNOHANG) < 0 && errno == ECHILD;
  }
  EXPECT_TRUE(gone);
}

}  // namespace
}  // namespace axl::supervisor
