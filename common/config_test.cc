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
}

struct Bad {
  const char* text;
  const char* needle;
};

TEST(HostConfig, RejectsBadInputWithOneLineNamingTheProblem) {
  const Bad cases[] = {
      {"[[driver]]\nname = \"a\"\nkind = \"net\"\ntap = \"t0\"\ncolour = 1\n", "unknown key 'driver.colour'"},
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
  EXPECT_EQ(g->disks[0].image, "/cfg/disk.img");
  EXPECT_EQ(format_mac(g->nics[0].mac), "52:54:00:12:34:56");
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

TEST(GuestConfig, RejectsBadInput) {
  const Bad cases[] = {
      {"name = \"g\"\nmemroy_mib = 5\n", "unknown key 'memroy_mib'"},
      {"memory_mib = 512\n", "missing required key 'name'"},
      {"name = \"g 1\"\n", "bad guest name"},
      {"name = \"g\"\naccel = \"hvf\"\n", "accel must be"},
      {"name = \"g\"\niommu = \"yes\"\n", "'iommu' must be a boolean"},
      {"name = \"g\"\niommu = 1\n", "'iommu' must be a boolean"},
      {"name = \"g\"\n[[nic]]\ndriver = \"n\"\nmac = \"zz\"\n", "bad MAC"},
      {"name = \"g\"\n[[nic]]\ndriver = \"n\"\nmac = \"01:00:00:00:00:01\"\n", "multicast"},
      {"name = \"g\"\n[[disk]]\ndriver = \"b\"\n", "missing required key 'disk.image'"},
      {"name = \"g\"\nmemory_mib = 1\n", "memory_mib must be"},
      {"name = \"g\"\n[guest]\nscrpt = \"x\"\n", "unknown key 'guest.scrpt'"},
  };
  for (auto& c : cases) {
    auto g = parse_guest(c.text, "g.toml", "/");
    ASSERT_FALSE(g.ok()) << c.text;
    EXPECT_NE(g.error().message.find(c.needle), std::string::npos) << g.error().message;
  }
}

}  // namespace
}  // namespace axl::config
