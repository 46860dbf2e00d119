// Golden values from a disk image (policy/boot_image.h).  The file system
// readers are checked on a small GPT disk that sfdisk, mtools and mkfs.ext4
// build (skipped, saying which, where those tools are absent); their
// robustness against hostile images is fuzz/boot_image_fuzz.cc's.
#include "policy/boot_image.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "policy/attest.h"

namespace axl::policy {
namespace {

namespace fs = std::filesystem;

Result<std::string> no_file(const std::string& p) { return make_error("no " + p); }

TEST(GrubEvents, CommandsAsRunAndFilesAsRead) {
  const std::string cfg =
      "set timeout=0\n"
      "# a comment\n"
      "if [ \"$grub_platform\" = efi ]; then\n"
      "  linuxefi /k root=x  ro\n"
      "  initrdefi /i\n"
      "else\n"
      "  linux /k\n"
      "fi\n"
      "boot\n";
  auto ev = grub_events(cfg, "/boot/grub/grub.cfg", "efi", [](const std::string& p) {
    return Result<std::string>("contents of " + p);
  });
  ASSERT_TRUE(ev) << ev.error().message;
  std::vector<std::string> got;
  for (const auto& e : *ev) got.push_back(std::to_string(e.pcr) + " " + e.data);
  EXPECT_EQ(got,
            (std::vector<std::string>{
                "9 /boot/grub/grub.cfg", "8 grub_cmd: set timeout=0", "8 grub_cmd: [ efi = efi ]",
                "8 grub_cmd: linuxefi /k root=x ro", "9 /k", "8 kernel_cmdline: /k root=x ro",
                "8 grub_cmd: initrdefi /i", "9 /i", "8 grub_cmd: boot"}));
  // The digest is over the command, not the prefix; a file's over its bytes.
  EXPECT_EQ((*ev)[1].digest, sha256("set timeout=0"));
  EXPECT_EQ((*ev)[4].digest, sha256("contents of /k"));
  EXPECT_EQ((*ev)[0].digest, sha256(cfg));
}

TEST(GrubEvents, TheOtherBranchOnBios) {
  auto ev =
      grub_events("if [ $grub_platform = efi ]; then\nlinuxefi /a\nelse\nlinux /b\nfi\n", "/g",
                  "pc", [](const std::string& p) { return Result<std::string>(std::string(p)); });
  ASSERT_TRUE(ev) << ev.error().message;
  EXPECT_EQ(ev->at(1).data, "grub_cmd: [ pc = efi ]");
  EXPECT_EQ(ev->at(2).data, "grub_cmd: linux /b");
}

TEST(GrubEvents, WhatItDoesNotUnderstandIsALineNamedError) {
  for (auto [cfg, want] : {
           std::pair{"set a=1\nmenuentry 'x' {\n",
                     "grub.cfg line 2: 'menuentry' is not understood"},
           std::pair{"if true; then\nfi\n", "grub.cfg line 1: only '[ A = B ]'"},
           std::pair{"fi\n", "grub.cfg line 1: 'fi' without 'if'"},
           std::pair{"if [ a = a ]; then\n", "grub.cfg: 'if' without 'fi'"},
           std::pair{"echo \"open\n", "grub.cfg line 1: unterminated quote"},
           std::pair{"linux /missing\n", "grub.cfg line 1: no /missing"},
       }) {
    auto ev = grub_events(cfg, "/g", "efi", no_file);
    ASSERT_FALSE(ev) << cfg;
    EXPECT_NE(ev.error().message.find(want), std::string::npos) << ev.error().message;
  }
}

// A minimal PE32+ image: headers, one section, a 16-byte certificate table.
std::string tiny_pe(bool with_cert) {
  std::string pe(0x400, '\0');
  pe[0] = 'M';
  pe[1] = 'Z';
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) pe[at + size_t(i)] = char(v >> (8 * i));
  };
  auto put16 = [&](size_t at, uint16_t v) {
    pe[at] = char(v);
    pe[at + 1] = char(v >> 8);
  };
  put32(0x3C, 0x80);
  memcpy(&pe[0x80], "PE\0\0", 4);
  const size_t coff = 0x84, opt = coff + 20;
  put16(coff + 2, 1);           // one section
  put16(coff + 16, 240);        // SizeOfOptionalHeader (PE32+, 16 directories)
  put16(opt, 0x20B);            // PE32+
  put32(opt + 60, 0x200);       // SizeOfHeaders
  put32(opt + 64, 0xDEADBEEF);  // CheckSum: not hashed
  put32(opt + 108, 16);
  const size_t sec = opt + 240;
  put32(sec + 16, 0x200);  // SizeOfRawData
  put32(sec + 20, 0x200);  // PointerToRawData
  for (size_t i = 0x200; i < 0x400; ++i) pe[i] = char(i * 7);
  if (with_cert) {
    put32(opt + 112 + 32, 0x400);  // the certificate table, at the end
    put32(opt + 112 + 36, 16);
    pe += std::string(16, 'C');
  }
  return pe;
}

