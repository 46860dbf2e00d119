// The health channel end to end, both halves: the supervisor's
// HealthMonitor and a domain's HeartbeatResponder (common/heartbeat.h) on
// one event loop over a real socketpair.
#include "supervisor/health_monitor.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
  HealthMonitor m(io, std::move(p.sup), 20ms, 3,
                  [&](const std::string&, uint64_t) { hung = true; });
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
  HeartbeatResponder responder(io, std::move(p.dom), nullptr, nullptr,
                               [&] { return healthy.load(); });
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
  HealthMonitor m(io, std::move(p.sup), 20ms, 3,
                  [&](const std::string&, uint64_t) { hung = true; });
  // A domain that claims to have answered pings not yet sent.
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Heartbeat>().setPong(1000000);
  ASSERT_TRUE(wire::send(p.dom.get(), mb));
  run_until(io, hung, 2000ms);
  EXPECT_TRUE(hung);
  EXPECT_EQ(m.answered(), 0u);
}

TEST(SchedSample, ParsesStateAfterTheLastParenthesisOfComm) {
  auto s = parse_sched("42 (a) b) (c) R 1 2 3", "123456 789 10\n");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->state, 'R');
  EXPECT_EQ(s->cpu_ns, 123456u);
  EXPECT_EQ(s->wait_ns, 789u);
  EXPECT_FALSE(parse_sched("42 (a", "1 2 3").has_value());
  EXPECT_FALSE(parse_sched("42 (a) S 1", "").has_value());
  EXPECT_FALSE(parse_sched("", "1 2 3").has_value());
  auto v = parse_sched("1 (x) S 1", "5 6 7",
                       "Name:\tx\nvoluntary_ctxt_switches:\t42\n"
                       "nonvoluntary_ctxt_switches:\t3\n");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->voluntary, 42u);
}

// The kernel's view of real processes: a stopped one reads 'T', a spinning
// one 'R' with its CPU time growing, a gone one nothing.
TEST(SchedSample, ReadsRealProcesses) {
  pid_t spin = ::fork();
  ASSERT_GE(spin, 0);
  if (spin == 0)
    for (;;) {
    }
  auto a = read_sched(spin);
  ::usleep(50000);
  auto b = read_sched(spin);
  ASSERT_TRUE(a && b);
  EXPECT_GT(b->cpu_ns, a->cpu_ns);
  ASSERT_EQ(::kill(spin, SIGSTOP), 0);
  for (int i = 0; i < 100; ++i) {
    auto c = read_sched(spin);
    ASSERT_TRUE(c);
    if (c->state == 'T') break;
    ::usleep(1000);
  }
  EXPECT_EQ(read_sched(spin)->state, 'T');
  ::kill(spin, SIGKILL);
  ::waitpid(spin, nullptr, 0);
  EXPECT_FALSE(read_sched(spin).has_value());
  EXPECT_FALSE(read_sched(-1).has_value());
}

// A silent domain as the probe describes it; the monitor pings every 5 ms
// and calls a hang after 3 misses unless the probe says it was starved.
struct ProbeCase {
  ProbeCase(std::function<SchedSample()> s, std::chrono::milliseconds r, bool answer_first = true)
      : sample(std::move(s)), run(r), answer_first(answer_first) {}
  std::function<SchedSample()> sample;
  std::chrono::milliseconds run;
  bool answer_first;  // the domain answers the first ping, then falls silent
  bool hung = false;
  std::string cause;
  uint64_t starved = 0;
  std::chrono::milliseconds took{0};
};
void run_case(ProbeCase& c) {
  boost::asio::io_context io;
  Pair p;  // the domain end stays open and never answers
  const auto t0 = std::chrono::steady_clock::now();
  HealthMonitor m(
      io, std::move(p.sup), 5ms, 3,
      [&](const std::string& why, uint64_t) {
        c.hung = true;
        c.cause = why;
        c.took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - t0);
      },
      {}, [&] { return std::optional<SchedSample>(c.sample()); });
  if (c.answer_first) {
    io.run_for(1ms);  // the first ping goes out
    capnp::MallocMessageBuilder mb;
    mb.initRoot<schema::Heartbeat>().setPong(1);
    EXPECT_TRUE(wire::send(p.dom.get(), mb));
  }
  run_until(io, c.hung, c.run);
  c.starved = m.starved();
}

