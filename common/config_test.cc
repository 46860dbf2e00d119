#include "common/config.h"

#include <gtest/gtest.h>

namespace axl::config {
namespace {

TEST(HostConfig, ParsesDrivers) {
  auto h = parse_host(R"(
[[driver]]
name = "net0"
kind = "net"
tap = "axltap0"
[[driver]]
name = "blk0"
kind = "blk"
)",
                      "host.toml");
  ASSERT_TRUE(h.ok()) << h.error().message;
  ASSERT_EQ(h->drivers.size(), 2u);
  EXPECT_EQ(h->drivers[0].kind, DriverKind::kNet);
  EXPECT_EQ(h->drivers[0].tap, "axltap0");
  EXPECT_EQ(h->find_driver("blk0")->kind, DriverKind::kBlk);
  EXPECT_TRUE(h->drivers[0].sandbox) << "confinement is on unless a host opts out";
}

TEST(HostConfig, SandboxOptOutAndEscapeHooks) {
  auto h = parse_host(
      "[[driver]]\nname = \"b\"\nkind = \"blk\"\nsandbox = false\nfault_injection = true\n"
      "fault_at_start = \"signal-hv\"\n",
      "host.toml");
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_FALSE(h->drivers[0].sandbox);
  for (const char* f :
       {"open-host-file", "open-socket", "ptrace-hv", "signal-hv", "map-hv-mem", "uring-escape"})
    EXPECT_TRUE(is_fault_name(f)) << f;
  auto bad =
      parse_host("[[driver]]\nname = \"b\"\nkind = \"blk\"\nsandbox = \"no\"\n", "host.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("driver.sandbox"), std::string::npos) << bad.error().message;
}

TEST(HostConfig, IoTimeoutDefaultsAndBounds) {
  auto h = parse_host(R"(
[[driver]]
name = "blk0"
kind = "blk"
[[driver]]
name = "blk1"
kind = "blk"
io_timeout_ms = 250
[[driver]]
name = "blk2"
kind = "blk"
io_timeout_ms = 0
)",
                      "host.toml");
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->find_driver("blk0")->io_timeout_ms, 5000u);
  EXPECT_EQ(h->find_driver("blk1")->io_timeout_ms, 250u);
  EXPECT_EQ(h->find_driver("blk2")->io_timeout_ms, 0u);  // disabled
  for (const char* bad : {"-1", "3600001", "\"5s\"", "1.5"}) {
    auto b = parse_host(
        std::string("[[driver]]\nname = \"b\"\nkind = \"blk\"\nio_timeout_ms = ") + bad + "\n",
        "host.toml");
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.error().message.find("io_timeout_ms"), std::string::npos) << b.error().message;
    EXPECT_EQ(b.error().message.find('\n'), std::string::npos) << b.error().message;
  }
}

TEST(HostConfig, DataPathFaultNamesAreFaultHooks) {
  for (const char* f : {"wild-write", "bogus-id", "bogus-len", "dup-completion", "stall",
                        "drop-completion", "slow", "leak", "cpu-hog"})
    EXPECT_TRUE(is_fault_name(f)) << f;
  EXPECT_FALSE(is_fault_name("scribble"));
  for (const char* f : {"crash", "hang", "die-in-command"}) EXPECT_TRUE(is_vtpm_fault_name(f)) << f;
  EXPECT_FALSE(is_vtpm_fault_name("slow"));
}

TEST(HostConfig, VtpmFaultInjectionIsOffUnlessSet) {
  auto off = parse_host("[[driver]]\nname = \"b\"\nkind = \"blk\"\n", "host.toml");
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_FALSE(off->vtpm_fault_injection);
  EXPECT_FALSE(off->daemon_fault_injection);
  auto on = parse_host(
      "vtpm_fault_injection = true\ndaemon_fault_injection = true\n[[driver]]\nname = \"b\"\n"
      "kind = \"blk\"\n",
      "host.toml");
  ASSERT_TRUE(on.ok()) << on.error().message;
  EXPECT_TRUE(on->vtpm_fault_injection);
  EXPECT_TRUE(on->daemon_fault_injection);
  auto bad = parse_host("vtpm_fault_injection = 1\n", "host.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'vtpm_fault_injection' must be a boolean"), std::string::npos)
      << bad.error().message;
}

struct Bad {
  const char* text;
  const char* needle;
};

