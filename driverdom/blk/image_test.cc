// The qcow2 layer against QEMU's own tools: images made by qemu-img and
// written by qemu-io read back as `qemu-img convert -O raw` reads them, and
// images written here pass `qemu-img check` and read back the same through
// QEMU.  Skipped (named) where qemu-img is not installed.
#include "driverdom/blk/image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/unique_fd.h"

namespace axl::driverdom::blk {
namespace {

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

class Qcow2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0)
      GTEST_SKIP() << "qemu-img or qemu-io not installed (apt-get install qemu-utils)";
    char tmpl[] = "/tmp/axl-image-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) (void)remove_tree(dir_);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  int sh(const std::string& cmd) const {
    return ::system(("cd " + dir_ + " && " + cmd + " >/dev/null 2>" + dir_ + "/err").c_str());
  }
  std::string err() const {
    auto e = slurp(dir_ + "/err");
    return std::string(e.begin(), e.end());
  }
  // A raw file of random bytes.
  std::vector<uint8_t> random_raw(const std::string& name, size_t size, unsigned seed) {
    std::vector<uint8_t> v(size);
    std::mt19937 g(seed);
    for (auto& b : v) b = uint8_t(g());
    std::ofstream(path(name), std::ios::binary).write(reinterpret_cast<char*>(v.data()), v.size());
    return v;
  }
  // What QEMU reads from an image.
  std::vector<uint8_t> qemu_view(const std::string& name) {
    EXPECT_EQ(sh("qemu-img convert -O raw " + name + " view.raw"), 0) << err();
    return slurp(path("view.raw"));
  }
  std::vector<uint8_t> our_view(Image& img) {
    std::vector<uint8_t> v(img.size());
    auto s = img.read(0, v);
    EXPECT_TRUE(s) << s.error().message;
    return v;
  }
  std::string dir_;
};

TEST_F(Qcow2Test, ReadsWhatQemuWroteThroughABackingChain) {
  random_raw("base.raw", 3 << 20, 1);
  ASSERT_EQ(sh("qemu-img convert -O qcow2 -o cluster_size=4096 base.raw base.qcow2"), 0) << err();
  ASSERT_EQ(sh("qemu-img create -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 top.qcow2 4M"),
            0)
      << err();
  ASSERT_EQ(sh("qemu-io -c 'write -P 0xab 1000000 70000' -c 'write -z 2M 8192' "
               "-c 'write -P 0x11 3700000 5000' top.qcow2"),
            0)
      << err();
  auto img = open_chain(path("top.qcow2"), true);
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ((*img)->size(), 4u << 20);
  EXPECT_EQ(our_view(**img), qemu_view("top.qcow2"));  // past the base's 3 MiB: zeros
}

TEST_F(Qcow2Test, WritesThatQemuReadsBackAndChecksClean) {
  auto base = random_raw("base.raw", 6 << 20, 2);
  ASSERT_EQ(sh("qemu-img convert -O qcow2 -o cluster_size=4096 base.raw base.qcow2"), 0) << err();
  // 4 KiB clusters: an L2 table covers 2 MiB and a refcount block 8 MiB, so
  // these writes make new L2 tables and a new refcount block.
  ASSERT_EQ(sh("qemu-img create -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 top.qcow2 "
               "24M"),
            0)
      << err();
  std::vector<uint8_t> want(24 << 20, 0);
  std::copy(base.begin(), base.end(), want.begin());
  {
    auto img = open_chain(path("top.qcow2"), false);
    ASSERT_TRUE(img) << img.error().message;
    std::mt19937 g(3);
    const std::pair<uint64_t, size_t> writes[] = {
        {100, 10},              // into a backed cluster: the rest comes from the base
        {4090, 20},             // across two clusters
        {(5 << 20) + 7, 9000},  // across three, near the base's end
        {(6 << 20) - 10, 30},   // across the base's end
        {(13 << 20) + 1, 100},  // a new L2 table beyond the base
        {(23 << 20), 1 << 20},  // the last MiB: many clusters, a new refcount block
        {200, 5},               // a cluster this image owns now: in place
    };
    for (auto [off, len] : writes) {
      std::vector<uint8_t> d(len);
      for (auto& b : d) b = uint8_t(g());
      auto s = (*img)->write(off, d);
      ASSERT_TRUE(s) << "write at " << off << ": " << s.error().message;
      std::copy(d.begin(), d.end(), want.begin() + long(off));
    }
    EXPECT_EQ(our_view(**img), want);
    ASSERT_TRUE((*img)->flush());
  }
  EXPECT_EQ(sh("qemu-img check top.qcow2"), 0) << err();
  EXPECT_EQ(qemu_view("top.qcow2"), want);
}

