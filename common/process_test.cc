#include "common/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

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

// A child with a file size limit fills its log up to the limit and no
// further; SIGXFSZ is ignored, so it runs on and exits as it meant to.
TEST(Spawn, FileSizeLimitBoundsTheLogAndTheChildRunsOn) {
  const std::string log = temp_path("fsize-log");
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c",
             "i=0; while [ $i -lt 5 ]; do head -c 2000 /dev/zero; i=$((i+1)); done; exit 7"};
  so.log_path = log;
  so.file_size_limit = 4096;
  auto c = spawn(so);
  ASSERT_TRUE(c) << c.error().message;
  auto st = wait_for(*c, std::chrono::seconds(10));
  struct stat sb {};
  const int r = ::stat(log.c_str(), &sb);
  ::unlink(log.c_str());
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 7) << describe_status(*st);
  ASSERT_EQ(r, 0);
  EXPECT_EQ(sb.st_size, 4096);
}

// With new_pid_ns the child is pid 2 of a namespace of its own (its holder
// is 1), its /proc shows only that namespace, and the holder goes with the
// Child.
TEST(Spawn, NewPidNamespaceWithItsOwnProc) {
  if (::geteuid() != 0) GTEST_SKIP() << "a pid namespace and a /proc mount need root";
  const std::string log = temp_path("pidns-log");
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'"};
  so.log_path = log;
  so.drop_privileges = true;
  so.new_pid_ns = true;
  auto c = spawn(so);
  ASSERT_TRUE(c) << c.error().message;
  auto st = wait_for(*c, std::chrono::seconds(10));
  auto text = config::read_file(log);
  ::unlink(log.c_str());
  ASSERT_TRUE(st);
  EXPECT_EQ(*st, 0) << describe_status(*st);
  ASSERT_TRUE(text);
  // The shell (2), its holder (1) and the ls and grep it runs: 4.
  EXPECT_EQ(*text, "pid=2\n4\n");
  const pid_t holder = c->ns_holder.pid();
  ASSERT_GT(holder, 0);
  EXPECT_EQ(::kill(holder, 0), 0);
  c->ns_holder.reset();
  EXPECT_NE(::kill(holder, 0), 0) << "the holder outlived its NsHolder";
}

TEST(Spawn, NewPidNamespaceNeedsDropPrivileges) {
  SpawnOptions so;
  so.argv = {"/bin/true"};
  so.new_pid_ns = true;
  auto c = spawn(so);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("new_pid_ns needs drop_privileges"), std::string::npos);
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

// A process that outlives its starter is found by its record and killed;
// a record whose start time names another process kills nothing.
TEST(Record, KillsOnlyTheProcessItNames) {
  SpawnOptions so;
  so.argv = {"/bin/sleep", "30"};
  so.new_session = true;
  auto c = spawn(so);
  ASSERT_TRUE(c) << c.error().message;
  const std::string rec = temp_path("record");
  ASSERT_TRUE(write_record(rec, c->pid));
  // The same pid with another start time: a later process that reused it.
  const std::string other = temp_path("other-record");
  {
    std::ifstream in(rec);
    long long pid = 0, start = 0;
    in >> pid >> start;
    std::ofstream(other) << pid << " " << start + 1 << "\n";
  }
  auto none = kill_recorded(other, std::chrono::milliseconds(100));
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_EQ(*none, 0);
  EXPECT_FALSE(wait_for(*c, std::chrono::milliseconds(0)));  // still running
  auto killed = kill_recorded(rec, std::chrono::milliseconds(2000));
  ASSERT_TRUE(killed) << killed.error().message;
  EXPECT_EQ(*killed, c->pid);
  auto st = wait_for(*c, std::chrono::milliseconds(2000));
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL) << describe_status(*st);
  // Gone now: nothing to kill; no record at all: nothing either.
  EXPECT_EQ(kill_recorded(rec, std::chrono::milliseconds(0)).value(), 0);
  EXPECT_EQ(kill_recorded(temp_path("no-such-record"), std::chrono::milliseconds(0)).value(), 0);
  std::ofstream(other) << "garbage\n";
  EXPECT_FALSE(kill_recorded(other, std::chrono::milliseconds(0)).ok());
  std::ofstream(other) << "1 5\n";  // init is never a record's
  EXPECT_FALSE(kill_recorded(other, std::chrono::milliseconds(0)).ok());
  ::unlink(rec.c_str());
  ::unlink(other.c_str());
}

}  // namespace
}  // namespace axl::proc