TEST(HostConfig, RejectsBadInputWithOneLineNamingTheProblem) {
  const Bad cases[] = {
      {"[[driver]]\nname = \"a\"\nkind = \"net\"\ntap = \"t0\"\ncolour = 1\n",
       "unknown key 'driver.colour'"},
      {"[[driver]]\nname = \"a\"\nkind = \"gpu\"\n", "unknown kind 'gpu'"},
      {"[[driver]]\nname = \"a\"\nkind = \"net\"\n", "needs 'tap'"},
      {"[[driver]]\nname = \"a\"\nkind = \"blk\"\n[[driver]]\nname = \"a\"\nkind = \"blk\"\n",
       "duplicate driver name 'a'"},
      {"[[driver]\nname=", "host.toml:1"},
      {"", "no [[driver]]"},
      {"[[driver]]\nname = 3\nkind = \"blk\"\n", "'driver.name' must be a string"},
  };
  for (auto& c : cases) {
    auto h = parse_host(c.text, "host.toml");
    ASSERT_FALSE(h.ok()) << c.text;
    EXPECT_NE(h.error().message.find(c.needle), std::string::npos) << h.error().message;
    EXPECT_EQ(h.error().message.find('\n'), std::string::npos) << h.error().message;
  }
}

TEST(GuestConfig, ParsesAndResolvesPaths) {
  auto g = parse_guest(R"(
name = "g1"
memory_mib = 256
vcpus = 2
log_max_mib = 8
[[disk]]
driver = "blk0"
image = "disk.img"
[[nic]]
driver = "net0"
mac = "52:54:00:12:34:56"
[guest]
script = "/abs/run.sh"
)",
                       "g1.toml", "/cfg");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->memory_mib, 256u);
  EXPECT_EQ(g->log_max_mib, 8u);
  EXPECT_EQ(g->disks[0].image, "/cfg/disk.img");
  EXPECT_EQ(g->disks[0].format, "raw");  // stated or raw, never guessed
  EXPECT_EQ(g->disks[0].cache, "writeback");
  EXPECT_EQ(g->disks[0].aio, "auto");
  EXPECT_EQ(g->disks[0].queues, 1u);
  EXPECT_EQ(format_mac(g->nics[0].mac), "52:54:00:12:34:56");
  EXPECT_EQ(g->nics[0].queues, 1u);
  EXPECT_EQ(g->script, "/abs/run.sh");
  EXPECT_EQ(g->accel, "auto");
  EXPECT_FALSE(g->iommu);
}

TEST(GuestConfig, IommuKey) {
  auto g = parse_guest("name = \"g\"\niommu = true\n", "g.toml", "/");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_TRUE(g->iommu);
  g = parse_guest("name = \"g\"\niommu = false\n", "g.toml", "/");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->iommu);
}

TEST(GuestConfig, VtpmTable) {
  auto g = parse_guest("name = \"g\"\n", "g.toml", "/");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->vtpm.enabled);
  EXPECT_EQ(g->vtpm.command_port, 0u);
  g = parse_guest("name = \"g\"\n[vtpm]\nenabled = true\n", "g.toml", "/");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_TRUE(g->vtpm.enabled);
  EXPECT_EQ(g->vtpm.command_port, 0u);
  g = parse_guest("name = \"g\"\n[vtpm]\nenabled = true\ncommand_port = 2321\n", "g.toml", "/");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->vtpm.command_port, 2321u);
  g = parse_guest("name = \"g\"\n[vtpm]\nenabled = false\n", "g.toml", "/");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->vtpm.enabled);
  EXPECT_EQ(g->on_crash, "destroy");
  g = parse_guest("name = \"g\"\non_crash = \"restart\"\n", "g.toml", "/");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->on_crash, "restart");
}

