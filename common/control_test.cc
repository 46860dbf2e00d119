// The control channel over a real socket on one loop: deferred replies,
// other connections served meanwhile, deadlines and cancellation of
// async_call, and a deferred reply that is dropped unsent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/control_client.h"
#include "common/control_server.h"

namespace axl {
namespace {

using namespace std::chrono_literals;

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-control-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sock_ = dir_ + "/c.sock";
  }
  void TearDown() override {
    ::unlink(sock_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, sock_;
};

// ping: answered 100 ms later; list: at once; listDrivers: kept unanswered
// until released; shutdown: deferred and dropped unsent; domainInfo: its
// fds sent back.
struct Server {
  boost::asio::io_context& io;
  std::vector<std::shared_ptr<ControlServer::Deferred>> held;
  ControlServer server;
  explicit Server(boost::asio::io_context& i)
      : io(i),
        server(i, [this](schema::ControlRequest::Reader q, schema::ControlReply::Builder r,
                         ControlServer::Context& ctx) {
          using R = schema::ControlRequest;
          switch (q.which()) {
            case R::PING: {
              auto d = ctx.defer();
              auto t = std::make_shared<boost::asio::steady_timer>(io, 100ms);
              t->async_wait([d, t](const boost::system::error_code&) {
                d->reply().setError("late");
                d->send();
              });
              break;
            }
            case R::LIST_DRIVERS:
              held.push_back(ctx.defer());
              break;
            case R::SHUTDOWN:
              (void)ctx.defer();  // dropped: answers "request abandoned"
              break;
            case R::DOMAIN_INFO: {  // echoes the fds it got, from a deferred reply
              auto d = ctx.defer();
              auto fds = std::make_shared<std::vector<UniqueFd>>(std::move(ctx.fds()));
              boost::asio::post(io, [d, fds] {
                std::vector<int> raw;
                for (auto& f : *fds) raw.push_back(f.get());
                d->reply().setError("echo");
                d->send(raw);
              });
              break;
            }
            default:
              r.setOk(true);
              r.setError("now");
          }
        }) {}
};

TEST_F(ControlTest, ADeferredReplyLetsOtherConnectionsBeServedFirst) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  std::vector<std::string> order;
  auto a = control::async_call(
      io, sock_, [](auto q) { q.setPing(); }, 2000,
      [&](Result<control::ControlReply> r) {
        ASSERT_TRUE(r.ok()) << r.error().message;
        order.push_back(r->get().getError());
      });
  auto b = control::async_call(
      io, sock_, [](auto q) { q.setList(); }, 2000,
      [&](Result<control::ControlReply> r) {
        ASSERT_TRUE(r.ok()) << r.error().message;
        order.push_back(r->get().getError());
      });
  io.run_for(500ms);
  EXPECT_EQ(order, (std::vector<std::string>{"now", "late"}));
}

TEST_F(ControlTest, AnUnansweredCallEndsAtItsDeadlineWithATimeout) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  std::optional<Error> got;
  auto c = control::async_call(
      io, sock_, [](auto q) { q.setListDrivers(); }, 50,
      [&](Result<control::ControlReply> r) {
        ASSERT_FALSE(r.ok());
        got = r.error();
      });
  io.run_for(300ms);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->code, Errc::kTimeout);
  EXPECT_EQ(got->message, "no reply within 50 ms");
}

TEST_F(ControlTest, ACancelledCallNeverCompletes) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  bool called = false;
  auto c = control::async_call(
      io, sock_, [](auto q) { q.setPing(); }, 50,
      [&](Result<control::ControlReply>) { called = true; });
  c->cancel();
  io.run_for(300ms);
  EXPECT_FALSE(called);
}

TEST_F(ControlTest, ADroppedDeferredReplyAnswersAbandoned) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  std::optional<std::string> got;
  auto c = control::async_call(
      io, sock_, [](auto q) { q.setShutdown(); }, 1000,
      [&](Result<control::ControlReply> r) { got = r ? std::string("ok") : r.error().message; });
  io.run_for(300ms);
  EXPECT_EQ(got, std::optional<std::string>("request abandoned"));
}

TEST_F(ControlTest, NoServerIsAnErrorOnTheLoopNotAnException) {
  boost::asio::io_context io;
  std::optional<Error> got;
  auto c = control::async_call(
      io, sock_, [](auto q) { q.setPing(); }, 1000,
      [&](Result<control::ControlReply> r) { got = r.error(); });
  EXPECT_FALSE(got.has_value());  // never before async_call returns
  io.run_for(100ms);
  ASSERT_TRUE(got.has_value());
}

