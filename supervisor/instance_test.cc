// The supervision pieces shared by driver and vTPM domains.
#include "supervisor/instance.h"

#include "common/run_until.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <thread>

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

TEST(RestartBudget, BackoffDoublesWithRecentRestartsUpToAMinute) {
  RestartBudget b(100, std::chrono::seconds(600));
  const auto t0 = RestartBudget::Clock::now();
  EXPECT_EQ(b.backoff_ms(100), 100u);
  b.record(t0);
  EXPECT_EQ(b.backoff_ms(100), 100u);  // the first restart waits the base
  b.record(t0);
  b.record(t0);
  EXPECT_EQ(b.backoff_ms(100), 400u);
  for (int i = 0; i < 20; ++i) b.record(t0);
  EXPECT_EQ(b.backoff_ms(100), 60000u);
  EXPECT_EQ(b.backoff_ms(0), 0u);
}

// A real child (sleep) that holds its end of a health channel and never
// answers: what the supervisor sees of a hung domain.
class InstanceTest : public ::testing::Test {
 protected:
  // Owned here, so TearDown stops each, pass or fail.
  Instance* spawn_sleeper() {
    int sp[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp), 0);
    UniqueFd ours(sp[0]), theirs(sp[1]);
    proc::SpawnOptions so;
    so.argv = {"/bin/sleep", "30"};
    so.fds = {{theirs.get(), 3}};
    auto c = proc::spawn(so);
    EXPECT_TRUE(c.ok()) << c.error().message;
    if (!c) return nullptr;
    owned_.push_back(
        std::make_unique<Instance>(io_, std::move(c).value(), std::move(ours), nullptr));
    return owned_.back().get();
  }
  void TearDown() override {
    for (auto& i : owned_)
      if (i->running()) i->stop(100ms);
  }
  // Runs the loop until `cond` or 5 s.
  template <typename F>
  bool run_until(F cond, std::chrono::milliseconds limit = 5000ms) {
    return test_support::run_until(io_, cond, limit);
  }
  boost::asio::io_context io_;
  std::vector<std::unique_ptr<Instance>> owned_;
};

TEST_F(InstanceTest, ExitIsReportedOnceAndReapedWithItsStatus) {
  Instance* i = spawn_sleeper();
  ASSERT_TRUE(i);
  int exits = 0;
  i->watch_exit([&] { ++exits; });
  ASSERT_TRUE(i->signal(SIGKILL).ok());
  ASSERT_TRUE(run_until([&] { return exits > 0; }));
  io_.restart();
  io_.run_for(20ms);
  EXPECT_EQ(exits, 1);
  Reaper reaper(io_);
  std::string cause;
  const int st = i->reap(reaper, &cause);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << proc::describe_status(st);
  EXPECT_EQ(cause, "");  // no cgroup, so nothing it names
  EXPECT_FALSE(i->running());
  EXPECT_FALSE(i->signal(SIGKILL).ok());
}

// An instance that changes roles (a standby made the active one) is
// unwatched first: its old role's handler never runs, the new one's does.
TEST_F(InstanceTest, AfterUnwatchOnlyTheNewRolesHandlerRuns) {
  Instance* i = spawn_sleeper();
  ASSERT_TRUE(i);
  bool old_role = false, new_role = false;
  i->watch_exit([&] { old_role = true; });
  io_.run_for(10ms);
  i->unwatch();
  i->watch_exit([&] { new_role = true; });
  ASSERT_TRUE(i->signal(SIGKILL).ok());
  ASSERT_TRUE(run_until([&] { return new_role; }));
  io_.restart();
  io_.run_for(20ms);
  EXPECT_FALSE(old_role);
}

TEST_F(InstanceTest, MissedHeartbeatsAreOneFailure) {
  Instance* i = spawn_sleeper();
  ASSERT_TRUE(i);
  std::vector<std::string> causes;
  i->monitor(10ms, 3, [&](const std::string& cause, uint64_t fail_ns) {
    causes.push_back(cause);
    EXPECT_GT(fail_ns, 0u);
  });
  ASSERT_TRUE(run_until([&] { return !causes.empty(); }));
  io_.restart();
  io_.run_for(100ms);  // no second verdict
  ASSERT_EQ(causes.size(), 1u);
  EXPECT_NE(causes[0].find("hang: 3 heartbeats missed"), std::string::npos) << causes[0];
}

TEST(Supervised, TheCauseTheSupervisorNamedWinsAndIsUsedOnce) {
  boost::asio::io_context io;
  Reaper reaper(io);
  Supervised s;
  proc::SpawnOptions so;
  so.argv = {"/bin/sleep", "30"};
  auto c = proc::spawn(so);
  ASSERT_TRUE(c.ok()) << c.error().message;
  s.active = std::make_unique<Instance>(io, std::move(c).value(), UniqueFd(), nullptr);
  s.pending_cause = "restart requested";
  ASSERT_TRUE(s.active->signal(SIGKILL).ok());
  pollfd p{s.active->child().pidfd.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);  // exited, not yet reaped
  int status = 0;
  EXPECT_EQ(s.end_active(reaper, &status), "restart requested");
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << proc::describe_status(status);
  EXPECT_FALSE(s.active);
  EXPECT_TRUE(s.pending_cause.empty());
}

}  // namespace
}  // namespace axl::supervisor