TEST(GuestConfig, RejectsBadInput) {
  const Bad cases[] = {
      {"name = \"g\"\nmemroy_mib = 5\n", "unknown key 'memroy_mib'"},
      {"memory_mib = 512\n", "missing required key 'name'"},
      {"name = \"g 1\"\n", "bad guest name"},
      {"name = \"g\"\naccel = \"hvf\"\n", "accel must be"},
      {"name = \"g\"\non_crash = \"coredump\"\n", "on_crash must be destroy, restart or preserve"},
      {"name = \"g\"\non_crash = 1\n", "'on_crash' must be a string"},
      {"name = \"g\"\niommu = \"yes\"\n", "'iommu' must be a boolean"},
      {"name = \"g\"\niommu = 1\n", "'iommu' must be a boolean"},
      {"name = \"g\"\n[[nic]]\ndriver = \"n\"\nmac = \"zz\"\n", "bad MAC"},
      {"name = \"g\"\n[[nic]]\ndriver = \"n\"\nmac = \"01:00:00:00:00:01\"\n", "multicast"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\n", "missing required key 'disk.image'"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nformat = \"vmdk\"\n",
       "disk.format must be \"raw\" or \"qcow2\""},
      {"name = \"g\"\nmemory_mib = 1\n", "memory_mib must be"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\ncache = \"unsafe\"\n",
       "disk.cache must be \"writeback\" or \"none\", not \"unsafe\""},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nformat = \"qcow2\"\ncache = "
       "\"none\"\n",
       "disk.cache = \"none\" is supported for raw images only"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\naio = \"native\"\n",
       "disk.aio must be \"auto\", \"io_uring\" or \"sync\", not \"native\""},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nformat = \"qcow2\"\naio = "
       "\"io_uring\"\n",
       "disk.aio = \"io_uring\" is supported for raw images only"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nqueues = 0\n",
       "disk.queues must be between 1 and 16"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nqueues = 17\n",
       "disk.queues must be between 1 and 16"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\nimage = \"x\"\nqueues = \"2\"\n",
       "'disk.queues' must be"},
      {"name = \"g\"\n[[nic]]\ndriver = \"n\"\nmac = \"52:54:00:00:00:01\"\nqueues = 9\n",
       "nic.queues must be between 1 and 8"},
      {"name = \"g\"\nlog_max_mib = 0\n", "log_max_mib must be between 1 and 65536"},
      {"name = \"g\"\nlog_max_mib = \"big\"\n", "'log_max_mib' must be"},
      {"name = \"g\"\n[guest]\nscrpt = \"x\"\n", "unknown key 'guest.scrpt'"},
      {"name = \"g\"\nvtpm = true\n", "[vtpm] must be a table"},
      {"name = \"g\"\n[vtpm]\nenabled = 1\n", "'vtpm.enabled' must be a boolean"},
      {"name = \"g\"\n[vtpm]\nenable = true\n", "unknown key 'vtpm.enable'"},
      {"name = \"g\"\n[vtpm]\nenabled = true\ncommand_port = 80\n", "command_port must be"},
      {"name = \"g\"\n[vtpm]\nenabled = true\ncommand_port = 65535\n", "command_port must be"},
      {"name = \"g\"\n[vtpm]\ncommand_port = 2321\n", "needs vtpm.enabled"},
  };
  for (auto& c : cases) {
    auto g = parse_guest(c.text, "g.toml", "/");
    ASSERT_FALSE(g.ok()) << c.text;
    EXPECT_NE(g.error().message.find(c.needle), std::string::npos) << g.error().message;
  }
}

// Found by fuzz_host_config / fuzz_guest_config: toml++ quotes the text it
// choked on and we quote names, so a line break in the input used to make a
// multi-line error.
TEST(Config, ErrorsQuotingTheInputStayOneLine) {
  const Bad host[] = {
      {"n=in\n[1", "host.toml:1"},
      {"5=n\n", "host.toml:1"},
      {"[[driver]]\nname = \"a\\nb\"\nkind = \"blk\"\n", "bad driver name 'a\\nb'"},
      {"[[driver]]\nname = \"a\"\nkind = \"blk\\r\\u0001\"\n", "unknown kind 'blk\\r\\x01'"},
  };
  for (auto& c : host) {
    auto h = parse_host(c.text, "host.toml");
    ASSERT_FALSE(h.ok()) << c.text;
    EXPECT_NE(h.error().message.find(c.needle), std::string::npos) << h.error().message;
    EXPECT_EQ(h.error().message.find('\n'), std::string::npos) << h.error().message;
    EXPECT_EQ(h.error().message.find('\r'), std::string::npos) << h.error().message;
  }
  auto g = parse_guest("name = \"g\"\naccel = \"tcg\\nkvm\"\n", "g.toml", "/");
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("not 'tcg\\nkvm'"), std::string::npos) << g.error().message;
  EXPECT_EQ(g.error().message.find('\n'), std::string::npos) << g.error().message;
}

}  // namespace
}  // namespace axl::config
