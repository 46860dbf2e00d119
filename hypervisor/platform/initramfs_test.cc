#include "hypervisor/platform/initramfs.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace axl::hv {
namespace {

namespace fs = std::filesystem;

struct Parsed {
  std::string name;
  uint32_t mode;
  uint32_t nlink;
  std::string data;
};

uint32_t hex_field(const std::string& s, size_t at) {
  return static_cast<uint32_t>(std::stoul(s.substr(at, 8), nullptr, 16));
}

// An independent newc reader: checks magic, alignment and the trailer.
std::vector<Parsed> parse_newc(const std::string& a) {
  std::vector<Parsed> out;
  size_t pos = 0;
  for (;;) {
    EXPECT_EQ(pos % 4, 0u);
    if (pos + 110 > a.size()) {
      ADD_FAILURE() << "truncated header at " << pos;
      return out;
    }
    EXPECT_EQ(a.substr(pos, 6), "070701");
    uint32_t mode = hex_field(a, pos + 6 + 8);
    uint32_t nlink = hex_field(a, pos + 6 + 4 * 8);
    uint32_t filesize = hex_field(a, pos + 6 + 6 * 8);
    uint32_t namesize = hex_field(a, pos + 6 + 11 * 8);
    std::string name = a.substr(pos + 110, namesize - 1);
    EXPECT_EQ(a[pos + 110 + namesize - 1], '\0');
    pos = (pos + 110 + namesize + 3) & ~size_t{3};
    std::string data = a.substr(pos, filesize);
    pos = (pos + filesize + 3) & ~size_t{3};
    if (name == "TRAILER!!!") {
      EXPECT_EQ(pos, a.size()) << "bytes after the trailer";
      return out;
    }
    out.push_back({name, mode, nlink, data});
  }
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& data) {
  std::ofstream(p, std::ios::binary) << data;
}

class InitramfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-initramfs-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(InitramfsTest, ArchiveHasParentsFilesAndTrailer) {
  auto a = newc_archive({{"axl/script", 0755, "echo hello\nexit 3\n"},
                         {"axl/data/blob", 0600, std::string("\0\1\2", 3)},
                         {"top", 0644, ""}});
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_EQ(a->size() % 4, 0u);
  auto entries = parse_newc(*a);
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].name, "axl");
  EXPECT_EQ(entries[0].mode, 040755u);
  EXPECT_EQ(entries[1].name, "axl/data");
  EXPECT_EQ(entries[1].mode, 040755u);
  EXPECT_EQ(entries[2].name, "axl/data/blob");
  EXPECT_EQ(entries[2].mode, 0100600u);
  EXPECT_EQ(entries[2].data, std::string("\0\1\2", 3));
  EXPECT_EQ(entries[3].name, "axl/script");
  EXPECT_EQ(entries[3].mode, 0100755u);
  EXPECT_EQ(entries[3].data, "echo hello\nexit 3\n");
  EXPECT_EQ(entries[4].name, "top");
  EXPECT_EQ(entries[4].data, "");
}

TEST_F(InitramfsTest, SameFilesSameBytes) {
  std::vector<CpioFile> files{{"axl/script", 0755, "true\n"}};
  auto a = newc_archive(files), b = newc_archive(files);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST_F(InitramfsTest, ExplicitDirectoryAndSymlink) {
  auto a = newc_archive({{"etc", 040700, ""}, {"etc/link", 0120777, "/bin/busybox"}});
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto entries = parse_newc(*a);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].mode, 040700u);  // the given directory, not an implied 0755 one
  EXPECT_EQ(entries[1].mode, 0120777u);
  EXPECT_EQ(entries[1].data, "/bin/busybox");
}

TEST_F(InitramfsTest, OverlayFollowsBaseAligned) {
  // 13 bytes: the overlay must start at the next multiple of 4 (the kernel
  // only looks for a cpio magic there).
  const std::string base = "base-content!";
  write_file(dir_ / "base.img", base);
  std::vector<CpioFile> files{{"axl/script", 0755, "echo hello; exit 3\n"}};
  auto s = append_overlay((dir_ / "base.img").string(), files, (dir_ / "out.img").string());
  ASSERT_TRUE(s.ok()) << s.error().message;

  std::string out = read_file(dir_ / "out.img");
  ASSERT_GE(out.size(), 16u);
  EXPECT_EQ(out.substr(0, base.size()), base);
  EXPECT_EQ(out.substr(base.size(), 3), std::string(3, '\0'));
  auto archive = newc_archive(files);
  ASSERT_TRUE(archive.ok());
  EXPECT_EQ(out.substr(16), *archive);
  EXPECT_FALSE(fs::exists(dir_ / ("out.img.tmp." + std::to_string(::getpid()))));
}

