#include "policy/measure.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "policy/golden.h"

namespace axl::policy {
namespace {

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/axl-measure-XXXXXX";
    int fd = mkstemp(tmpl);
    path_ = tmpl;
    ::close(fd);
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Measure, Sha256KnownAnswer) {
  EXPECT_EQ(hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Measure, HexRoundTripAndRejects) {
  auto d = sha256("x");
  auto back = parse_hex(hex(d));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(parse_hex("abc"));
  EXPECT_FALSE(parse_hex(std::string(64, 'g')));
}

TEST(Measure, ReplayIsExtendChain) {
  // PCR extend: new = SHA256(old || digest), starting from 32 zero bytes.
  Event a{9, kEvIpl, sha256("kernel"), "k"}, b{9, kEvIpl, sha256("initrd"), "i"};
  std::string zero(32, '\0');
  auto step1 = sha256(zero + std::string(a.digest.begin(), a.digest.end()));
  auto step2 = sha256(std::string(step1.begin(), step1.end()) +
                      std::string(b.digest.begin(), b.digest.end()));
  auto pcrs = replay({a, b});
  EXPECT_EQ(pcrs[9], step2);
  EXPECT_EQ(pcrs.count(8), 0u);
  // Order matters.
  EXPECT_NE(replay({b, a})[9], step2);
}

TEST(Measure, BootEventsFollowGrubConvention) {
  TempFile k("kernel bytes"), i("initrd bytes");
  auto ev = measure_boot({k.path(), i.path(), "overlay", "console=ttyS0", "name = \"g\"\n"});
  ASSERT_TRUE(ev) << ev.error().message;
  ASSERT_EQ(ev->size(), 5u);
  EXPECT_EQ((*ev)[0].pcr, 9u);
  EXPECT_EQ((*ev)[0].digest, sha256("kernel bytes"));
  EXPECT_EQ((*ev)[1].digest, sha256("initrd bytes"));
  EXPECT_EQ((*ev)[2].digest, sha256("overlay"));
  EXPECT_EQ((*ev)[3].pcr, 8u);
  EXPECT_EQ((*ev)[3].digest, sha256("console=ttyS0"));
  EXPECT_EQ((*ev)[3].data, "kernel_cmdline: console=ttyS0");
  EXPECT_EQ((*ev)[4].digest, sha256("name = \"g\"\n"));
  EXPECT_EQ((*ev)[4].type, kEvEventTag);
  EXPECT_EQ((*ev)[3].type, kEvIpl);
  // Through the binary log and back: the same events, texts included.
  auto back = parse_event_log(encode_event_log(*ev));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, *ev);
  EXPECT_FALSE(measure_boot({"/nonexistent/vmlinuz", i.path(), "", "", ""}));
}

TEST(EventLog, RoundTrip) {
  TempFile k("K"), i("I");
  auto ev = measure_boot({k.path(), i.path(), "", "c", ""});
  ASSERT_TRUE(ev);
  auto log = encode_event_log(*ev);
  auto back = parse_event_log(log);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, *ev);
  EXPECT_EQ(replay(*back), replay(*ev));
}

TEST(EventLog, IplDataIsNulTerminatedAsGrubWritesIt) {
  auto log = encode_event_log({{8, kEvIpl, sha256("b"), "kernel_cmdline: c"}});
  // The event's data size (18, little-endian), then the string and its NUL.
  EXPECT_EQ(log.substr(log.size() - 22), std::string("\x12\0\0\0kernel_cmdline: c\0", 22));
  auto back = parse_event_log(log);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->back().data, "kernel_cmdline: c");
}

TEST(EventLog, RejectsEveryTruncation) {
  auto log =
      encode_event_log({{9, kEvIpl, sha256("a"), "kernel a"}, {8, kEvIpl, sha256("b"), "c"}});
  ASSERT_TRUE(parse_event_log(log));
  for (size_t n = 0; n < log.size(); ++n) {
    auto r = parse_event_log(std::string_view(log).substr(0, n));
    // A cut at an event boundary is a shorter valid log; anything else fails.
    if (r) {
      EXPECT_LT(r->size(), 2u) << "cut at " << n;
    }
  }
}

