// Runs against the machine's real cgroups: needs root and either a usable
// cgroup2 mount or cgroup v1 controller mounts; skips (saying why) otherwise.
#include "supervisor/cgroup/cgroup.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>

namespace axl::cgroup {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

bool path_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// A forked child that blocks until release(), so the parent can put it in a
// group before it runs anything: the same order the supervisor needs.  The
// destructor kills and reaps it whatever the test's outcome.
class HeldChild {
 public:
  explicit HeldChild(const std::function<int()>& body) {
    int go[2];
    if (::pipe2(go, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(100);
      ::_exit(body());
    }
    ::close(go[0]);
    go_.reset(go[1]);
    if (pid_ > 0) pidfd_.reset(int(::syscall(SYS_pidfd_open, pid_, 0)));
  }
  ~HeldChild() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void release() {
    char c = 'g';
    (void)!::write(go_.get(), &c, 1);
    go_.reset();
  }
  // Wait status, or -1 on timeout.
  int wait(int timeout_ms) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return -1;
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return -1;
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  UniqueFd go_;
  UniqueFd pidfd_;
};

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    auto m = Manager::detect("axolotl-test-" + std::to_string(::getpid()));
    if (!m) {
      std::fprintf(stderr, "cgroup detect failed: %s\n", m.error().message.c_str());
      GTEST_SKIP() << "Manager::detect() failed: " << m.error().message;
    }
    manager_ = std::move(m.value());
    std::fprintf(stderr, "using %s\n", manager_->describe().c_str());
  }
  std::unique_ptr<Manager> manager_;
};

TEST_F(CgroupTest, DescribeIsNotEmpty) { EXPECT_FALSE(manager_->describe().empty()); }

TEST_F(CgroupTest, RejectsNamesThatAreNotOneComponent) {
  for (const char* bad : {"", ".", "..", "a/b", "../x"}) {
    EXPECT_FALSE(manager_->create(bad, {}).ok()) << bad;
  }
}

TEST_F(CgroupTest, MemoryHogIsOomKilledAndReported) {
  auto g = manager_->create("mem", Limits{.memory_max_bytes = 32 * kMiB});
  ASSERT_TRUE(g.ok()) << g.error().message;
  Group& group = **g;
  ASSERT_GE(group.event_fd(), 0);
  EXPECT_EQ(group.breach(), Breach::kNone);

  HeldChild child([] {
    // Allocate and touch without bound; only the kernel's limit stops it.
    for (;;) {
      void* p = ::mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return 2;
      std::memset(p, 0x5a, kMiB);
    }
  });
  ASSERT_GT(child.pid(), 0);
  ASSERT_TRUE(group.add(child.pid()).ok());
  child.release();

  int status = child.wait(30000);
  ASSERT_NE(status, -1) << "memory hog still running after 30 s";
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  pollfd p{group.event_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 5000), 1) << "event fd never became readable";
  EXPECT_EQ(group.breach(), Breach::kMemory);
  group.ack_events();
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "event fd still readable after ack_events()";
}

TEST_F(CgroupTest, ForkBeyondPidsMaxGetsEagain) {
  auto g = manager_->create("pids", Limits{.pids_max = 4});
  ASSERT_TRUE(g.ok()) << g.error().message;
  Group& group = **g;
  EXPECT_EQ(group.breach(), Breach::kNone);

  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  UniqueFd report_read(report[0]);
  UniqueFd report_write(report[1]);
  int wfd = report_write.get();
  HeldChild child([wfd] {
    int forked = 0, eagain = 0, other = 0;
    for (int i = 0; i < 20; ++i) {
      pid_t p = ::fork();
      if (p == 0) {
        ::pause();
        ::_exit(0);
      }
      if (p > 0)
        ++forked;
      else if (errno == EAGAIN)
        ++eagain;
      else
        ++other;
    }
    int out[3] = {forked, eagain, other};
    (void)!::write(wfd, out, sizeof out);
    // Stay so the grandchildren keep the group at its limit.
    ::pause();
    return 0;
  });
  report_write.reset();
  ASSERT_GT(child.pid(), 0);
  ASSERT_TRUE(group.add(child.pid()).ok());
  child.release();

  int out[3] = {};
  pollfd rp{report_read.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&rp, 1, 10000), 1);
  ASSERT_EQ(::read(report_read.get(), out, sizeof out), ssize_t(sizeof out));
  EXPECT_EQ(out[0], 3) << "the child itself is one of the four";
  EXPECT_EQ(out[1], 17);
  EXPECT_EQ(out[2], 0);
  EXPECT_EQ(group.breach(), Breach::kPids);
  // v1 kernels from 6.13 on no longer notify pids.events; only cgroup2
  // promises it.
  if (manager_->version() == Version::kV2) {
    ASSERT_GE(group.event_fd(), 0);
    pollfd p{group.event_fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 5000), 1) << "event fd not readable after a refused fork";
  }
  // The grandchildren are cleaned up by the group's destructor.
}