// Interoperability: busybox (the guest's own cpio) extracts what we wrote.
TEST_F(InitramfsTest, BusyboxExtractsOverlay) {
  if (std::system("command -v busybox >/dev/null 2>&1") != 0) GTEST_SKIP() << "no busybox";
  write_file(dir_ / "base.img", "0123456789ab");  // already 4-aligned: no padding
  std::vector<CpioFile> files{{"axl/script", 0755, "echo hello; exit 3\n"},
                              {"axl/payload.bin", 0640, std::string(5000, 'x')}};
  ASSERT_TRUE(
      append_overlay((dir_ / "base.img").string(), files, (dir_ / "out.img").string()).ok());
  fs::create_directory(dir_ / "x");
  std::string cmd =
      "cd '" + (dir_ / "x").string() + "' && tail -c +13 ../out.img | busybox cpio -i 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read_file(dir_ / "x/axl/script"), "echo hello; exit 3\n");
  EXPECT_EQ(read_file(dir_ / "x/axl/payload.bin"), std::string(5000, 'x'));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "x/axl/script").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((dir_ / "x/axl/payload.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  ASSERT_EQ(::stat((dir_ / "x/axl").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(InitramfsTest, ReplacesExistingOutput) {
  write_file(dir_ / "base.img", "base");
  write_file(dir_ / "out.img", std::string(100000, 'o'));
  ASSERT_TRUE(
      append_overlay((dir_ / "base.img").string(), {{"a", 0644, "1"}}, (dir_ / "out.img").string())
          .ok());
  EXPECT_EQ(read_file(dir_ / "out.img").substr(0, 10), "base070701");
}

TEST_F(InitramfsTest, MissingBaseNamesThePath) {
  std::string base = (dir_ / "no-such-initrd.img").string();
  auto s = append_overlay(base, {{"axl/script", 0755, "true"}}, (dir_ / "out.img").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find(base), std::string::npos) << s.error().message;
  EXPECT_FALSE(fs::exists(dir_ / "out.img"));
}

TEST_F(InitramfsTest, EmptyBaseAndDirectoryBaseAreErrors) {
  write_file(dir_ / "empty.img", "");
  EXPECT_FALSE(append_overlay((dir_ / "empty.img").string(), {}, (dir_ / "o1").string()).ok());
  EXPECT_FALSE(append_overlay(dir_.string(), {}, (dir_ / "o2").string()).ok());
  EXPECT_FALSE(fs::exists(dir_ / "o1"));
  EXPECT_FALSE(fs::exists(dir_ / "o2"));
}

TEST_F(InitramfsTest, UnwritableOutputIsAnError) {
  write_file(dir_ / "base.img", "base");
  auto s =
      append_overlay((dir_ / "base.img").string(), {}, (dir_ / "missing-dir" / "out.img").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("missing-dir"), std::string::npos) << s.error().message;
}

TEST_F(InitramfsTest, BadPathsAndModesAreRejected) {
  for (const char* bad : {"", "/abs", "a/../b", "./a", "a//b", "a/", "..", "TRAILER!!!"}) {
    auto a = newc_archive({{bad, 0644, "x"}});
    EXPECT_FALSE(a.ok()) << "path '" << bad << "' accepted";
  }
  EXPECT_FALSE(newc_archive({{std::string("a\0b", 3), 0644, ""}}).ok());
  EXPECT_FALSE(newc_archive({{"dev", 020644, ""}}).ok());                 // char device
  EXPECT_FALSE(newc_archive({{"d", 040755, "data"}}).ok());               // directory with data
  EXPECT_FALSE(newc_archive({{"l", 0120777, ""}}).ok());                  // symlink without target
  EXPECT_FALSE(newc_archive({{"a", 0644, ""}, {"a", 0644, ""}}).ok());    // twice
  EXPECT_FALSE(newc_archive({{"a", 0644, ""}, {"a/b", 0644, ""}}).ok());  // file as parent
}

}  // namespace
}  // namespace axl::hv
