// DriverManager over a fake driver domain (supervisor/testing/fake_driver.cc:
// real processes that answer heartbeats and nothing else) and a fake
// hypervisor (the promote and service-time functions): restarts, the
// budget, hangs, the warm standby's promotion with the old instance fenced
// first, the parked spare, and outage records closed by the hypervisor's
// report. The driver domain itself is tested in driverdom/ and by the
// integration tests.
#include "supervisor/driver_manager.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/fs.h"
#include "common/run_until.h"

namespace axl::supervisor {
namespace {

using namespace std::chrono_literals;

class DriverManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-driver-manager-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::setenv("AXL_FAKE_DRIVER_LOG", (dir_ + "/roles").c_str(), 1);
    events_.failed = [this](const DriverDomain& d) { failed_.push_back(d.cfg.name); };
    events_.restarted = [this](const DriverDomain& d) { restarted_.push_back(d.cfg.name); };
  }
  void TearDown() override {
    mgr_.reset();  // stops every instance, by pid
    ::unsetenv("AXL_FAKE_DRIVER_LOG");
    (void)remove_tree(dir_);
  }

  config::DriverConfig blk(const std::string& name) {
    config::DriverConfig c;
    c.name = name;
    c.kind = config::DriverKind::kBlk;
    c.sandbox = false;
    c.heartbeat_ms = 10;
    c.heartbeat_misses = 3;
    return c;
  }

  Status start(std::vector<config::DriverConfig> drivers) {
    mgr_ = std::make_unique<DriverManager>(
        io_, FAKE_DRIVER_BIN, dir_ + "/no-hv.sock", dir_,
        [this](const std::string& driver, std::function<void(uint64_t, uint64_t)> done) {
          ++service_polls_;
          done(0, 0);  // this fake hypervisor never saw a completion
          (void)driver;
        },
        events_, nullptr);
    mgr_->set_promote([this](const std::string& driver, std::function<void(Status)> done) {
      DriverDomain* d = mgr_->find(driver);
      // The old instance is stopped before the hypervisor is asked.
      promotes_.push_back(driver + (d && d->active && stopped(d->pid()) ? " (fenced)" : ""));
      done(promote_result_);
    });
    config::HostConfig host;
    host.drivers = std::move(drivers);
    return mgr_->start_all(host);
  }

  static bool stopped(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(f, line);
    auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() &&
           (line[close + 2] == 'T' || line[close + 2] == 't');
  }

  template <typename F>
  bool run_until(F cond, std::chrono::milliseconds limit = 5000ms) {
    return test_support::run_until(io_, cond, limit);
  }

  // pid -> the roles the fake took, in order.
  std::map<int, std::vector<std::string>> roles() {
    std::map<int, std::vector<std::string>> out;
    std::ifstream f(dir_ + "/roles");
    int pid;
    std::string role;
    while (f >> pid >> role) out[pid].push_back(role);
    return out;
  }

  std::string dir_;
  boost::asio::io_context io_;
  Events events_;
  std::unique_ptr<DriverManager> mgr_;
  std::vector<std::string> failed_, restarted_, promotes_;
  Status promote_result_;
  int service_polls_ = 0;
};

TEST_F(DriverManagerTest, ACrashIsRestartedWithItsCauseRecorded) {
  ASSERT_TRUE(start({blk("blk0")}));
  DriverDomain* d = mgr_->find("blk0");
  ASSERT_NE(d, nullptr);
  const int first = d->pid();
  ASSERT_GT(first, 0);
  ASSERT_TRUE(mgr_->kill("blk0", "KILL"));
  ASSERT_TRUE(run_until([&] { return d->state == DriverState::kRunning && d->pid() != first; }));
  EXPECT_EQ(restarted_, (std::vector<std::string>{"blk0"}));
  EXPECT_EQ(d->restarts, 1u);
  ASSERT_EQ(d->outages.size(), 1u);
  const std::string want = "crash: killed by " + std::string(strsignal(SIGKILL));
  EXPECT_EQ(d->outages[0].cause, want);
  EXPECT_EQ(d->last_failure, want);
  EXPECT_GE(d->outages[0].detect_ns, d->outages[0].fail_ns);
}

