// The driver registry on a real socket, with fake drivers played by the
// test: asynchronous attach (answered, refused, unanswered, answered wrong,
// the driver gone), the violation report that comes before the connection is
// shut, and a promotion on request.
#include "hypervisor/daemon/driver_registry.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "common/schema/driver.capnp.h"
#include "common/wire.h"

namespace axl::hv {
namespace {

using namespace std::chrono_literals;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-registry-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    reg_.set_attach_timeout_ms(200);
    reg_.on_connect([this](DriverConnection& c) { connected_.push_back(c.name()); });
    reg_.on_promote([this](DriverConnection& c) { promoted_.push_back(c.pid()); });
    reg_.on_violation([this](DriverConnection& c, const std::string& cause) {
      violations_.push_back(c.name() + ": " + cause);
    });
    ASSERT_TRUE(reg_.listen(dir_ + "/drivers.sock"));
  }
  void TearDown() override {
    ::unlink((dir_ + "/drivers.sock").c_str());
    ::rmdir(dir_.c_str());
  }

  // A fake driver: connects and says hello.
  UniqueFd driver(const std::string& name, int pid, bool standby = false) {
    auto c = wire::connect(dir_ + "/drivers.sock");
    EXPECT_TRUE(c.ok());
    capnp::MallocMessageBuilder mb;
    auto h = mb.initRoot<schema::DriverMsg>().initHello();
    h.setName(name);
    h.setKind(schema::DriverKind::BLK);
    h.setPid(pid);
    h.setStandby(standby);
    EXPECT_TRUE(wire::send(c->get(), mb));
    return std::move(c).value();
  }
  void run(std::chrono::milliseconds d) { io_.run_for(d); }
  template <typename F>
  bool run_until(F done, std::chrono::milliseconds limit = 2000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) io_.run_for(5ms);
    return done();
  }

  // Asks `c` to attach a device (any fds do: the registry only passes them on).
  void attach(DriverConnection& c, std::optional<Result<uint32_t>>* out) {
    DriverConnection::AttachArgs a;
    a.slots = 4;
    a.slot_size = 4096;
    efd_.reset(::eventfd(0, EFD_CLOEXEC));
    a.fds = {efd_.get(), efd_.get(), efd_.get(), efd_.get()};
    c.attach(a, [out](Result<uint32_t> r) { out->emplace(std::move(r)); });
  }
  // The fake driver reads the Attach and answers it with `id` (ok or not).
  uint32_t read_attach(int fd) {
    auto m = wire::recv_timeout(fd, 2000);
    EXPECT_TRUE(m.ok());
    if (!m) return 0;
    return m->root<schema::DriverMsg>().getAttach().getDeviceId();
  }
  void answer(int fd, uint32_t id, bool ok, const std::string& error = "") {
    capnp::MallocMessageBuilder mb;
    auto a = mb.initRoot<schema::DriverMsg>().initAttached();
    a.setDeviceId(id);
    a.setOk(ok);
    a.setError(error);
    EXPECT_TRUE(wire::send(fd, mb));
  }
  // Whether the fake driver's end saw the hypervisor shut the connection.
  static bool closed(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    auto m = wire::recv(fd, MSG_DONTWAIT);
    return !m && m.error().code == Errc::kClosed;
  }

  boost::asio::io_context io_;
  DriverRegistry reg_{io_};
  std::string dir_;
  UniqueFd efd_;
  std::vector<std::string> connected_, violations_;
  std::vector<int> promoted_;
};

TEST_F(RegistryTest, AnAnsweredAttachCompletesWithTheDeviceId) {
  UniqueFd d = driver("blk0", 4242);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  attach(*reg_.find("blk0"), &got);
  run(10ms);
  EXPECT_FALSE(got.has_value());  // never before the driver answers
  uint32_t id = read_attach(d.get());
  answer(d.get(), id, true);
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok()) << got->error().message;
  EXPECT_EQ(**got, id);
  EXPECT_EQ(reg_.find("blk0")->devices(), 1u);
  EXPECT_TRUE(violations_.empty());
}

TEST_F(RegistryTest, ARefusalIsAnErrorThatKeepsTheConnection) {
  UniqueFd d = driver("blk0", 4242);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  attach(*reg_.find("blk0"), &got);
  answer(d.get(), read_attach(d.get()), false, "no room");
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().message, "driver 'blk0' refused the device: no room");
  run(50ms);
  EXPECT_NE(reg_.find("blk0"), nullptr);
  EXPECT_TRUE(violations_.empty());
}

TEST_F(RegistryTest, AnUnansweredAttachTimesOutIsReportedThenShutOut) {
  UniqueFd d = driver("blk0", 4242);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  attach(*reg_.find("blk0"), &got);
  read_attach(d.get());  // and never answer
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().code, Errc::kTimeout);
  EXPECT_EQ(violations_, (std::vector<std::string>{"blk0: no answer to attach within 200 ms"}));
  // Reported first; the connection is shut a moment later (the report must win).
  EXPECT_FALSE(closed(d.get()));
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") == nullptr; }, 3000ms));
  EXPECT_TRUE(closed(d.get()));
  EXPECT_EQ(violations_.size(), 1u);
}

TEST_F(RegistryTest, AnAnswerNamingAnotherDeviceIsAViolation) {
  UniqueFd d = driver("blk0", 4242);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  attach(*reg_.find("blk0"), &got);
  answer(d.get(), read_attach(d.get()) + 1000, true);
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().code, Errc::kMalformed);
  EXPECT_NE(got->error().message.find("which no pending attach has"), std::string::npos)
      << got->error().message;
  ASSERT_EQ(violations_.size(), 1u);
  EXPECT_EQ(violations_[0], "blk0: protocol violation: malformed control message");
}

