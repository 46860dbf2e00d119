#include "common/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "common/config.h"

namespace axl::proc {
namespace {

std::string temp_path(const char* tag) {
  return std::string("/tmp/axl-process-test-") + tag + "-" + std::to_string(::getpid());
}

// A caller's mapping for fd 1 beats the default of inheriting stdout.
TEST(Spawn, CallerMappingOfStdoutWins) {
  const std::string out = temp_path("out");
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c", "echo to-stdout"};
  so.fds = {{fd, 1}};
  auto c = spawn(so);
  ::close(fd);
  ASSERT_TRUE(c) << c.error().message;
  auto st = wait_for(*c, std::chrono::seconds(10));
  ASSERT_TRUE(st);
  EXPECT_EQ(*st, 0);
  auto text = config::read_file(out);
  ::unlink(out.c_str());
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "to-stdout\n");
}

TEST(Spawn, LogPathTakesStdoutAndStderr) {
  const std::string log = temp_path("log");
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c", "echo out; echo err >&2"};
  so.log_path = log;
  auto c = spawn(so);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(wait_for(*c, std::chrono::seconds(10)));
  auto text = config::read_file(log);
  ::unlink(log.c_str());
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "out\nerr\n");
}

}  // namespace
}  // namespace axl::proc
