// Runs the host build of axl-tool the way the integration tests and the guest
// use it: through a shell, with pipes and files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;

const std::string kTool = AXL_TOOL_PATH;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class AxlToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-tool-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const char* name) const { return (dir_ / name).string(); }

  // Waits until `file` matches `re`; returns the first capture group.
  std::string wait_for(const std::string& file, const std::regex& re) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    std::smatch m;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string text = read_file(file);
      if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "timed out waiting in " << file << ": " << read_file(file);
    return {};
  }

  fs::path dir_;
};

TEST_F(AxlToolTest, GenIsDeterministicAndSized) {
  ASSERT_EQ(run(kTool + " gen 42 3K > " + path("a")), 0);
  ASSERT_EQ(run(kTool + " gen 42 3072 > " + path("b")), 0);
  ASSERT_EQ(run(kTool + " gen 43 3k > " + path("c")), 0);
  ASSERT_EQ(run(kTool + " gen 42 1M > " + path("d")), 0);
  std::string a = read_file(path("a"));
  EXPECT_EQ(a.size(), 3072u);
  EXPECT_EQ(a, read_file(path("b")));
  EXPECT_NE(a, read_file(path("c")));
  std::string d = read_file(path("d"));
  ASSERT_EQ(d.size(), 1u << 20);
  EXPECT_EQ(d.substr(0, a.size()), a);  // a prefix of the same stream
  ASSERT_EQ(run(kTool + " gen 0 0 > " + path("e")), 0);
  EXPECT_EQ(read_file(path("e")).size(), 0u);
}

TEST_F(AxlToolTest, BadArgumentsGiveOneLineAndFail) {
  EXPECT_NE(run(kTool + " gen 1 12Q 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("bad byte count '12Q'"), std::string::npos);
  EXPECT_NE(run(kTool + " send example.com 80 < /dev/null 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("bad IPv4 address 'example.com'"), std::string::npos);
  EXPECT_NE(run(kTool + " recv 127.0.0.1 70000 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("bad port '70000'"), std::string::npos);
  EXPECT_NE(run(kTool + " frobnicate 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("unknown command 'frobnicate'"), std::string::npos);
}

// randread on a file (buffered: the test's directory may not take O_DIRECT):
// it keeps DEPTH reads in flight for the time given and reports its rate;
// bad arguments and a file too small to read from are one-line errors.
TEST_F(AxlToolTest, RandreadReportsItsRate) {
  ASSERT_EQ(run(kTool + " gen 3 1M > " + path("disk")), 0);
  ASSERT_EQ(run(kTool + " randread " + path("disk") + " 0.2 8 --buffered 2> " + path("err")), 0)
      << read_file(path("err"));
  std::smatch m;
  std::string err = read_file(path("err"));
  ASSERT_TRUE(std::regex_search(
      err, m,
      std::regex("^randread (\\d+) reads of 4096 bytes in [0-9.]+ s \\([0-9]+ IOPS, "
                 "[0-9.]+ MiB/s\\)\n$")))
      << err;
  EXPECT_GT(std::stoull(m[1].str()), 8u);
  EXPECT_NE(run(kTool + " randread " + path("disk") + " 0.2 0 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("depth must be 1..256, not 0"), std::string::npos);
  EXPECT_NE(run(kTool + " randread " + path("disk") + " forever 4 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("bad duration 'forever'"), std::string::npos);
  ASSERT_EQ(run(kTool + " gen 3 100 > " + path("tiny")), 0);
  EXPECT_NE(run(kTool + " randread " + path("tiny") + " 0.2 4 --buffered 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("smaller than one 4096-byte block"), std::string::npos);
  EXPECT_NE(run(kTool + " randread " + path("missing") + " 1 4 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("open "), std::string::npos);
}

TEST_F(AxlToolTest, SendRecvRoundTrip) {
  ASSERT_EQ(run(kTool + " recv 127.0.0.1 0 --timeout 30 > " + path("out") + " 2> " +
                path("recv.err") + " &"),
            0);
  std::string port = wait_for(path("recv.err"), std::regex("listening on 127\\.0\\.0\\.1:(\\d+)"));
  ASSERT_FALSE(port.empty());
  ASSERT_EQ(run(kTool + " gen 7 5M | " + kTool + " send 127.0.0.1 " + port + " --retry 5 2> " +
                path("send.err")),
            0)
      << read_file(path("send.err"));
  wait_for(path("recv.err"), std::regex("received 5242880 bytes"));
  ASSERT_EQ(run(kTool + " gen 7 5M > " + path("want")), 0);
  EXPECT_TRUE(read_file(path("out")) == read_file(path("want")));
  EXPECT_NE(read_file(path("send.err")).find("sent 5242880 bytes"), std::string::npos);
  EXPECT_NE(read_file(path("send.err")).find("MiB/s"), std::string::npos);
}

TEST_F(AxlToolTest, SendRetriesUntilListenerAppears) {
  // Pick a free port by binding port 0 once, then start the listener late.
  ASSERT_EQ(run(kTool + " recv 127.0.0.1 0 --timeout 0.2 2> " + path("probe.err")), 1);
  std::string port = wait_for(path("probe.err"), std::regex("listening on 127\\.0\\.0\\.1:(\\d+)"));
  ASSERT_FALSE(port.empty());
  ASSERT_EQ(run("(sleep 0.5; " + kTool + " recv 127.0.0.1 " + port + " --timeout 30 > " +
                path("out") + " 2> " + path("recv.err") + ") &"),
            0);
  ASSERT_EQ(run("echo hello | " + kTool + " send 127.0.0.1 " + port + " --retry 20 2> " +
                path("send.err")),
            0)
      << read_file(path("send.err"));
  wait_for(path("recv.err"), std::regex("received 6 bytes"));
  EXPECT_EQ(read_file(path("out")), "hello\n");
}

TEST_F(AxlToolTest, ErrorsAreReported) {
  // Nothing listens on a port we just released: refused at once, no retry.
  ASSERT_EQ(run(kTool + " recv 127.0.0.1 0 --timeout 0.1 2> " + path("probe.err")), 1);
  std::string port = wait_for(path("probe.err"), std::regex("listening on 127\\.0\\.0\\.1:(\\d+)"));
  EXPECT_NE(read_file(path("probe.err")).find("timed out waiting for a connection"),
            std::string::npos);
  EXPECT_NE(run("echo x | " + kTool + " send 127.0.0.1 " + port + " 2> " + path("err")), 0);
  EXPECT_NE(read_file(path("err")).find("Connection refused"), std::string::npos);
}

}  // namespace