TEST_F(DriverManagerTest, TheBudgetEndsInFailedAndAnOperatorRestartRenewsIt) {
  auto c = blk("blk0");
  c.restart_max = 2;
  ASSERT_TRUE(start({c}));
  DriverDomain* d = mgr_->find("blk0");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(run_until([&] { return d->state == DriverState::kRunning; }));
    ASSERT_TRUE(mgr_->kill("blk0", "SEGV")) << i;
    const int pid = d->pid();
    ASSERT_TRUE(run_until([&] { return d->pid() != pid; }));
  }
  ASSERT_TRUE(run_until([&] { return d->state == DriverState::kFailed; }));
  EXPECT_EQ(failed_, (std::vector<std::string>{"blk0"}));
  EXPECT_EQ(d->restarts, 2u);
  EXPECT_FALSE(mgr_->kill("blk0", "KILL").ok());  // nothing running to signal
  ASSERT_TRUE(mgr_->restart_now("blk0"));
  ASSERT_TRUE(run_until([&] { return d->state == DriverState::kRunning; }));
  EXPECT_EQ(d->outages.back().cause, "crash: killed by " + std::string(strsignal(SIGSEGV)));
}

TEST_F(DriverManagerTest, AStoppedDriverIsAHangAndIsReplaced) {
  ASSERT_TRUE(start({blk("blk0")}));
  DriverDomain* d = mgr_->find("blk0");
  const int first = d->pid();
  ASSERT_TRUE(mgr_->kill("blk0", "STOP"));
  ASSERT_TRUE(run_until([&] { return d->restarts == 1 && d->state == DriverState::kRunning; }));
  EXPECT_NE(d->pid(), first);
  EXPECT_EQ(d->outages.back().cause, "hang: 3 heartbeats missed (stopped)");
}

TEST_F(DriverManagerTest, UnknownDriversAndSignalsAreRefused) {
  ASSERT_TRUE(start({blk("blk0")}));
  EXPECT_EQ(mgr_->kill("nope", "KILL").error().message, "no driver named 'nope'");
  EXPECT_FALSE(mgr_->kill("blk0", "HUP").ok());
  EXPECT_FALSE(mgr_->inject("blk0", "crash").ok());  // fault injection is off
  // A report about an instance that is not the active one changes nothing.
  EXPECT_TRUE(mgr_->kill_with_cause("blk0", 1, "stale report"));
  EXPECT_EQ(mgr_->find("blk0")->restarts, 0u);
}

// With a warm standby, a kill the supervisor decides itself (an operator's
// restart) stops the old instance, has the hypervisor promote the standby,
// then kills the old one; the standby becomes the active one and a new
// standby is made.
TEST_F(DriverManagerTest, ARestartWithAStandbyFencesFirstAndPromotes) {
  auto c = blk("blk0");
  c.standby = true;
  ASSERT_TRUE(start({c}));
  DriverDomain* d = mgr_->find("blk0");
  ASSERT_TRUE(d->standby);
  const int first = d->pid(), standby = d->standby->pid();
  // Both up and running their own code first.
  ASSERT_TRUE(
      run_until([&] { return roles()[first].size() == 1 && roles()[standby].size() == 1; }));
  ASSERT_TRUE(mgr_->restart_now("blk0"));
  ASSERT_TRUE(run_until([&] { return d->pid() == standby && d->standby; }));
  EXPECT_EQ(promotes_, (std::vector<std::string>{"blk0 (fenced)"}));
  EXPECT_NE(d->standby->pid(), first);
  EXPECT_NE(d->standby->pid(), standby);
  ASSERT_EQ(d->outages.size(), 1u);
  EXPECT_EQ(d->outages[0].cause, "restart requested");
  EXPECT_TRUE(d->outages[0].promoted);
  auto r = roles();
  EXPECT_EQ(r[standby], (std::vector<std::string>{"standby"}));
  EXPECT_EQ(r[first], (std::vector<std::string>{"active"}));
}

