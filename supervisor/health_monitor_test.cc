// The health channel end to end, both halves: the supervisor's
// HealthMonitor and a domain's HeartbeatResponder (common/heartbeat.h) on
// one event loop over a real socketpair.
#include "supervisor/health_monitor.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>

#include "common/heartbeat.h"
#include "common/schema/supervisor.capnp.h"
#include "common/wire.h"

namespace axl::supervisor {
namespace {

using namespace std::chrono_literals;

struct Pair {
  UniqueFd sup, dom;
  Pair() {
    int sp[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp), 0);
    sup.reset(sp[0]);
    dom.reset(sp[1]);
  }
};

// Runs `io` until `done` or `limit`.
void run_until(boost::asio::io_context& io, const bool& done, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < end) io.run_for(10ms);
}

TEST(HealthMonitor, AnAnsweringDomainIsNeverCalledHung) {
  boost::asio::io_context io;
  Pair p;
  bool hung = false;
  HeartbeatResponder responder(io, std::move(p.dom), nullptr, nullptr);
  HealthMonitor m(io, std::move(p.sup), 20ms, 3, [&](const std::string&, uint64_t) { hung = true; });
  run_until(io, hung, 400ms);
  EXPECT_FALSE(hung);
  EXPECT_GT(m.answered(), 5u);
  // Every answer sent is counted, bar one still on its way when the loop stopped.
  EXPECT_LE(m.answered(), responder.answered());
  EXPECT_GE(m.answered() + 1, responder.answered());
}

TEST(HealthMonitor, ASilentDomainIsCalledHungOnceAfterThreeMisses) {
  boost::asio::io_context io;
  Pair p;
  int calls = 0;
  std::string cause;
  bool done = false;
  HealthMonitor m(io, std::move(p.sup), 20ms, 3, [&](const std::string& c, uint64_t) {
    ++calls;
    cause = c;
    done = true;
  });
  run_until(io, done, 2000ms);
  const bool never = false;
  run_until(io, never, 200ms);  // no second call
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(cause, "hang: 3 heartbeats missed");
}

TEST(HealthMonitor, AResponderThatIsNotHealthyWithholdsItsAnswers) {
  boost::asio::io_context io;
  Pair p;
  std::atomic<bool> healthy{true};
  bool hung = false;
  std::string cause;
  HeartbeatResponder responder(io, std::move(p.dom), nullptr, nullptr, [&] { return healthy.load(); });
  HealthMonitor m(io, std::move(p.sup), 20ms, 3, [&](const std::string& c, uint64_t) {
    hung = true;
    cause = c;
  });
  run_until(io, hung, 150ms);
  EXPECT_FALSE(hung);
  healthy = false;  // e.g. a vTPM whose engine is stuck in one command
  run_until(io, hung, 2000ms);
  EXPECT_TRUE(hung);
  EXPECT_EQ(cause, "hang: 3 heartbeats missed");
}

TEST(HealthMonitor, AnswersAheadOfThePingsAreNotBelieved) {
  boost::asio::io_context io;
  Pair p;
  bool hung = false;
  HealthMonitor m(io, std::move(p.sup), 20ms, 3, [&](const std::string&, uint64_t) { hung = true; });
  // A domain that claims to have answered pings not yet sent.
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setPong(1000000);
  ASSERT_TRUE(wire::send(p.dom.get(), mb));
  run_until(io, hung, 2000ms);
  EXPECT_TRUE(hung);
  EXPECT_EQ(m.answered(), 0u);
}

}  // namespace
}  // namespace axl::supervisor
