// The guest agent's replies are untrusted: every malformed shape is an
// error naming what was wrong, never a crash or a made-up result.  The
// session is exercised against a fake agent on a Unix socket; the real qemu-guest-agent is
// tests/integration/os_image.sh's.
#include "hypervisor/daemon/guest_agent.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

namespace axl::hv {
namespace {

template <typename T>
T val(Result<T> r) {
  EXPECT_TRUE(r) << r.error().message;
  return r ? std::move(r).value() : T{};
}

TEST(Qga, RequestsAreOneLineOfJson) {
  auto s = qga::sync_request(7);
  EXPECT_EQ(s[0], '\xff');
  EXPECT_EQ(s.substr(1), "{\"arguments\":{\"id\":7},\"execute\":\"guest-sync-delimited\"}\n");
  auto e = qga::exec_request("/bin/echo", {"a\nb", "\"q\""});
  EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1);
  EXPECT_NE(e.find("\"capture-output\":true"), std::string::npos);
  EXPECT_NE(e.find("\"a\\nb\""), std::string::npos);
}

TEST(Qga, SyncSkipsStaleLinesAndMatchesItsId) {
  EXPECT_TRUE(val(qga::parse_sync("\xff{\"return\": 9}", 9)));
  EXPECT_FALSE(val(qga::parse_sync("{\"return\": 8}", 9)));
  EXPECT_FALSE(val(qga::parse_sync("{\"return\": {\"pid\": 3}}", 9)));
  EXPECT_FALSE(val(qga::parse_sync("garbage", 9)));
}

TEST(Qga, ExecNamesThePidOrTheAgentsError) {
  EXPECT_EQ(val(qga::parse_exec("{\"return\": {\"pid\": 1234}}")), 1234);
  auto e = qga::parse_exec(
      "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to execute "
      "child\\nprocess\"}}");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().message, "guest-exec: Failed to execute child?process");
  EXPECT_FALSE(qga::parse_exec("{\"return\": {\"pid\": \"x\"}}"));
  EXPECT_FALSE(qga::parse_exec("{\"return\": 5}"));
  EXPECT_FALSE(qga::parse_exec("[1,2]"));
  EXPECT_FALSE(qga::parse_exec("{\"retu"));
}

TEST(Qga, ExecStatusDecodesOutputAndStatus) {
  auto r = qga::parse_exec_status(
      "{\"return\": {\"exited\": true, \"exitcode\": 3, \"out-data\": \"aGVsbG8K\", "
      "\"err-data\": \"eA==\", \"out-truncated\": false}}");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->exit_code, 3);
  EXPECT_EQ((*r)->out, "hello\n");
  EXPECT_EQ((*r)->err, "x");
  EXPECT_FALSE((*r)->truncated);

  auto running = qga::parse_exec_status("{\"return\": {\"exited\": false}}");
  ASSERT_TRUE(running);
  EXPECT_FALSE(running->has_value());

  auto sig = qga::parse_exec_status("{\"return\": {\"exited\": true, \"signal\": 9}}");
  ASSERT_TRUE(sig);
  EXPECT_EQ((*sig)->exit_code, -1);
  EXPECT_EQ((*sig)->signal, 9);
}

TEST(Qga, ExecStatusRefusesWhatIsNotAStatus) {
  for (const char* bad : {
           "{\"return\": {}}",
           "{\"return\": {\"exited\": 1}}",
           "{\"return\": {\"exited\": true}}",
           "{\"return\": {\"exited\": true, \"exitcode\": 1e9}}",
           "{\"return\": {\"exited\": true, \"exitcode\": -5}}",
           "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": 5}}",
           "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"abc\"}}",
           "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"a=bc\"}}",
           "{\"error\": 5}",
       }) {
    auto r = qga::parse_exec_status(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().message.find('\n'), std::string::npos);
    }
  }
}

TEST(Qga, Base64) {
  EXPECT_EQ(val(qga::base64_decode("")), "");
  EXPECT_EQ(val(qga::base64_decode("TWFu")), "Man");
  EXPECT_EQ(val(qga::base64_decode("TWE=")), "Ma");
  EXPECT_EQ(val(qga::base64_decode("TQ==")), "M");
  EXPECT_FALSE(qga::base64_decode("TQ="));
  EXPECT_FALSE(qga::base64_decode("T==="));
  EXPECT_FALSE(qga::base64_decode("TQ==TWFu"));
  EXPECT_FALSE(qga::base64_decode("T!Fu"));
}