TEST(HealthMonitor, AStoppedDomainIsHungAtOnce) {
  ProbeCase c{[] { return SchedSample{'T', 1000, 0}; }, 2000ms};
  run_case(c);
  EXPECT_TRUE(c.hung);
  EXPECT_EQ(c.cause, "hang: 3 heartbeats missed (stopped)");
  EXPECT_LT(c.took, 500ms);
}

TEST(HealthMonitor, ASleepingDomainThatLeavesThePingUnreadIsHung) {
  ProbeCase c{[] { return SchedSample{'S', 1000, 0}; }, 2000ms};
  run_case(c);
  EXPECT_TRUE(c.hung);
  EXPECT_EQ(c.cause, "hang: 3 heartbeats missed");
  EXPECT_EQ(c.starved, 0u);
}

TEST(HealthMonitor, ASpinningDomainIsHung) {
  uint64_t cpu = 0;
  // Runnable, and on a CPU the whole time: 10 ms of CPU between samples.
  ProbeCase c{[&] { return SchedSample{'R', cpu += 10000000, 0}; }, 2000ms};
  run_case(c);
  EXPECT_TRUE(c.hung);
  EXPECT_NE(c.cause.find("without answering"), std::string::npos) << c.cause;
  EXPECT_LT(c.took, 500ms);
}

TEST(HealthMonitor, ARunnableDomainThatGotNoCpuIsStarvedNotHungUntilTheCap) {
  // Runnable, waiting for a CPU, its CPU time frozen: the verdict waits.
  uint64_t wait = 0;
  ProbeCase c{[&] { return SchedSample{'R', 5000, wait += 5000000}; }, 400ms};
  run_case(c);
  EXPECT_FALSE(c.hung) << c.cause;
  EXPECT_EQ(c.starved, 1u);
  // ... but not forever: window (15 ms) + 1 s of silence is a hang.
  ProbeCase d{[&] { return SchedSample{'R', 5000, wait += 5000000}; }, 3000ms};
  run_case(d);
  EXPECT_TRUE(d.hung);
  EXPECT_NE(d.cause.find("starved for"), std::string::npos) << d.cause;
  EXPECT_GE(d.took, 1000ms);
}

TEST(HealthMonitor, ABusyDomainWhoseLoopTurnsIsNotHungUntilTheCap) {
  // On a CPU a lot, but its loop goes back to sleep again and again (it is
  // completing requests): not hung, however the ping got lost.
  uint64_t cpu = 0, sleeps = 0;
  ProbeCase c{[&] { return SchedSample{'R', cpu += 10000000, 0, sleeps += 5}; }, 400ms};
  run_case(c);
  EXPECT_FALSE(c.hung) << c.cause;
  EXPECT_EQ(c.starved, 1u);
  ProbeCase d{[&] { return SchedSample{'R', cpu += 10000000, 0, sleeps += 5}; }, 3000ms};
  run_case(d);
  EXPECT_TRUE(d.hung);
  EXPECT_NE(d.cause.find("its loop turns but answers no ping"), std::string::npos) << d.cause;
}

TEST(HealthMonitor, ADomainThatNeverAnsweredAndRunsIsStartingNotHung) {
  uint64_t cpu = 0;
  // Runnable and busy, no answer yet: starting (a promoted standby that had
  // not finished its start); the verdict waits as for a starved domain.
  ProbeCase c{[&] { return SchedSample{'R', cpu += 10000000, 0}; }, 400ms, false};
  run_case(c);
  EXPECT_FALSE(c.hung) << c.cause;
  ProbeCase d{[&] { return SchedSample{'R', cpu += 10000000, 0}; }, 3000ms, false};
  run_case(d);
  EXPECT_TRUE(d.hung);
  EXPECT_NE(d.cause.find("no answer since it started"), std::string::npos) << d.cause;
  EXPECT_GE(d.took, 1000ms);
  // Stopped before its first answer: hung at once all the same.
  ProbeCase e{[] { return SchedSample{'T', 1000, 0}; }, 2000ms, false};
  run_case(e);
  EXPECT_TRUE(e.hung);
  EXPECT_LT(e.took, 500ms);
}

}  // namespace
}  // namespace axl::supervisor