TEST_F(CgroupTest, DestructorKillsLeftoversOnlyAndRemovesDirectories) {
  // Orphaned grandchildren come back to us, so we can see how they died.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto g = manager_->create("leftover", Limits{.pids_max = 16});
  ASSERT_TRUE(g.ok()) << g.error().message;
  std::vector<std::string> dirs = (*g)->dirs();
  ASSERT_FALSE(dirs.empty());
  for (const auto& d : dirs) EXPECT_TRUE(path_exists(d)) << d;

  HeldChild outsider([] {
    ::pause();
    return 0;
  });
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  UniqueFd report_read(report[0]);
  UniqueFd report_write(report[1]);
  int wfd = report_write.get();
  HeldChild inside([wfd] {
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      ::pause();
      ::_exit(0);
    }
    (void)!::write(wfd, &grandchild, sizeof grandchild);
    ::pause();
    return 0;
  });
  report_write.reset();
  ASSERT_TRUE((*g)->add(inside.pid()).ok());
  inside.release();
  outsider.release();
  pid_t grandchild = -1;
  pollfd rp{report_read.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&rp, 1, 10000), 1);
  ASSERT_EQ(::read(report_read.get(), &grandchild, sizeof grandchild), ssize_t(sizeof grandchild));
  ASSERT_GT(grandchild, 0);
  EXPECT_EQ((*g)->pids().size(), 2u);

  g.value().reset();  // the destructor under test
  for (const auto& d : dirs) EXPECT_FALSE(path_exists(d)) << d << " left behind";

  int status = inside.wait(5000);
  ASSERT_NE(status, -1) << "process inside the group survived";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  int gstatus = 0;
  ASSERT_EQ(::waitpid(grandchild, &gstatus, 0), grandchild);
  EXPECT_TRUE(WIFSIGNALED(gstatus) && WTERMSIG(gstatus) == SIGKILL);
  EXPECT_EQ(outsider.wait(0), -1) << "a process outside the group was killed";
}

// The order the supervisor's spawn code can use: the child joins the group
// itself, between fork and exec, through fds the parent opened.
TEST_F(CgroupTest, ChildJoinsThroughProcsFilesBeforeRunning) {
  auto g = manager_->create("join", Limits{.pids_max = 8});
  ASSERT_TRUE(g.ok()) << g.error().message;
  auto fds = (*g)->open_procs_files();
  ASSERT_TRUE(fds.ok()) << fds.error().message;
  std::vector<int> raw;
  for (const auto& fd : *fds) raw.push_back(fd.get());
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  UniqueFd ready_read(ready[0]);
  UniqueFd ready_write(ready[1]);
  int wfd = ready_write.get();
  HeldChild child([raw, wfd] {
    for (int fd : raw) {
      if (::write(fd, "0", 1) != 1) return 3;
    }
    char c = 'j';
    (void)!::write(wfd, &c, 1);
    ::pause();
    return 0;
  });
  ready_write.reset();
  child.release();
  char c;
  pollfd rp{ready_read.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&rp, 1, 10000), 1);
  ASSERT_EQ(::read(ready_read.get(), &c, 1), 1) << "child could not join";
  auto inside = (*g)->pids();
  ASSERT_EQ(inside.size(), 1u);
  EXPECT_EQ(inside[0], child.pid());
}

TEST_F(CgroupTest, CpuLimitIsWritten) {
  auto g = manager_->create("cpu", Limits{.cpu_percent = 50});
  if (!g.ok()) {
    // Only acceptable when the host has no cpu controller for us.
    EXPECT_NE(g.error().message.find("no cpu controller"), std::string::npos) << g.error().message;
    GTEST_SKIP() << g.error().message;
  }
  bool found = false;
  for (const auto& d : (*g)->dirs()) {
    if (path_exists(d + "/cpu.max")) {
      std::FILE* f = std::fopen((d + "/cpu.max").c_str(), "r");
      char buf[64] = {};
      ASSERT_TRUE(f);
      ASSERT_TRUE(std::fgets(buf, sizeof buf, f));
      std::fclose(f);
      EXPECT_STREQ(buf, "50000 100000\n");
      found = true;
    } else if (path_exists(d + "/cpu.cfs_quota_us")) {
      std::FILE* f = std::fopen((d + "/cpu.cfs_quota_us").c_str(), "r");
      long quota = 0;
      ASSERT_TRUE(f);
      ASSERT_EQ(std::fscanf(f, "%ld", &quota), 1);
      std::fclose(f);
      EXPECT_EQ(quota, 50000);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace axl::cgroup
