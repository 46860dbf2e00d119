// confine() in forked children that make their own user and mount
// namespaces (as the spawner would): the root is empty and read-only but for
// the bind mounts asked for, and nothing leads back to the host's tree.
#include "common/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace axl::sandbox {
namespace {

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ::close(fd);
  return ok;
}

// Fresh user and mount namespaces in which we are root (mapped to our own
// ids, so files we make are ours outside too).
bool own_namespaces() {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
  return write_text("/proc/self/setgroups", "deny") &&
         write_text("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1\n") &&
         write_text("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1\n");
}

// Exit codes of the child: 0 passed, 1 a check failed (its name on stderr),
// 2 no namespaces here (skipped), 3 confine() failed.
int run_in_namespaces(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!own_namespaces()) _exit(2);
    _exit(body());
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

#define CHECK(cond)                                 \
  do {                                              \
    if (!(cond)) {                                  \
      fprintf(stderr, "check failed: %s\n", #cond); \
      return 1;                                     \
    }                                               \
  } while (0)

std::vector<std::string> names_in(const char* dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir)) {
    while (dirent* e = ::readdir(d))
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

class Confine : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-confine-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    FILE* f = fopen((dir_ + "/kept").c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("state", f);
    fclose(f);
  }
  void TearDown() override {
    for (const auto& n : names_in(dir_.c_str())) ::unlink((dir_ + "/" + n).c_str());
    ::rmdir(dir_.c_str());
  }
  void expect_passed(int st) {
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2) GTEST_SKIP() << "no user namespaces here";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  }
  std::string dir_;
};

TEST_F(Confine, EmptyReadOnlyRootCarriesItsBindMount) {
  int st = run_in_namespaces([&] {
    int src = ::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    const BindMount b{src, "/data"};
    if (auto s = confine(Limits{}, {&b, 1}); !s) {
      fprintf(stderr, "%s\n", s.error().message.c_str());
      return 3;
    }
    CHECK(names_in("/") == std::vector<std::string>{"data"});
    CHECK(names_in("/data") == std::vector<std::string>{"kept"});
    // The source fd is gone: nothing leads back to the host's tree.
    CHECK(::fcntl(src, F_GETFD) < 0 && errno == EBADF);
    struct stat root {
    }, up{};
    CHECK(::stat("/", &root) == 0 && ::stat("/data/..", &up) == 0);
    CHECK(root.st_ino == up.st_ino && root.st_dev == up.st_dev);
    CHECK(::open("/etc/passwd", O_RDONLY) < 0 && errno == ENOENT);
    CHECK(::open("/proc/self/status", O_RDONLY) < 0 && errno == ENOENT);
    // The root is read-only; the bind mount is writable.
    CHECK(::mkdir("/x", 0700) < 0 && errno == EROFS);
    int fd = ::open("/data/new", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && ::write(fd, "x", 1) == 1);
    ::close(fd);
    CHECK(::rename("/data/new", "/data/renamed") == 0);
    CHECK(::unlink("/data/renamed") == 0);
    // No capabilities, no new privileges, not dumpable.
    CHECK(::prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) == 0);
    CHECK(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
    CHECK(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
    CHECK(::umount2("/data", MNT_DETACH) < 0);
    return 0;
  });
  expect_passed(st);
}

TEST_F(Confine, ReadOnlyBindMount) {
  int st = run_in_namespaces([&] {
    const BindMount b{::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "/ro", true};
    if (auto s = confine(Limits{}, {&b, 1}); !s) {
      fprintf(stderr, "%s\n", s.error().message.c_str());
      return 3;
    }
    CHECK(::open("/ro/kept", O_RDONLY | O_CLOEXEC) >= 0);
    CHECK(::open("/ro/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0600) < 0 && errno == EROFS);
    return 0;
  });
  expect_passed(st);
}

TEST_F(Confine, NoBindMountsLeavesNothing) {
  int st = run_in_namespaces([&] {
    if (auto s = confine(Limits{}); !s) {
      fprintf(stderr, "%s\n", s.error().message.c_str());
      return 3;
    }
    CHECK(names_in("/").empty());
    return 0;
  });
  expect_passed(st);
}

TEST_F(Confine, BadTargetsAreRefused) {
  for (const char* target : {"", "/", "data", "/a/b", "/..", "/."}) {
    int st = run_in_namespaces([&] {
      const BindMount b{::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), target};
      auto s = confine(Limits{}, {&b, 1});
      return s ? 0 : 3;
    });
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2) GTEST_SKIP() << "no user namespaces here";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 3) << "target '" << target << "': " << st;
  }
}

}  // namespace
}  // namespace axl::sandbox
