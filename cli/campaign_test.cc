#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cli/campaign_config.h"
#include "cli/campaign_report.h"
#include "cli/stream_check.h"

namespace axl::campaign {
namespace {

const char* kBase = R"(
seed = 7
injections = 12
report = "out"
[workload]
disk = "blk0"
image = "disk.img"
nic = "net0"
host = "10.214.40.1"
guest = "10.214.40.2"
vtpm = true
[[fault]]
target = "disk"
kind = "crash"
weight = 3
[[fault]]
target = "nic"
kind = "hang"
[[fault]]
target = "vtpm"
kind = "die-in-command"
[[fault]]
target = "hv"
kind = "crash"
weight = 0.5
)";

TEST(CampaignConfig, ParsesAndResolves) {
  auto c = parse(kBase, "c.toml", "/base");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->seed, 7u);
  EXPECT_EQ(c->injections, 12u);
  EXPECT_EQ(c->report_dir, "/base/out");
  EXPECT_EQ(c->image, "/base/disk.img");
  ASSERT_EQ(c->mix.size(), 4u);
  EXPECT_EQ(c->mix[0].label, "disk:crash");
  EXPECT_EQ(c->mix[0].weight, 3.0);
  EXPECT_EQ(c->mix[3].target, Target::kHv);
  EXPECT_TRUE(c->vtpm);
}

std::string with(const std::string& from, const std::string& to) {
  std::string s = kBase;
  auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

TEST(CampaignConfig, RejectsBadInputWithOneLine) {
  struct Case {
    std::string text, want;
  } cases[] = {
      {with("injections = 12", "injections = 0"), "'injections' must be an integer from 1"},
      {with("injections = 12", ""), "missing required key 'injections'"},
      {with("seed = 7", "seed = -1"), "'seed' must be an integer >= 0"},
      {with("seed = 7", "sed = 7"), "unknown key 'sed'"},
      {with("disk = \"blk0\"", ""), "missing required key 'workload.disk'"},
      {with("guest = \"10.214.40.2\"", "guest = \"10.214.41.2\""), "two hosts of one /24"},
      {with("host = \"10.214.40.1\"", "host = \"ten\""), "is not an IPv4 address"},
      {with("kind = \"hang\"", "kind = \"escape-fs\""), "not a campaign fault for target nic"},
      {with("kind = \"die-in-command\"", "kind = \"leak\""),
       "not a campaign fault for target vtpm"},
      {with("target = \"hv\"\nkind = \"crash\"", "target = \"hv\"\nkind = \"hang\""),
       "not a campaign fault for target hv"},
      {with("target = \"disk\"", "target = \"cpu\""), "target must be disk, nic, vtpm"},
      {with("weight = 3", "weight = 0"), "'fault.weight' must be a number above 0"},
      {with("vtpm = true", "vtpm = false"), "a vtpm fault needs workload.vtpm = true"},
      {with("target = \"nic\"\nkind = \"hang\"", "target = \"disk\"\nkind = \"crash\""),
       "fault disk:crash is listed twice"},
      {with("disk = \"blk0\"", "disk = \"blk0\"\nname = \"-x\""), "is not a domain name"},
      {"injections = 1\n[workload]\n", "missing required key 'workload.disk'"},
      {"injections = [", "c.toml:1"},
  };
  for (const Case& k : cases) {
    auto c = parse(k.text, "c.toml", "/base");
    ASSERT_FALSE(c) << k.want;
    EXPECT_NE(c.error().message.find(k.want), std::string::npos) << c.error().message;
    EXPECT_EQ(c.error().message.find('\n'), std::string::npos) << c.error().message;
  }
  auto none =
      parse(with("[[fault]]\ntarget = \"disk\"", "[[nofault]]\ntarget = \"disk\""), "c.toml", "/");
  ASSERT_FALSE(none);
}

TEST(CampaignPlan, SameSeedSameSequenceAndEveryFaultOnce) {
  auto c = parse(kBase, "c.toml", "/base");
  ASSERT_TRUE(c);
  auto a = plan(*c), b = plan(*c);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 12u);
  std::vector<int> seen(c->mix.size(), 0);
  for (size_t i : a) ++seen.at(i);
  for (int n : seen) EXPECT_GE(n, 1);
  c->seed = 8;
  EXPECT_NE(plan(*c), a);
}

TEST(CampaignPlan, FollowsTheWeights) {
  auto c = parse(kBase, "c.toml", "/base");
  ASSERT_TRUE(c);
  c->injections = 9000;
  std::vector<int> seen(c->mix.size(), 0);
  for (size_t i : plan(*c)) ++seen.at(i);
  // Weights 3 : 1 : 1 : 0.5 of 5.5 (plus one each).
  EXPECT_NEAR(seen[0] / 9000.0, 3 / 5.5, 0.02);
  EXPECT_NEAR(seen[1] / 9000.0, 1 / 5.5, 0.02);
  EXPECT_NEAR(seen[3] / 9000.0, 0.5 / 5.5, 0.02);
}

