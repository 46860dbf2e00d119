// The driver port on a real channel, with the test playing the driver on the
// other end: answer validation, quarantine, progress watchdog, drain and the
// replay on rebind.
#include "hypervisor/io/driver_port.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <thread>

namespace axl::hv::io {
namespace {

using channel::Op;
using channel::Request;
using channel::Response;

struct Ends {
  channel::HvEnd hv;
  channel::DriverEnd drv;
};

Ends make_ends(uint32_t slots = 8, uint32_t slot_size = 4096) {
  auto fds = channel::create(slots, slot_size);
  EXPECT_TRUE(fds.ok());
  auto m1 = channel::Mapping::map(fds->mem.get(), slots, slot_size);
  auto m2 = channel::Mapping::map(fds->mem.get(), slots, slot_size);
  UniqueFd rk(::dup(fds->req_kick.get())), pk(::dup(fds->resp_kick.get()));
  return Ends{
      channel::HvEnd(std::move(m1).value(), std::move(fds->req_kick), std::move(fds->resp_kick)),
      channel::DriverEnd(std::move(m2).value(), std::move(rk), std::move(pk))};
}

class PortTest : public ::testing::Test {
 protected:
  explicit PortTest(uint32_t io_timeout_ms = 0) : PortTest(make_ends(), io_timeout_ms) {}
  PortTest(Ends e, uint32_t io_timeout_ms)
      : drv_(std::make_unique<channel::DriverEnd>(std::move(e.drv))),
        port_("test-dev", std::move(e.hv), io_timeout_ms,
              {[this](const std::string& c) { causes_.push_back(c); },
               [this](uint64_t, uint64_t) { ++first_served_; }}) {}

  Request req(uint32_t id, Op op, uint32_t len = 512) {
    Request r{};
    r.id = id;
    r.op = uint16_t(op);
    r.len = len;
    return r;
  }
  // Everything the driver end has been sent, in order.
  std::vector<Request> driver_reads() {
    std::vector<Request> v;
    for (;;) {
      auto r = drv_->pop();
      EXPECT_TRUE(r.ok());
      if (!r.ok() || !r->has_value()) return v;
      v.push_back(**r);
    }
  }
  void answer(uint32_t id, int32_t status = 0, uint32_t len = 0) {
    drv_->push(Response{id, status, len, 0});
    drv_->kick();
  }
  void read() {
    port_.read_answers([this](uint32_t id, const Request&, const Response& r) {
      answered_.push_back(id);
      lens_.push_back(r.len);
    });
  }

