#include "hypervisor/platform/accel.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>

namespace axl::hv {
namespace {

TEST(Accel, TcgNeedsNoProbe) {
  auto a = choose_accel("tcg");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(*a, Accel::kTcg);
}

TEST(Accel, BadSettingIsNamed) {
  for (const char* bad : {"", "KVM", "xen", "auto "}) {
    auto a = choose_accel(bad);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_NE(a.error().message.find(std::string("'") + bad + "'"), std::string::npos)
        << a.error().message;
  }
}

TEST(Accel, QemuArgs) {
  EXPECT_STREQ(accel_qemu_arg(Accel::kTcg), "tcg");
  EXPECT_STREQ(accel_qemu_arg(Accel::kKvm), "kvm");
}

TEST(Accel, MissingDeviceIsUnusable) {
  ProbeReport r = probe_kvm("/nonexistent/kvm");
  EXPECT_FALSE(r.usable);
  EXPECT_NE(r.reason.find("/nonexistent/kvm"), std::string::npos) << r.reason;
}

TEST(Accel, NotKvmDeviceIsUnusable) {
  // Opens fine, but every KVM ioctl fails: must be a clean "unusable".
  ProbeReport r = probe_kvm("/dev/null");
  EXPECT_FALSE(r.usable);
  EXPECT_NE(r.reason.find("API version"), std::string::npos) << r.reason;
}

TEST(Accel, ProbeResultSurvivesCallerReapingChildren) {
  // With SIGCHLD ignored the kernel reaps the probe child itself; the answer
  // must still come back from the child.
  auto old = std::signal(SIGCHLD, SIG_IGN);
  ProbeReport r = probe_kvm("/dev/null");
  std::signal(SIGCHLD, old);
  EXPECT_FALSE(r.usable);
  EXPECT_NE(r.reason.find("API version"), std::string::npos) << r.reason;
}

// The probe decides on every machine, so check that the choices agree with it
// rather than what this machine happens to have.
TEST(Accel, AutoAndKvmFollowTheProbe) {
  ProbeReport r = probe_kvm();
  EXPECT_FALSE(r.reason.empty());
  EXPECT_GE(r.seconds, 0.0);
  RecordProperty("kvm_probe", r.reason);
  std::printf("kvm probe: usable=%d seconds=%.4f reason=%s\n", r.usable, r.seconds,
              r.reason.c_str());

  auto a = choose_accel("auto");
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto k = choose_accel("kvm");
  if (r.usable) {
    EXPECT_EQ(*a, Accel::kKvm);
    ASSERT_TRUE(k.ok()) << k.error().message;
    EXPECT_EQ(*k, Accel::kKvm);
  } else {
    EXPECT_EQ(*a, Accel::kTcg);
    ASSERT_FALSE(k.ok());
    EXPECT_NE(k.error().message.find("not usable"), std::string::npos) << k.error().message;
  }
}

}  // namespace
}  // namespace axl::hv