TEST(CampaignPlan, FewerInjectionsThanFaultsAreDrawn) {
  auto c = parse(kBase, "c.toml", "/base");
  ASSERT_TRUE(c);
  c->injections = 2;
  EXPECT_EQ(plan(*c).size(), 2u);
}

Report sample() {
  Report r;
  r.seed = 3;
  r.planned = 3;
  r.duration_s = 10;
  r.guest_kernel_errors = 0;
  for (uint32_t i = 1; i <= 3; ++i) {
    Injection in;
    in.index = i;
    in.fault = i == 3 ? "nic:hang" : "disk:crash";
    in.at_s = i;
    in.detected = in.recovered = true;
    in.detect_ms = 10.0 * i;
    in.outage_ms = 100.0 * i;
    r.injections.push_back(in);
  }
  r.throughput = {{1, 50, 1}, {2, 0, 1}, {3, 60, 2}};
  return r;
}

TEST(CampaignReport, SummarizesPerFault) {
  Report r = sample();
  EXPECT_TRUE(r.passed());
  auto k = summarize(r);
  ASSERT_EQ(k.size(), 2u);
  EXPECT_EQ(k[0].fault, "disk:crash");
  EXPECT_EQ(k[0].injected, 2u);
  EXPECT_EQ(k[0].outage_p50, 100);
  EXPECT_EQ(k[0].outage_max, 200);
  EXPECT_EQ(k[1].detect_p50, 30);
}

TEST(CampaignReport, PercentileIsNearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(percentile(v, 50), 50);
  EXPECT_EQ(percentile(v, 99), 99);
  EXPECT_EQ(percentile(v, 100), 100);
  EXPECT_EQ(percentile({}, 50), -1);
  EXPECT_EQ(percentile({7}, 90), 7);
}

TEST(CampaignReport, ALossOrAMissCannotPass) {
  Report r = sample();
  r.disk_corrupted_bytes = 1;
  r.disk_mismatched_rounds = 1;
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.corrupted_bytes(), 1u);
  r = sample();
  r.injections[1].error = "not detected within 30000 ms";
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.failures(), 1u);
  r = sample();
  r.unexpected_restarts.push_back("net0 restarted");
  EXPECT_FALSE(r.passed());
  r = sample();
  r.guest_kernel_errors = -1;  // the guest never said
  EXPECT_FALSE(r.passed());
  r = sample();
  r.interrupted = true;
  EXPECT_FALSE(r.passed());
  r = sample();
  r.injections.pop_back();  // fewer than planned
  EXPECT_FALSE(r.passed());
}

TEST(CampaignReport, JsonAndSvgCarryEverything) {
  Report r = sample();
  r.injections[0].cause = "crash: killed by \"Aborted\"\n";
  const std::string j = to_json(r);
  EXPECT_NE(j.find("\"schema\": \"axolotl-campaign/1\""), std::string::npos);
  EXPECT_NE(j.find("\"injected\": 3, \"detected\": 3, \"recovered\": 3"), std::string::npos);
  EXPECT_NE(j.find("killed by \\\"Aborted\\\"\\u000a"), std::string::npos);
  EXPECT_NE(j.find("\"passed\": true"), std::string::npos);
  const std::string o = outage_svg(r);
  EXPECT_NE(o.find("data-fault=\"disk:crash\""), std::string::npos);
  EXPECT_NE(o.find("data-fault=\"nic:hang\""), std::string::npos);
  const std::string t = throughput_svg(r);
  EXPECT_NE(t.find("class=\"throughput\""), std::string::npos);
  size_t marks = 0;
  for (size_t at = 0; (at = t.find("class=\"injection\"", at)) != std::string::npos; ++at) ++marks;
  EXPECT_EQ(marks, 3u);
  EXPECT_NE(to_text(r).find("PASSED"), std::string::npos);
}

// The generator restated from guest/tools/axl_tool.c (cmd_gen).
std::vector<uint8_t> gen(uint64_t seed, size_t n) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  std::vector<uint8_t> out;
  while (out.size() < n) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t w = x * 0x2545F4914F6CDD1Dull;
    uint8_t b[8];
    memcpy(b, &w, 8);
    for (int i = 0; i < 8 && out.size() < n; ++i) out.push_back(b[i]);
  }
  return out;
}

TEST(StreamChecker, CountsEveryDifferingByteAcrossReads) {
  auto bytes = gen(9, 10000);
  StreamChecker ok(9);
  ok.feed(bytes.data(), 3);
  ok.feed(bytes.data() + 3, bytes.size() - 3);
  EXPECT_EQ(ok.bytes(), 10000u);
  EXPECT_EQ(ok.corrupted(), 0u);
  bytes[4097] ^= 0x10;
  bytes[9999] ^= 0xff;
  StreamChecker bad(9);
  for (size_t i = 0; i < bytes.size(); i += 1000) bad.feed(bytes.data() + i, 1000);
  EXPECT_EQ(bad.corrupted(), 2u);
  StreamChecker other(10);
  other.feed(gen(9, 64).data(), 64);
  EXPECT_GT(other.corrupted(), 48u);
}

}  // namespace
}  // namespace axl::campaign