TEST(Authenticode, SkipsTheChecksumAndTheCertificates) {
  const std::string pe = tiny_pe(false);
  // By hand: everything but the checksum (no certificate directory entry
  // set, but it is present: its 8 bytes are skipped too).
  const size_t checksum = 0x84 + 20 + 64, certdir = 0x84 + 20 + 112 + 32;
  std::string expect = pe.substr(0, checksum) + pe.substr(checksum + 4, certdir - checksum - 4) +
                       pe.substr(certdir + 8, 0x200 - certdir - 8) + pe.substr(0x200, 0x200);
  auto d = authenticode_sha256(pe);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(*d, sha256(expect));
  // Neither the checksum nor a signature changes it.
  std::string other = pe;
  other[0x84 + 20 + 64] ^= 1;
  EXPECT_EQ(authenticode_sha256(other).value(), *d);
  auto signed_pe = authenticode_sha256(tiny_pe(true));
  ASSERT_TRUE(signed_pe) << signed_pe.error().message;
  EXPECT_EQ(*signed_pe, *d);
  // A code byte does.
  other = pe;
  other[0x300] ^= 1;
  EXPECT_NE(authenticode_sha256(other).value(), *d);
}

TEST(Authenticode, RefusesWhatIsNotPe) {
  EXPECT_FALSE(authenticode_sha256("MZ"));
  EXPECT_FALSE(authenticode_sha256(std::string(0x100, 'x')));
  std::string pe = tiny_pe(false);
  pe[0x84 + 20 + 240 + 20] = char(0xFF);  // a section beyond the file
  EXPECT_FALSE(authenticode_sha256(pe));
}

bool have(const char* tool) {
  return system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

// A 64 MiB GPT disk: an ESP (FAT) with EFI/BOOT/BOOTX64.EFI and an ext4
// root with /boot/grub/grub.cfg, a kernel and an initramfs.
class DiskImage : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"sfdisk", "mformat", "mmd", "mcopy", "mkfs.ext4"})
      if (!have(t)) GTEST_SKIP() << t << " not installed (scripts/setup)";
    dir_ = fs::temp_directory_path() / ("axl-bootimg-test-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "root/boot/grub");
    write(dir_ / "BOOTX64.EFI", tiny_pe(false));
    write(dir_ / "root/boot/grub/grub.cfg",
          "set timeout=0\nlinuxefi /boot/vmlinuz ro console=ttyS0\ninitrdefi /boot/initrd\nboot\n");
    kernel_ = std::string(300000, 'k') + "end";
    write(dir_ / "root/boot/vmlinuz", kernel_);
    write(dir_ / "root/boot/initrd", std::string(5000, 'i'));
    const std::string d = dir_.string();
    const std::string script =
        "set -e; cd " + d +
        "; truncate -s 64M disk.raw; "
        "printf 'label: gpt\\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\\n"
        "start=18432, size=110592, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\\n' | sfdisk -q "
        "disk.raw; "
        "mformat -i disk.raw@@1048576 -T 16384 -h 32 -s 32 ::; "
        "mmd -i disk.raw@@1048576 ::/EFI ::/EFI/BOOT; "
        "mcopy -i disk.raw@@1048576 BOOTX64.EFI ::/EFI/BOOT/; "
        "mkfs.ext4 -q -F -d root -E offset=9437184 disk.raw 55296k";
    ASSERT_EQ(system(("bash -c \"" + script + "\" >/dev/null 2>&1").c_str()), 0) << script;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  static void write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }
  fs::path dir_;
  std::string kernel_;
};

TEST_F(DiskImage, GptFatAndExt4AsTheToolsWroteThem) {
  auto ev = measure_firmware_image((dir_ / "disk.raw").string(), "raw");
  ASSERT_TRUE(ev) << ev.error().message;
  ASSERT_EQ(ev->size(), 3u + 8u);
  EXPECT_EQ((*ev)[2].type, kEvEfiBootServicesApplication);
  EXPECT_EQ((*ev)[2].digest, authenticode_sha256(tiny_pe(false)).value());
  EXPECT_EQ((*ev)[6].data, "/boot/vmlinuz");
  EXPECT_EQ((*ev)[6].digest, sha256(kernel_));
  EXPECT_EQ((*ev)[7].data, "kernel_cmdline: /boot/vmlinuz ro console=ttyS0");
}

TEST_F(DiskImage, MissingPiecesAreNamed) {
  fs::remove(dir_ / "root/boot/initrd");
  ASSERT_EQ(
      system(("bash -c \"cd " + dir_.string() +
              " && mkfs.ext4 -q -F -d root -E offset=9437184 disk.raw 55296k\" >/dev/null 2>&1")
                 .c_str()),
      0);
  auto ev = measure_firmware_image((dir_ / "disk.raw").string(), "raw");
  ASSERT_FALSE(ev);
  EXPECT_NE(ev.error().message.find("grub.cfg line 3: ext4: no 'initrd'"), std::string::npos)
      << ev.error().message;
  auto none = measure_firmware_image((dir_ / "BOOTX64.EFI").string(), "raw");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().message.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace axl::policy
