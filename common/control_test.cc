// The control channel over a real socket on one loop: deferred replies,
// other connections served meanwhile, deadlines and cancellation of
// async_call, and a deferred reply that is dropped unsent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
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
// until released; shutdown: deferred and dropped unsent.
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

}  // namespace
}  // namespace axl
