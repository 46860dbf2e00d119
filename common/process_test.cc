#include "common/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

// A confined child gets a mount source as an fd it can reach the directory
// through, though the path to it is closed to its uid.
TEST(Spawn, ConfinedChildGetsItsMountSource) {
  if (::geteuid() != 0) GTEST_SKIP() << "confined spawns need root (uid maps)";
  const std::string top = temp_path("top"), dir = top + "/private", log = temp_path("src-log");
  ASSERT_EQ(::mkdir(top.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c",
             "test -d /proc/self/fd/7 && echo fd-is-dir; test -d " + dir + " || echo path-closed"};
  so.log_path = log;
  so.sandbox = SandboxSpec{};
  so.sandbox->mount_sources = {{dir, 7}};
  auto c = spawn(so);
  if (!c) {
    ::rmdir(dir.c_str());
    ::rmdir(top.c_str());
    if (c.error().message.find("user namespaces") != std::string::npos)
      GTEST_SKIP() << c.error().message;
  }
  ASSERT_TRUE(c) << c.error().message;
  auto st = wait_for(*c, std::chrono::seconds(10));
  auto text = config::read_file(log);
  ::unlink(log.c_str());
  ::rmdir(dir.c_str());
  ::rmdir(top.c_str());
  ASSERT_TRUE(st);
  EXPECT_EQ(*st, 0);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "fd-is-dir\npath-closed\n");
}

TEST(Spawn, ConfinedChildFailsOnAMissingMountSource) {
  if (::geteuid() != 0) GTEST_SKIP() << "confined spawns need root (uid maps)";
  const std::string log = temp_path("missing-log");
  SpawnOptions so;
  so.argv = {"/bin/true"};
  so.log_path = log;
  so.sandbox = SandboxSpec{};
  so.sandbox->mount_sources = {{"/nonexistent-axl-dir", 7}};
  auto c = spawn(so);
  if (!c && c.error().message.find("user namespaces") != std::string::npos)
    GTEST_SKIP() << c.error().message;
  ASSERT_TRUE(c) << c.error().message;
  auto st = wait_for(*c, std::chrono::seconds(10));
  auto text = config::read_file(log);
  ::unlink(log.c_str());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 126) << describe_status(*st);
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("sandbox: cannot open /nonexistent-axl-dir"), std::string::npos) << *text;
}

}  // namespace
}  // namespace axl::proc