TEST(EventLog, RejectsBadFields) {
  auto good = encode_event_log({{9, kEvIpl, sha256("a"), "x"}});
  auto bad = good;
  bad[4] = 1;  // header event type
  EXPECT_FALSE(parse_event_log(bad));
  bad = good;
  bad[32] = 'X';  // Spec ID signature
  EXPECT_FALSE(parse_event_log(bad));
  // The first event's PCR index: out of range.
  const size_t ev = good.size() - (4 + 4 + 4 + 2 + 32 + 4 + 2);  // data "x" and its NUL
  bad = good;
  bad[ev] = 24;
  EXPECT_FALSE(parse_event_log(bad));
  bad = good;
  bad[ev + 8] = 0;  // digest count 0
  EXPECT_FALSE(parse_event_log(bad));
  bad = good;
  bad[ev + 12] = 0x04;  // SHA-1: not declared in the header
  EXPECT_FALSE(parse_event_log(bad));
  bad = good;
  bad[ev + 12 + 2 + 32 + 3] = 0x7f;  // event size far past the end
  EXPECT_FALSE(parse_event_log(bad));
}

TEST(Golden, ParsesAndRejects) {
  const std::string k = hex(sha256("k")), i = hex(sha256("i"));
  auto g = parse_golden(
      "[[image]]\nname = \"a\"\nkernel_sha256 = \"" + k + "\"\ninitrd_sha256 = \"" + i + "\"\n",
      "p.toml");
  ASSERT_TRUE(g) << g.error().message;
  ASSERT_EQ(g->size(), 1u);
  EXPECT_EQ((*g)[0].kernel, sha256("k"));
  EXPECT_FALSE((*g)[0].cmdline);
  EXPECT_FALSE(parse_golden("[[image]]\nname = \"a\"\nkernel_sha256 = \"" + k + "\"\n", "p"));
  EXPECT_FALSE(parse_golden(
      "[[image]]\nname = \"a\"\nkernel_sha256 = \"zz\"\ninitrd_sha256 = \"" + i + "\"\n", "p"));
  EXPECT_FALSE(parse_golden("[[image]]\nname = \"a\"\nkernel = \"x\"\n", "p"));
  EXPECT_FALSE(parse_golden("bogus = 1\n", "p"));
  EXPECT_FALSE(parse_golden("[[image\n", "p"));
}

TEST(Golden, CheckNamesTheChangedPcr) {
  TempFile k("K"), i("I");
  GoldenImage g{"img", sha256("K"), sha256("I"), std::nullopt};
  HostRecord host{std::nullopt, sha256("console=ttyS0"), sha256("cfg")};
  auto ev = measure_boot({k.path(), i.path(), "", "console=ttyS0", "cfg"});
  ASSERT_TRUE(ev);
  auto c = check_boot(*ev, g, host);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_TRUE(c[0].pass) << c[0].detail;
  EXPECT_TRUE(c[1].pass) << c[1].detail;

  TempFile i2("I with one byte changed");
  ev = measure_boot({k.path(), i2.path(), "", "console=ttyS0", "cfg"});
  c = check_boot(*ev, g, host);
  EXPECT_TRUE(c[0].pass);
  EXPECT_FALSE(c[1].pass);
  EXPECT_EQ(c[1].pcr, 9u);
  EXPECT_NE(c[1].detail.find("initrd"), std::string::npos) << c[1].detail;

  ev = measure_boot({k.path(), i.path(), "", "console=ttyS0 init=/bin/sh", "cfg"});
  c = check_boot(*ev, g, host);
  EXPECT_FALSE(c[0].pass);
  EXPECT_TRUE(c[1].pass);

  // An extra event is not tolerated.
  ev = measure_boot({k.path(), i.path(), "", "console=ttyS0", "cfg"});
  ev->push_back({9, kEvIpl, sha256("extra"), "extra"});
  EXPECT_FALSE(check_boot(*ev, g, host)[1].pass);
}

}  // namespace
}  // namespace axl::policy
