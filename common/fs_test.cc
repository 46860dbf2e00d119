#include "common/fs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace axl {
namespace {

namespace fs = std::filesystem;

TEST(RemoveTree, MissingIsFine) { EXPECT_TRUE(remove_tree("/nonexistent/axl-fs-test").ok()); }

// Entries unlinked by someone else during the removal (std::filesystem's
// remove_all alone leaves the directory behind most of the time here).
TEST(RemoveTree, RemovesADirectoryWhoseEntriesVanishMeanwhile) {
  char tmpl[] = "/tmp/axl-fs-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string base = tmpl;
  for (int round = 0; round < 50; ++round) {
    const std::string d = base + "/d";
    fs::create_directories(d);
    for (int i = 0; i < 20; ++i) std::ofstream(d + "/f" + std::to_string(i)) << "x";
    std::thread other([&] {
      for (int i = 19; i >= 0; --i) ::unlink((d + "/f" + std::to_string(i)).c_str());
    });
    auto s = remove_tree(d);
    other.join();
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_FALSE(fs::exists(d)) << "round " << round;
  }
  fs::remove_all(base);
}

}  // namespace
}  // namespace axl