// One kept connection, several requests in flight: each completion gets its
// own answer although the daemon answers out of order, and the daemon reads
// the next request while one is deferred.
TEST_F(ControlTest, AChannelCarriesSeveralRequestsAndMatchesAnswersById) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  auto ch = control::Channel::open(io, sock_);
  std::vector<std::string> order;
  auto note = [&](Result<control::ControlReply> r) {
    order.push_back(r ? std::string(r->get().getError().cStr()) : "error: " + r.error().message);
  };
  ch->call([](auto q) { q.setPing(); }, 2000, note);
  ch->call([](auto q) { q.setList(); }, 2000, note);
  ch->call([](auto q) { q.setShutdown(); }, 2000, note);
  EXPECT_EQ(ch->in_flight(), 3u);
  io.run_for(500ms);
  EXPECT_EQ(order, (std::vector<std::string>{"now", "error: request abandoned", "late"}));
  EXPECT_EQ(ch->in_flight(), 0u);
}

// A request that timed out: its late answer is dropped, and the next request
// on the same connection gets its own.
TEST_F(ControlTest, ALateAnswerIsDroppedAndTheNextRequestGetsItsOwn) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  auto ch = control::Channel::open(io, sock_);
  std::optional<Error> first;
  ch->call([](auto q) { q.setPing(); }, 20,
           [&](Result<control::ControlReply> r) {
             ASSERT_FALSE(r.ok());
             first = r.error();
           });
  io.run_for(60ms);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->code, Errc::kTimeout);
  std::vector<std::string> got;
  ch->call([](auto q) { q.setPing(); }, 2000,
           [&](Result<control::ControlReply> r) { got.push_back(r ? "ok" : r.error().message); });
  io.run_for(300ms);  // the first ping's "late" arrives first, for nobody
  EXPECT_EQ(got, (std::vector<std::string>{"ok"}));
}

// File descriptors go with a request and come back with its answer.
TEST_F(ControlTest, FdsTravelBothWays) {
  boost::asio::io_context io;
  Server s(io);
  ASSERT_TRUE(s.server.listen(sock_));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto ch = control::Channel::open(io, sock_);
  std::vector<UniqueFd> back;
  ch->call([](auto q) { q.setDomainInfo("x"); }, 2000,
           [&](Result<control::ControlReply> r) {
             ASSERT_TRUE(r.ok()) << r.error().message;
             back = std::move(r->fds());
           },
           {wr.get()});
  io.run_for(200ms);
  ASSERT_EQ(back.size(), 1u);
  ASSERT_EQ(::write(back[0].get(), "y", 1), 1);  // the same pipe, through two processes' hands
  char c = 0;
  ASSERT_EQ(::read(rd.get(), &c, 1), 1);
  EXPECT_EQ(c, 'y');

  // The blocking call of the command-line tools too (the server's loop on
  // a thread of its own meanwhile).
  std::thread loop([&] { io.run_for(1s); });
  auto r = control::call(sock_, [](auto q) { q.setDomainInfo("x"); }, 2000, {wr.get()});
  loop.join();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->fds().size(), 1u);
}

// The daemon goes away with a request in flight (it fails with kClosed) and
// comes back: the next request reconnects by itself.
TEST_F(ControlTest, AChannelSurvivesTheDaemonRestarting) {
  boost::asio::io_context io;
  auto ch = control::Channel::open(io, sock_);
  std::optional<Error> lost;
  {
    auto s = std::make_unique<Server>(io);
    ASSERT_TRUE(s->server.listen(sock_));
    ch->call([](auto q) { q.setListDrivers(); }, 5000,
             [&](Result<control::ControlReply> r) {
               ASSERT_FALSE(r.ok());
               lost = r.error();
             });
    io.run_for(50ms);
    s.reset();  // the daemon dies with the request unanswered
  }
  io.run_for(100ms);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->code, Errc::kClosed) << lost->message;
  io.restart();  // it ran out of work when the daemon went
  Server again(io);
  ASSERT_TRUE(again.server.listen(sock_));
  std::string got;
  ch->call([](auto q) { q.setList(); }, 2000,
           [&](Result<control::ControlReply> r) { got = r ? "ok" : r.error().message; });
  io.run_for(200ms);
  EXPECT_EQ(got, "ok");
}

// The daemon's listener gone: an Error with a code, on the loop.
TEST_F(ControlTest, NoDaemonIsAnIoErrorOnTheLoop) {
  boost::asio::io_context io;
  auto ch = control::Channel::open(io, sock_);
  std::optional<Error> got;
  ch->call([](auto q) { q.setPing(); }, 1000,
           [&](Result<control::ControlReply> r) { got = r.error(); });
  EXPECT_FALSE(got.has_value());
  io.run_for(50ms);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->code, Errc::kIo);
}

}  // namespace
}  // namespace axl
