#include "common/fs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace axl {
namespace {

namespace fs = std::filesystem;

// A temp dir of its own, removed after the test, pass or fail.
class RemoveTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-fs-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!base.empty()) fs::remove_all(base, ec);
  }
  std::string base;
};

TEST_F(RemoveTree, MissingIsFine) { EXPECT_TRUE(remove_tree("/nonexistent/axl-fs-test").ok()); }

// Entries unlinked by someone else during the removal (std::filesystem's
// remove_all alone leaves the directory behind most of the time here).
TEST_F(RemoveTree, RemovesADirectoryWhoseEntriesVanishMeanwhile) {
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
}

// Whole subdirectories removed by someone else during the walk.
TEST_F(RemoveTree, RemovesATreeWhoseSubdirectoriesVanishMeanwhile) {
  for (int round = 0; round < 50; ++round) {
    const std::string d = base + "/d";
    for (int i = 0; i < 10; ++i) {
      fs::create_directories(d + "/s" + std::to_string(i) + "/deeper");
      std::ofstream(d + "/s" + std::to_string(i) + "/deeper/f") << "x";
    }
    std::thread other([&] {
      std::error_code ignored;  // racing with remove_tree: either may find it gone
      for (int i = 9; i >= 0; --i) fs::remove_all(d + "/s" + std::to_string(i), ignored);
    });
    auto s = remove_tree(d);
    other.join();
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_FALSE(fs::exists(d)) << "round " << round;
  }
}

// A symlink in the tree is removed; what it points at is left alone.
TEST_F(RemoveTree, SymlinksAreRemovedNotFollowed) {
  fs::create_directories(base + "/keep");
  std::ofstream(base + "/keep/precious") << "x";
  fs::create_directories(base + "/d");
  fs::create_directory_symlink(base + "/keep", base + "/d/link");
  ASSERT_TRUE(remove_tree(base + "/d").ok());
  EXPECT_FALSE(fs::exists(base + "/d"));
  EXPECT_TRUE(fs::exists(base + "/keep/precious"));
  // The path itself a symlink: the link goes, the target stays.
  fs::create_directory_symlink(base + "/keep", base + "/top");
  ASSERT_TRUE(remove_tree(base + "/top").ok());
  EXPECT_FALSE(fs::is_symlink(base + "/top"));
  EXPECT_TRUE(fs::exists(base + "/keep/precious"));
}

}  // namespace
}  // namespace axl