  std::unique_ptr<channel::DriverEnd> drv_;
  DriverPort port_;
  std::vector<std::string> causes_;
  std::vector<uint32_t> answered_, lens_;
  int first_served_ = 0;
};

TEST_F(PortTest, AValidAnswerFreesTheSlotAndReachesTheDevice) {
  port_.issue(req(3, Op::kBlkRead, 1024));
  port_.kick();
  auto got = driver_reads();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, 3u);
  EXPECT_EQ(got[0].pool_off, 3u * 4096);  // filled in by the port
  EXPECT_TRUE(port_.busy(3));
  answer(3, 0, 1024);
  read();
  EXPECT_EQ(answered_, (std::vector<uint32_t>{3}));
  EXPECT_FALSE(port_.busy(3));
  EXPECT_TRUE(causes_.empty());
  EXPECT_EQ(port_.state(), DriverPort::State::kLive);
}

struct BadAnswer {
  const char* name;
  Response resp;
  const char* cause;
};

TEST_F(PortTest, EveryKindOfBadAnswerQuarantines) {
  const BadAnswer cases[] = {
      {"unknown id", {99, 0, 0, 0}, "completion id 99 was never issued"},
      {"id not in flight", {5, 0, 0, 0}, "completion id 5 was never issued"},
      {"unknown status", {1, 7, 0, 0}, "unknown status 7 for id 1"},
      {"too long", {1, 0, 513, 0}, "length 513 beyond the 512 posted for id 1"},
  };
  for (const BadAnswer& c : cases) {
    SCOPED_TRACE(c.name);
    auto e = make_ends();
    std::vector<std::string> causes;
    channel::DriverEnd drv(std::move(e.drv));
    DriverPort port("test-dev", std::move(e.hv), 0,
                    {[&](const std::string& s) { causes.push_back(s); }, nullptr});
    port.issue(req(1, Op::kBlkRead, 512));
    port.kick();
    drv.push(c.resp);
    drv.push(Response{1, 0, 512, 0});  // a valid one after it is not read
    drv.kick();
    int seen = 0;
    port.read_answers([&](uint32_t, const Request&, const Response&) { ++seen; });
    EXPECT_EQ(seen, 0);
    ASSERT_EQ(causes.size(), 1u);
    EXPECT_NE(causes[0].find(c.cause), std::string::npos) << causes[0];
    EXPECT_TRUE(port.quarantined());
    EXPECT_TRUE(port.fds().empty());
    EXPECT_TRUE(port.busy(1));  // kept for the replay
  }
}

TEST_F(PortTest, ADuplicateAnswerQuarantines) {
  port_.issue(req(2, Op::kBlkRead));
  answer(2);
  answer(2);
  read();
  EXPECT_EQ(answered_, (std::vector<uint32_t>{2}));
  ASSERT_EQ(causes_.size(), 1u);
  EXPECT_NE(causes_[0].find("duplicate completion id 2"), std::string::npos) << causes_[0];
}

TEST_F(PortTest, RebindReplaysOwedInSendOrderAndReleasesWaiting) {
  port_.issue(req(5, Op::kBlkWrite));
  port_.issue(req(1, Op::kNetRxPost), DriverPort::Kind::kWaiting);
  port_.issue(req(2, Op::kBlkFlush, 0));
  port_.issue(req(0, Op::kBlkRead));
  port_.issue(req(7, Op::kBlkRead));
  port_.kick();
  driver_reads();
  answer(7);  // answered: not replayed
  read();
  port_.violation("test");
  ASSERT_TRUE(port_.quarantined());

  auto fresh = make_ends();
  drv_ = std::make_unique<channel::DriverEnd>(std::move(fresh.drv));
  std::vector<uint32_t> offered;
  auto n = port_.rebind(std::move(fresh.hv), [&](uint32_t id, const Request&) {
    offered.push_back(id);
    return id != 2;  // the device drops the flush (say its ring is gone)
  });
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(offered, (std::vector<uint32_t>{5, 2, 0}));  // first-sent order
  auto got = driver_reads();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, 5u);
  EXPECT_EQ(got[1].id, 0u);
  EXPECT_FALSE(port_.busy(1));  // the RX buffer is the device's to post again
  EXPECT_FALSE(port_.busy(2));
  EXPECT_TRUE(port_.busy(5));
  EXPECT_EQ(port_.state(), DriverPort::State::kLive);
  // The first answer on the new channel ends the outage, once.
  EXPECT_EQ(first_served_, 0);
  answer(5);
  answer(0);
  read();
  EXPECT_EQ(first_served_, 1);
  EXPECT_TRUE(causes_.size() == 1);  // only the test's own
}

TEST_F(PortTest, RebindRefusesAnotherShape) {
  auto fresh = make_ends(16, 4096);
  EXPECT_FALSE(
      port_.rebind(std::move(fresh.hv), [](uint32_t, const Request&) { return true; }).ok());
}

TEST_F(PortTest, DrainReadsAnswersUntilNothingIsPending) {
  port_.issue(req(4, Op::kBlkRead));
  port_.kick();
  std::thread driver([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    answer(4);
  });
  port_.drain([this] { return size_t(port_.busy(4)); },
              [this](uint32_t id, const Request&, const Response&) { answered_.push_back(id); });
  driver.join();
  EXPECT_EQ(answered_, (std::vector<uint32_t>{4}));
  EXPECT_EQ(port_.state(), DriverPort::State::kLive);
}

class WatchdogPortTest : public PortTest {
 protected:
  WatchdogPortTest() : PortTest(40) {}
  // Polls the port's fds as the device thread would, for `ms`.
  void serve_for(int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end && !port_.quarantined()) {
      for (int fd : port_.fds()) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 5) == 1)
          port_.fd_ready(fd, [](uint32_t, const Request&, const Response&) {});
      }
    }
  }
};

TEST_F(WatchdogPortTest, AnOwedRequestPastTheDeadlineQuarantines) {
  port_.issue(req(1, Op::kBlkRead));
  port_.kick();
  serve_for(500);
  ASSERT_EQ(causes_.size(), 1u);
  EXPECT_NE(causes_[0].find("stalled: request 1 "), std::string::npos) << causes_[0];
}

TEST_F(WatchdogPortTest, AWaitingBufferMayWaitForever) {
  port_.issue(req(1, Op::kNetRxPost), DriverPort::Kind::kWaiting);
  port_.kick();
  serve_for(300);
  EXPECT_TRUE(causes_.empty());
  EXPECT_FALSE(port_.quarantined());
}

}  // namespace
}  // namespace axl::hv::io