TEST_F(RegistryTest, ADriverThatGoesAwayFailsItsPendingAttach) {
  UniqueFd d = driver("blk0", 4242);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  attach(*reg_.find("blk0"), &got);
  d.reset();
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().code, Errc::kClosed);
  EXPECT_EQ(reg_.find("blk0"), nullptr);
  EXPECT_TRUE(violations_.empty());
}

TEST_F(RegistryTest, PromoteFencesTheActiveAndMovesToTheStandbyAtOnce) {
  UniqueFd active = driver("blk0", 100);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  EXPECT_FALSE(reg_.promote("blk0").ok());  // no standby yet: nothing changes
  EXPECT_EQ(reg_.find("blk0")->pid(), 100);
  UniqueFd standby = driver("blk0", 200, true);
  ASSERT_TRUE(run_until([&] { return reg_.find_standby("blk0") != nullptr; }));
  ASSERT_TRUE(reg_.promote("blk0").ok());
  EXPECT_EQ(reg_.find("blk0")->pid(), 200);
  EXPECT_EQ(reg_.find_standby("blk0"), nullptr);
  EXPECT_EQ(promoted_, (std::vector<int>{200}));
  run(20ms);
  EXPECT_TRUE(closed(active.get()));  // fenced: shut at once
  EXPECT_FALSE(closed(standby.get()));
  // The old one's close does not take the new active down.
  run(50ms);
  ASSERT_NE(reg_.find("blk0"), nullptr);
  EXPECT_EQ(reg_.find("blk0")->pid(), 200);
}

// The driver's process dies while its control socket stays open (here the
// test holds the socket; in life the socket closes only after the kernel has
// torn the dying process's memory down): the channel's liveness lock alone
// tells the registry, which promotes the standby.
TEST_F(RegistryTest, TheChannelLockReportsADeathBeforeTheSocketDoes) {
  if (!channel::DeathWatch::supported())
    GTEST_SKIP() << "this kernel has no futex_waitv (Linux 5.16+): the channel lock cannot be "
                    "watched here";
  auto ch = channel::create(4, 4096);
  ASSERT_TRUE(ch.ok());
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = ::fork();
  if (holder == 0) {  // the driver's process: takes the lock and holds it
    auto m = channel::Mapping::map(ch->mem.get(), 4, 4096);
    if (!m) _exit(2);
    auto* end = new channel::DriverEnd(std::move(m).value(), UniqueFd(::dup(ch->req_kick.get())),
                                       UniqueFd(::dup(ch->resp_kick.get())));
    if (!end->claim_liveness()) _exit(3);
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) _exit(4);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);

  UniqueFd active = driver("blk0", holder);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  UniqueFd standby = driver("blk0", 200, true);
  ASSERT_TRUE(run_until([&] { return reg_.find_standby("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  DriverConnection::AttachArgs a;
  a.slots = 4;
  a.slot_size = 4096;
  a.fds = {ch->mem.get(), ch->req_kick.get(), ch->resp_kick.get()};
  reg_.find("blk0")->attach(a, [&](Result<uint32_t> r) { got.emplace(std::move(r)); });
  answer(active.get(), read_attach(active.get()), true);
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok());
  run(20ms);
  EXPECT_TRUE(promoted_.empty());

  ::kill(holder, SIGKILL);
  EXPECT_TRUE(run_until([&] { return !promoted_.empty(); }));
  EXPECT_EQ(promoted_, (std::vector<int>{200}));
  ASSERT_NE(reg_.find("blk0"), nullptr);
  EXPECT_EQ(reg_.find("blk0")->pid(), 200);
  EXPECT_FALSE(closed(standby.get()));
  ::waitpid(holder, nullptr, 0);
}

// A driver that detaches gives its lock back: no death, no promotion.
TEST_F(RegistryTest, ADetachIsNoDeath) {
  auto ch = channel::create(4, 4096);
  ASSERT_TRUE(ch.ok());
  auto m = channel::Mapping::map(ch->mem.get(), 4, 4096);
  ASSERT_TRUE(m.ok());
  auto end = std::make_unique<channel::DriverEnd>(std::move(m).value(),
                                                  UniqueFd(::dup(ch->req_kick.get())),
                                                  UniqueFd(::dup(ch->resp_kick.get())));
  ASSERT_TRUE(end->claim_liveness().ok());
  UniqueFd active = driver("blk0", 100);
  ASSERT_TRUE(run_until([&] { return reg_.find("blk0") != nullptr; }));
  UniqueFd standby = driver("blk0", 200, true);
  ASSERT_TRUE(run_until([&] { return reg_.find_standby("blk0") != nullptr; }));
  std::optional<Result<uint32_t>> got;
  DriverConnection::AttachArgs a;
  a.slots = 4;
  a.slot_size = 4096;
  a.fds = {ch->mem.get(), ch->req_kick.get(), ch->resp_kick.get()};
  reg_.find("blk0")->attach(a, [&](Result<uint32_t> r) { got.emplace(std::move(r)); });
  answer(active.get(), read_attach(active.get()), true);
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  end.reset();  // the driver's side lets go
  run(200ms);
  EXPECT_TRUE(promoted_.empty());
  ASSERT_NE(reg_.find("blk0"), nullptr);
  EXPECT_EQ(reg_.find("blk0")->pid(), 100);
}

}  // namespace
}  // namespace axl::hv
