#include "hypervisor/daemon/qemu_cmdline.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace axl::hv {
namespace {

bool has_pair(const std::vector<std::string>& a, const std::string& k, const std::string& v) {
  for (size_t i = 0; i + 1 < a.size(); ++i)
    if (a[i] == k && a[i + 1] == v) return true;
  return false;
}

TEST(QemuCmdline, SharedMemfdRamAndOnlyVhostUserDevices) {
  QemuSpec s{"qemu",
             "g1",
             "tcg",
             256,
             2,
             "k",
             "i",
             "quiet",
             "c.sock",
             "c.log",
             {{QemuDevice::Kind::kBlk, "d0.sock", {}},
              {QemuDevice::Kind::kNet, "d1.sock", {0x52, 0x54, 0, 1, 2, 3}},
              {QemuDevice::Kind::kBlk, "d2.sock", {}, false, 256, 2},
              {QemuDevice::Kind::kNet, "d3.sock", {0x52, 0x54, 0, 1, 2, 4}, false, 0, 2}}};
  auto a = qemu_argv(s);
  EXPECT_TRUE(has_pair(a, "-object", "memory-backend-memfd,id=mem,size=256M,share=on"));
  EXPECT_TRUE(has_pair(a, "-machine", "q35,memory-backend=mem"));
  EXPECT_TRUE(has_pair(a, "-accel", "tcg"));
  EXPECT_TRUE(has_pair(a, "-smp", "2"));
  EXPECT_NE(std::find(a.begin(), a.end(), "-nodefaults"), a.end());
  EXPECT_TRUE(has_pair(a, "-device", "vhost-user-blk-pci,chardev=vu0,num-queues=1,queue-size=512"));
  EXPECT_TRUE(has_pair(a, "-device", "vhost-user-blk-pci,chardev=vu2,num-queues=2,queue-size=256"));
  EXPECT_TRUE(has_pair(a, "-netdev", "vhost-user,id=net1,chardev=vu1"));
  EXPECT_TRUE(has_pair(a, "-device", "virtio-net-pci,netdev=net1,vectors=0,mac=52:54:00:01:02:03"));
  EXPECT_TRUE(has_pair(a, "-netdev", "vhost-user,id=net3,chardev=vu3,queues=2"));
  EXPECT_TRUE(
      has_pair(a, "-device", "virtio-net-pci,netdev=net3,mq=on,vectors=0,mac=52:54:00:01:02:04"));
  EXPECT_TRUE(has_pair(a, "-append", "console=ttyS0 panic=-1 quiet"));
  for (auto& x : a) {
    EXPECT_EQ(x.find("virtio-blk-pci"), std::string::npos);
    EXPECT_EQ(x.find("-netdev tap"), std::string::npos);
  }
}

TEST(QemuCmdline, GuestAgentPortAndQmpOnlyWhenAsked) {
  QemuSpec s{"qemu", "g1", "tcg", 256, 1, "k", "i", "", "c.sock", "c.log", {}};
  auto plain = qemu_argv(s);
  EXPECT_EQ(std::find(plain.begin(), plain.end(), "-mon"), plain.end());
  s.agent_socket = "/d/agent.sock";
  s.qmp_socket = "/d/qmp.sock";
  auto a = qemu_argv(s);
  EXPECT_TRUE(has_pair(a, "-chardev", "socket,id=qga0,path=/d/agent.sock,server=on,wait=off"));
  EXPECT_TRUE(has_pair(a, "-device", "virtio-serial-pci,id=vser0"));
  EXPECT_TRUE(has_pair(a, "-device",
                       "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"));
  EXPECT_TRUE(has_pair(a, "-chardev", "socket,id=qmp0,path=/d/qmp.sock,server=on,wait=off"));
  EXPECT_TRUE(has_pair(a, "-mon", "chardev=qmp0,mode=control"));
}

// RAM the hypervisor sized: QEMU maps the given file and sizes nothing.
TEST(QemuCmdline, RamFromTheHypervisorsFileWhenGiven) {
  QemuSpec s{"qemu", "g1", "tcg", 256, 1, "k", "i", "", "c.sock", "c.log", {}};
  EXPECT_TRUE(has_pair(qemu_argv(s), "-object", "memory-backend-memfd,id=mem,size=256M,share=on"));
  s.ram_path = "/proc/self/fd/5";
  EXPECT_TRUE(has_pair(qemu_argv(s), "-object",
                       "memory-backend-file,id=mem,mem-path=/proc/self/fd/5,size=256M,share=on"));
}

TEST(QemuCmdline, NoIommuUnlessAsked) {
  QemuSpec s{"qemu",
             "g1",
             "tcg",
             256,
             1,
             "k",
             "i",
             "",
             "c.sock",
             "c.log",
             {{QemuDevice::Kind::kBlk, "d0.sock", {}}}};
  auto a = qemu_argv(s);
  for (auto& x : a) {
    EXPECT_EQ(x.find("iommu"), std::string::npos) << x;
    EXPECT_EQ(x.find("kernel-irqchip"), std::string::npos) << x;
  }
}

TEST(QemuCmdline, GuestIommu) {
  QemuSpec s{"qemu",
             "g1",
             "tcg",
             256,
             1,
             "k",
             "i",
             "quiet",
             "c.sock",
             "c.log",
             {{QemuDevice::Kind::kBlk, "d0.sock", {}},
              {QemuDevice::Kind::kNet, "d1.sock", {0x52, 0x54, 0, 1, 2, 3}}}};
  s.iommu = true;
  auto a = qemu_argv(s);
  EXPECT_TRUE(has_pair(a, "-machine", "q35,memory-backend=mem,kernel-irqchip=split"));
  EXPECT_TRUE(has_pair(a, "-device", "intel-iommu,intremap=on,device-iotlb=on"));
  EXPECT_TRUE(has_pair(a, "-device",
                       "vhost-user-blk-pci,chardev=vu0,num-queues=1,queue-size=512,disable-legacy="
                       "on,iommu_platform=on,ats=on"));
  EXPECT_TRUE(has_pair(a, "-device",
                       "virtio-net-pci,netdev=net1,vectors=0,mac=52:54:00:01:02:03,disable-legacy="
                       "on,iommu_platform=on,ats=on"));
  EXPECT_TRUE(has_pair(a, "-append", "console=ttyS0 panic=-1 intel_iommu=on iommu.strict=1 quiet"));
  // The vIOMMU is created before the devices behind it.
  auto iommu = std::find(a.begin(), a.end(), "intel-iommu,intremap=on,device-iotlb=on");
  auto blk = std::find(a.begin(), a.end(),
                       "vhost-user-blk-pci,chardev=vu0,num-queues=1,queue-size=512,disable-legacy="
                       "on,iommu_platform=on,ats=on");
  EXPECT_LT(iommu, blk);
}

TEST(QemuCmdline, NoTpmUnlessAsked) {
  QemuSpec s{"qemu", "g1", "tcg", 256, 1, "k", "i", "", "c.sock", "c.log", {}};
  for (auto& x : qemu_argv(s)) EXPECT_EQ(x.find("tpm"), std::string::npos) << x;
}

TEST(QemuCmdline, VtpmThroughTheEmulatorBackend) {
  QemuSpec s{"qemu", "g1", "tcg", 256, 1, "k", "i", "quiet", "c.sock", "c.log", {}};
  s.tpm_socket = "/state/dom/g1/vtpm.ctrl";
  auto a = qemu_argv(s);
  EXPECT_TRUE(has_pair(a, "-chardev", "socket,id=chrtpm,path=/state/dom/g1/vtpm.ctrl"));
  EXPECT_TRUE(has_pair(a, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm"));
  EXPECT_TRUE(has_pair(a, "-device", "tpm-crb,tpmdev=tpm0"));
  // The backend connects once and never reconnects: a restarted vTPM
  // inherits the connection instead.
  for (auto& x : a) {
    if (x.find("chrtpm") != std::string::npos) {
      EXPECT_EQ(x.find("reconnect"), std::string::npos) << x;
    }
  }
  // The chardev exists before the tpmdev that names it.
  auto chr = std::find(a.begin(), a.end(), "socket,id=chrtpm,path=/state/dom/g1/vtpm.ctrl");
  auto dev = std::find(a.begin(), a.end(), "emulator,id=tpm0,chardev=chrtpm");
  EXPECT_LT(chr, dev);
}

TEST(QemuCmdline, KernelAppendIsWhatQemuGets) {
  // What the hypervisor measures into PCR 8 is exactly the -append string.
  for (bool iommu : {false, true}) {
    QemuSpec s{"qemu", "g1", "tcg", 256, 1, "k", "i", "quiet x=1", "c.sock", "c.log", {}};
    s.iommu = iommu;
    EXPECT_TRUE(has_pair(qemu_argv(s), "-append", kernel_append("quiet x=1", iommu)));
  }
  EXPECT_EQ(kernel_append("", false), "console=ttyS0 panic=-1");
}

}  // namespace
}  // namespace axl::hv
