#include "supervisor/journal.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/fs.h"

namespace axl::supervisor {
namespace {

InstanceRecord sample() {
  InstanceRecord r;
  r.kind = "vtpm";
  r.name = "guest-1";
  r.role = "active";
  r.pid = 4242;
  r.start = 987654321;
  r.holder_pid = 4241;
  r.holder_start = 987654320;
  r.cgroup = "vtpm-guest-1-3";
  r.seq = 3;
  r.port = 2321;
  r.measure_log = true;
  return r;
}

TEST(InstanceRecord, RoundTrips) {
  auto r = parse_record(format_record(sample()));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(format_record(*r), format_record(sample()));
  EXPECT_EQ(r->key(), "vtpm.guest-1.4242");
}

TEST(InstanceRecord, RefusesWhatCouldMisdirectAKill) {
  auto with = [](const std::string& from, const std::string& to) {
    std::string t = format_record(sample());
    t.replace(t.find(from), from.size(), to);
    return parse_record(t);
  };
  EXPECT_FALSE(with("pid=4242", "pid=1"));           // init
  EXPECT_FALSE(with("pid=4242", "pid=-5"));          // a process group
  EXPECT_FALSE(with("start=987654321", "start=0"));  // no identity
  EXPECT_FALSE(with("holder_pid=4241", "holder_pid=1"));
  EXPECT_FALSE(with("name=guest-1", "name=../x"));
  EXPECT_FALSE(with("cgroup=vtpm-guest-1-3", "cgroup=../../x"));
  EXPECT_FALSE(with("kind=vtpm", "kind=qemu"));
  EXPECT_FALSE(with("role=active", "role=boss"));
  EXPECT_FALSE(with("port=2321", "port=99999"));
  EXPECT_FALSE(with("seq=3", "seq=x"));
  EXPECT_FALSE(with("seq=3", "bogus=3"));
  EXPECT_FALSE(parse_record("garbage"));
}

TEST(Journal, RecordsLoadsAndForgets) {
  char tmpl[] = "/tmp/axl-journal-test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = std::string(tmpl) + "/instances";
  {
    FdStore store;  // none: only the records
    Journal j(dir, store);
    ASSERT_TRUE(j.record(sample(), -1));
    // A record whose name does not match its contents, and a malformed one:
    // dropped on load, not trusted.
    std::ofstream(dir + "/vtpm.other.1") << format_record(sample());
    std::ofstream(dir + "/driver.x.77") << "pid=77\n";
    auto all = j.load();
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].key(), "vtpm.guest-1.4242");
    EXPECT_FALSE(std::filesystem::exists(dir + "/vtpm.other.1"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/driver.x.77"));
    InstanceRecord r = sample();
    r.role = "standby";
    j.update(r);
    EXPECT_EQ(j.load().at(0).role, "standby");
    j.forget(r.key());
    EXPECT_TRUE(j.load().empty());
  }
  EXPECT_TRUE(remove_tree(tmpl));
}

TEST(FdStore, TakesTheFdsHandedDownByName) {
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
  // Handed down at 3 and 4, as sd_listen_fds(3) has them.
  int saved3 = dup(3), saved4 = dup(4);
  ASSERT_GE(dup2(sp[0], 3), 0);
  ASSERT_GE(dup2(sp[1], 4), 0);
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", "2", 1);
  setenv("LISTEN_FDNAMES", "driver.blk0.12:tap.net0", 1);
  setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
  FdStore s = FdStore::from_environment();
  EXPECT_EQ(getenv("LISTEN_FDS"), nullptr);  // no child inherits them
  EXPECT_EQ(getenv("NOTIFY_SOCKET"), nullptr);
  EXPECT_TRUE(s.available());
  EXPECT_EQ(s.untaken().size(), 2u);
  UniqueFd tap = s.take("tap.net0");
  EXPECT_EQ(tap.get(), 4);
  EXPECT_FALSE(s.take("tap.net0"));  // once
  EXPECT_EQ(s.untaken(), std::vector<std::string>{"driver.blk0.12"});
  // The store is unreachable: keeping an fd there is an error, not a crash.
  EXPECT_FALSE(s.put("x", tap.get()));
  EXPECT_FALSE(s.put("bad:name", tap.get()));
  (void)tap.release();
  if (saved3 >= 0) dup2(saved3, 3), close(saved3);
  if (saved4 >= 0) dup2(saved4, 4), close(saved4);
  close(sp[0]);
  close(sp[1]);
}

TEST(FdStore, IgnoresFdsMeantForAnotherProcess) {
  setenv("LISTEN_PID", "1", 1);
  setenv("LISTEN_FDS", "2", 1);
  FdStore s = FdStore::from_environment();
  EXPECT_TRUE(s.untaken().empty());
  EXPECT_FALSE(s.available());
}

}  // namespace
}  // namespace axl::supervisor