TEST_F(Qcow2Test, RefusesWhatItDoesNotServe) {
  random_raw("base.raw", 1 << 20, 4);
  // Compressible (random data is stored uncompressed even with -c).
  ASSERT_EQ(sh("yes abcdefgh | head -c 1048576 >pattern.raw && "
               "qemu-img convert -c -O qcow2 pattern.raw packed.qcow2"),
            0)
      << err();
  auto r = open_chain(path("packed.qcow2"), true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("compressed cluster"), std::string::npos) << r.error().message;

  ASSERT_EQ(sh("qemu-img create -f qcow2 --object secret,id=s0,data=pw "
               "-o encrypt.format=aes,encrypt.key-secret=s0 locked.qcow2 1M"),
            0)
      << err();
  r = open_chain(path("locked.qcow2"), true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("encrypted"), std::string::npos) << r.error().message;

  ASSERT_EQ(sh("qemu-img convert -O qcow2 base.raw whole.qcow2 && cp whole.qcow2 cut.qcow2 && "
               "truncate -s 200000 cut.qcow2"),
            0)
      << err();
  r = open_chain(path("cut.qcow2"), true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;

  // A chain that loops, and one whose backing file is missing.
  ASSERT_EQ(sh("qemu-img create -f qcow2 a.qcow2 1M && qemu-img create -f qcow2 -b a.qcow2 -F "
               "qcow2 b.qcow2 && qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2"),
            0)
      << err();
  r = open_chain(path("b.qcow2"), true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("loops"), std::string::npos) << r.error().message;
  ASSERT_EQ(sh("qemu-img create -f qcow2 -b gone.qcow2 -F qcow2 -u orphan.qcow2 1M"), 0) << err();
  r = open_chain(path("orphan.qcow2"), true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("gone.qcow2"), std::string::npos) << r.error().message;
}

TEST_F(Qcow2Test, GarbageHeadersAreRefusedNotTrusted) {
  random_raw("base.raw", 1 << 20, 5);
  ASSERT_EQ(sh("qemu-img convert -O qcow2 base.raw good.qcow2"), 0) << err();
  const auto good = slurp(path("good.qcow2"));
  // Each header field set to nonsense must fail the open, never crash or
  // read outside the file.
  const std::pair<size_t, std::vector<uint8_t>> edits[] = {
      {4, {0, 0, 0, 9}},                     // version
      {20, {0, 0, 0, 40}},                   // cluster bits
      {36, {0x7f, 0xff, 0xff, 0xff}},        // L1 size
      {40, {0x7f, 0, 0, 0, 0, 0, 0, 0}},     // L1 offset
      {48, {0, 0, 0, 0, 0, 0, 0x10, 0x01}},  // refcount table offset, unaligned
      {16, {0, 0, 0x40, 0}},                 // backing name length
      {72, {0, 0, 0, 0, 0, 0, 0, 2}},        // incompatible: corrupt
      {100, {0xff, 0xff, 0xff, 0xff}},       // header length
  };
  for (const auto& [off, bytes] : edits) {
    auto bad = good;
    std::copy(bytes.begin(), bytes.end(), bad.begin() + long(off));
    if (off == 16) bad[15] = 200;  // a backing name offset inside the cluster
    std::ofstream(path("bad.qcow2"), std::ios::binary)
        .write(reinterpret_cast<const char*>(bad.data()), long(bad.size()));
    auto r = open_chain(path("bad.qcow2"), true);
    EXPECT_FALSE(r) << "an edit at byte " << off << " was accepted";
  }
}

// The hypervisor checks the chain and hands its fds over; the driver
// rebuilds the same image from them.
TEST_F(Qcow2Test, AChainTravelsAsFdsAndFormats) {
  random_raw("base.raw", 2 << 20, 7);
  ASSERT_EQ(sh("qemu-img create -f qcow2 -b base.raw -F raw mid.qcow2 && "
               "qemu-io -c 'write -P 0x42 65536 4096' mid.qcow2 && "
               "qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 4M"),
            0)
      << err();
  auto chain = open_chain_fds(path("top.qcow2"), "qcow2", false);
  ASSERT_TRUE(chain) << chain.error().message;
  EXPECT_EQ(chain->formats, (std::vector<std::string>{"qcow2", "qcow2", "raw"}));
  EXPECT_EQ(chain->size, 4u << 20);
  auto formats = chain->formats;
  auto img = open_fds(std::move(chain->fds), formats, false);
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ(our_view(**img), qemu_view("top.qcow2"));
  // A raw file stated as qcow2 is refused; a qcow2 file stated as raw is
  // served as the raw bytes it is (the format is never guessed for the top).
  EXPECT_FALSE(open_chain_fds(path("base.raw"), "qcow2", true));
  auto as_raw = open_chain_fds(path("top.qcow2"), "raw", true);
  ASSERT_TRUE(as_raw);
  EXPECT_EQ(as_raw->formats, std::vector<std::string>{"raw"});
  // Fds and formats that do not match.
  std::vector<UniqueFd> one;
  one.emplace_back(::open(path("top.qcow2").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(open_fds(std::move(one), {"qcow2"}, true));  // its backing file not given
}

TEST_F(Qcow2Test, RawIsServedAsIs) {
  auto data = random_raw("disk.raw", 1 << 20, 6);
  auto img = open_chain(path("disk.raw"), false);
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ(our_view(**img), data);
  std::vector<uint8_t> big(10);
  EXPECT_FALSE((*img)->read((1 << 20) - 5, big));  // past the end
}

}  // namespace
}  // namespace axl::driverdom::blk

namespace axl::driverdom::blk {
namespace {

// cache = "none": O_DIRECT on the open file description, so an aligned read
// works and a misaligned one is refused by the kernel (proof the page cache
// is bypassed), and the raw image still reads what was written.
TEST(DirectIo, SetsODirectAndReportsTheAlignment) {
  char tmpl[] = "/tmp/axl-direct-test.XXXXXX";
  const int raw_fd = ::mkstemp(tmpl);
  ASSERT_GE(raw_fd, 0);
  UniqueFd fd(raw_fd);
  const std::string path = tmpl;
  std::vector<uint8_t> pattern(1 << 16);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(i * 7 + 3);
  ASSERT_EQ(::pwrite(fd.get(), pattern.data(), pattern.size(), 0), ssize_t(pattern.size()));
  ASSERT_EQ(::fsync(fd.get()), 0);
  auto align = use_direct_io(fd.get());
  if (!align) {
    ::unlink(path.c_str());
    GTEST_SKIP() << "the file system of /tmp has no direct I/O: " << align.error().message;
  }
  EXPECT_GE(*align, 512u);
  EXPECT_LE(*align, 4096u);
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFL) & O_DIRECT);
  auto* page = static_cast<uint8_t*>(std::aligned_alloc(4096, 3 * 4096));
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(::pread(fd.get(), page, 4096, 4096), 4096);
  EXPECT_EQ(memcmp(page, pattern.data() + 4096, 4096), 0);
  errno = 0;
  EXPECT_LT(::pread(fd.get(), page, 4096, 4096 + 256), 0) << "a misaligned offset was accepted";
  EXPECT_EQ(errno, EINVAL);
  // Through the raw image layer, as the driver domain reads.
  auto img = open_fds(
      [&] {
        std::vector<UniqueFd> v;
        v.emplace_back(::dup(fd.get()));
        return v;
      }(),
      {"raw"}, false);
  ASSERT_TRUE(img) << img.error().message;
  ASSERT_TRUE((*img)->read(8192, std::span<uint8_t>(page, 2 * 4096)));
  EXPECT_EQ(memcmp(page, pattern.data() + 8192, 2 * 4096), 0);
  std::free(page);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace axl::driverdom::blk
