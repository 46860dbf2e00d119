#include "hypervisor/daemon/supervisor_events.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <string>

#include "common/control_server.h"
#include "common/fs.h"
#include "common/run_until.h"

namespace axl::hv {
namespace {

using namespace std::chrono_literals;
using test_support::run_until;

class SupervisorEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-svevents-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(dir_); }
  // A supervisor that records the quarantine reports it gets.
  std::unique_ptr<ControlServer> supervisor() {
    auto s = std::make_unique<ControlServer>(
        io_, [this](schema::ControlRequest::Reader req, schema::ControlReply::Builder rep) {
          if (req.isDriverQuarantined()) {
            auto q = req.getDriverQuarantined();
            reports_.push_back(std::string(q.getName()) + "/" + std::to_string(q.getPid()) + "/" +
                               std::string(q.getCause()));
          }
          rep.setOk(true);
        });
    EXPECT_TRUE(s->listen(socket()));
    return s;
  }
  std::string socket() const { return dir_ + "/supervisor.sock"; }
  std::string dir_;
  boost::asio::io_context io_;
  std::vector<std::string> reports_;
};

TEST_F(SupervisorEventsTest, AQuarantineReportWaitsForTheSupervisorToComeBack) {
  SupervisorEvents ev(io_, socket());
  ev.quarantined("blk0", 42, "protocol violation: bogus id 7");
  // No supervisor for 3 s: longer than the other events are tried.
  EXPECT_FALSE(run_until(
      io_, [&] { return ev.idle(); }, 3000ms));
  auto sup = supervisor();
  ASSERT_TRUE(run_until(
      io_, [&] { return ev.idle(); }, 5000ms));
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(reports_[0], "blk0/42/protocol violation: bogus id 7");
}

TEST_F(SupervisorEventsTest, OtherEventsAreGivenUpOnAfterAFewTries) {
  SupervisorEvents ev(io_, socket());
  ev.domain_state("g1", "running");
  EXPECT_TRUE(run_until(
      io_, [&] { return ev.idle(); }, 5000ms));
  // And the next ones go out once a supervisor listens.
  auto sup = supervisor();
  ev.quarantined("net0", 7, "stalled");
  ASSERT_TRUE(run_until(
      io_, [&] { return ev.idle(); }, 5000ms));
  EXPECT_EQ(reports_, std::vector<std::string>{"net0/7/stalled"});
}

}  // namespace
}  // namespace axl::hv