// A standby that dies before it is needed is replaced; the active one is
// untouched.
TEST_F(DriverManagerTest, ADeadStandbyIsReplaced) {
  auto c = blk("blk0");
  c.standby = true;
  ASSERT_TRUE(start({c}));
  DriverDomain* d = mgr_->find("blk0");
  const int active = d->pid(), standby = d->standby->pid();
  ASSERT_EQ(::kill(standby, SIGKILL), 0);
  ASSERT_TRUE(run_until([&] { return d->standby && d->standby->pid() != standby; }));
  EXPECT_EQ(d->pid(), active);
  EXPECT_EQ(d->restarts, 0u);
}

// Without a standby a spare is parked ahead of need; a crash starts it
// (no process start on the outage) and parks a new one.
TEST_F(DriverManagerTest, ACrashStartsTheParkedSpare) {
  ASSERT_TRUE(start({blk("blk0")}));
  DriverDomain* d = mgr_->find("blk0");
  ASSERT_TRUE(run_until([&] { return d->spare != nullptr; }));
  const int spare = d->spare->pid();
  ASSERT_TRUE(run_until([&] { return roles()[spare].size() == 1; }));
  ASSERT_TRUE(mgr_->kill("blk0", "KILL"));
  ASSERT_TRUE(run_until([&] { return d->pid() == spare; }));
  ASSERT_TRUE(run_until([&] { return roles()[spare].size() == 2; }));
  EXPECT_EQ(roles()[spare], (std::vector<std::string>{"parked", "started"}));
  ASSERT_TRUE(run_until([&] { return d->spare && d->spare->pid() != spare; }));
}

// The hypervisor's report of the first request served closes the outage
// and carries when it learned of the death; one about an older rebind does
// not.
TEST_F(DriverManagerTest, TheHypervisorsReportClosesTheOutage) {
  ASSERT_TRUE(start({blk("blk0")}));
  DriverDomain* d = mgr_->find("blk0");
  const int first = d->pid();
  ASSERT_TRUE(mgr_->kill("blk0", "KILL"));
  ASSERT_TRUE(run_until([&] { return d->pid() != first && d->pid() > 0; }));
  ASSERT_EQ(d->outages.size(), 1u);
  const uint64_t rebound = d->outages[0].restart_ns + 1000, served = rebound + 5000;
  ASSERT_TRUE(mgr_->served("blk0", d->pid(), 1, 2));  // an older rebind's
  EXPECT_EQ(d->outages[0].served_ns, 0u);
  // With the moment its channel lock told the hypervisor of the death.
  const uint64_t died = d->outages[0].fail_ns + 300;
  ASSERT_TRUE(mgr_->served("blk0", d->pid(), rebound, served, died));
  EXPECT_EQ(d->outages[0].served_ns, served);
  EXPECT_EQ(d->outages[0].hv_detect_ns, died);
  // The next outage's report repeats that death (the hypervisor's latest):
  // it is not taken for this one's.
  const int second = d->pid();
  ASSERT_TRUE(mgr_->kill("blk0", "KILL"));
  ASSERT_TRUE(run_until([&] { return d->pid() != second && d->pid() > 0; }));
  ASSERT_EQ(d->outages.size(), 2u);
  const uint64_t fail2 = d->outages[1].fail_ns;
  const uint64_t rebound2 = d->outages[1].restart_ns + 1000;
  ASSERT_TRUE(mgr_->served("blk0", d->pid(), rebound2, rebound2 + 5000, died));
  EXPECT_EQ(d->outages[1].served_ns, rebound2 + 5000);
  EXPECT_EQ(d->outages[1].hv_detect_ns, 0u);
  EXPECT_EQ(d->outages[1].fail_ns, fail2);
  EXPECT_FALSE(mgr_->served("nope", 1, rebound, served).ok());
}

}  // namespace
}  // namespace axl::supervisor