TEST(Qga, QmpReturnErrorOrEvent) {
  EXPECT_TRUE(val(qga::parse_qmp_return("{\"return\": {}}")));
  EXPECT_FALSE(val(qga::parse_qmp_return("{\"event\": \"POWERDOWN\"}")));
  EXPECT_FALSE(qga::parse_qmp_return("{\"error\": {\"desc\": \"no\"}}"));
}

// A fake agent on a Unix socket: answers each line with the next scripted
// reply (a reply of "" sends nothing and leaves the line unanswered).
class FakeAgent {
 public:
  explicit FakeAgent(std::vector<std::string> replies) : replies_(std::move(replies)) {
    path_ = std::filesystem::temp_directory_path() /
            ("axl-qga-test-" + std::to_string(getpid()) + ".sock");
    unlink(path_.c_str());
    lfd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(lfd_, 1), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeAgent() {
    shutdown(lfd_, SHUT_RDWR);
    thread_.join();
    close(lfd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> received;

 private:
  void serve() {
    int fd = accept(lfd_, nullptr, nullptr);
    if (fd < 0) return;
    std::string buf;
    char c;
    size_t next = 0;
    while (read(fd, &c, 1) == 1) {
      if (c != '\n') {
        buf += c;
        continue;
      }
      received.push_back(buf);
      buf.clear();
      if (next < replies_.size()) {
        const std::string& r = replies_[next++];
        if (!r.empty()) (void)!write(fd, r.data(), r.size());
      }
    }
    close(fd);
  }
  std::vector<std::string> replies_;
  std::string path_;
  int lfd_ = -1;
  std::thread thread_;
};

Result<ExecResult> run_exec(const std::string& socket, std::chrono::milliseconds timeout) {
  boost::asio::io_context io;
  GuestAgent agent(io, socket);
  std::optional<Result<ExecResult>> got;
  agent.exec("/bin/true", {"x"}, timeout, [&](Result<ExecResult> r) { got = std::move(r); });
  io.run_for(std::chrono::seconds(10));
  if (!got) return make_error("no answer");
  return std::move(*got);
}

TEST(GuestAgent, SyncsRunsAndPollsUntilExited) {
  FakeAgent fake({
      "{\"return\": 99}\n\xff{\"return\": 1}\n",  // a stale answer first
      "{\"return\": {\"pid\": 42}}\n",
      "{\"return\": {\"exited\": false}}\n",
      "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"b2sK\"}}\n",
  });
  auto r = run_exec(fake.path(), std::chrono::seconds(5));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "ok\n");
}

TEST(GuestAgent, AnAgentThatNeverAnswersTimesOut) {
  FakeAgent fake({""});
  auto r = run_exec(fake.path(), std::chrono::milliseconds(300));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTimeout);
  EXPECT_EQ(r.error().message, "the guest agent did not answer in time");
}

// The deadline may fall between two status polls: the exec still ends
// with the timeout (it once waited forever there, and every later request
// to the agent behind it).
TEST(GuestAgent, ACommandThatDoesNotExitInTimeTimesOutBetweenPolls) {
  std::vector<std::string> replies{"{\"return\": 1}\n", "{\"return\": {\"pid\": 42}}\n"};
  for (int i = 0; i < 200; ++i) replies.push_back("{\"return\": {\"exited\": false}}\n");
  FakeAgent fake(replies);
  auto r = run_exec(fake.path(), std::chrono::milliseconds(300));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTimeout) << r.error().message;
}
TEST(GuestAgent, GarbageFromTheAgentIsAnError) {
  FakeAgent fake({"\xff{\"return\": 1}\n", "{\"return\": {\"pid\": []}}\n"});
  auto r = run_exec(fake.path(), std::chrono::seconds(5));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "guest-exec: the agent's reply names no pid");
}

TEST(GuestAgent, NoSocketIsAnError) {
  auto r = run_exec("/nonexistent/agent.sock", std::chrono::seconds(1));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cannot connect to the guest agent"), std::string::npos);
}

}  // namespace
}  // namespace axl::hv
