#include "vtpm/state_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace axl::vtpm {
namespace {

namespace fs = std::filesystem;

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-vtpm-store.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (size_t i = 0; i < 32; ++i) key_.host.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<uint8_t> read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
  }
  void write(const std::string& p, const std::vector<uint8_t>& b) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  std::string dir_;
  VtpmKey key_{{}, "vm1"};
};

std::vector<uint8_t> secret() {
  std::string s = "TPM-STATE-SECRET-0123456789-TPM-STATE-SECRET";
  return {s.begin(), s.end()};
}

TEST_F(StateStoreTest, RoundTripsAndHoldsNoPlaintext) {
  auto st = StateStore::open(dir_, key_);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(st->save(StateKind::kPermanent, secret(), Durability::kPowerLoss).ok());
  auto back = st->load(StateKind::kPermanent);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_TRUE(back.value().has_value());
  EXPECT_EQ(*back.value(), secret());
  auto file = read(st->path(StateKind::kPermanent));
  EXPECT_EQ(file.size(), kStateHeaderSize + secret().size());
  auto s = secret();
  EXPECT_EQ(std::search(file.begin(), file.end(), s.begin(), s.begin() + 12), file.end());
  struct stat sb {};
  ASSERT_EQ(stat(st->path(StateKind::kPermanent).c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  // No temporary file is left behind.
  int n = 0;
  for (auto& e : fs::directory_iterator(dir_)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
}

TEST_F(StateStoreTest, EachPermanentSaveIsOneGenerationNewerAndReported) {
  std::vector<uint32_t> reported;
  {
    auto st = StateStore::open(dir_, key_);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->generation(), 0u);
    st->on_saved([&](uint32_t g) { reported.push_back(g); });
    const std::vector<uint8_t> a(100, 1);
    ASSERT_TRUE(st->save(StateKind::kPermanent, a, Durability::kProcessCrash).ok());
    ASSERT_TRUE(st->save(StateKind::kPermanent, a, Durability::kProcessCrash).ok());
    EXPECT_EQ(st->generation(), 2u);
  }
  EXPECT_EQ(reported, (std::vector<uint32_t>{1, 2}));
  // Reopened: the generation is read back and counting goes on.
  auto st = StateStore::open(dir_, key_);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->generation(), 2u);
  ASSERT_TRUE(
      st->save(StateKind::kPermanent, std::vector<uint8_t>(3, 2), Durability::kPowerLoss).ok());
  EXPECT_EQ(StateStore::open(dir_, key_)->generation(), 3u);
  // The generation is authenticated: raised by hand, the file no longer opens.
  const std::string p = st->path(StateKind::kPermanent);
  auto bytes = read(p);
  bytes[15] = 0x7f;
  write(p, bytes);
  EXPECT_FALSE(StateStore::open(dir_, key_)->load(StateKind::kPermanent).ok());
}

TEST_F(StateStoreTest, MissingFileIsNotAnError) {
  auto st = StateStore::open(dir_, key_);
  auto r = st->load(StateKind::kVolatile);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value().has_value());
}

TEST_F(StateStoreTest, EveryFlippedByteIsRefusedAndTheFileKept) {
  auto st = StateStore::open(dir_, key_);
  ASSERT_TRUE(st->save(StateKind::kPermanent, secret(), Durability::kPowerLoss).ok());
  const std::string p = st->path(StateKind::kPermanent);
  const auto good = read(p);
  for (size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0x01;
    write(p, bad);
    auto r = st->load(StateKind::kPermanent);
    ASSERT_FALSE(r.ok()) << "byte " << i;
    EXPECT_NE(r.error().message.find(p), std::string::npos);
    EXPECT_EQ(read(p), bad) << "refusal must leave the file untouched";
  }
}

TEST_F(StateStoreTest, TruncatedAndWrongKindAndWrongKeyAreRefusedWithReasons) {
  auto st = StateStore::open(dir_, key_);
  ASSERT_TRUE(st->save(StateKind::kPermanent, secret(), Durability::kPowerLoss).ok());
  const auto good = read(st->path(StateKind::kPermanent));

  auto cut = good;
  cut.resize(good.size() - 1);
  write(st->path(StateKind::kPermanent), cut);
  auto r = st->load(StateKind::kPermanent);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("length mismatch"), std::string::npos) << r.error().message;

  cut.resize(20);
  write(st->path(StateKind::kPermanent), cut);
  r = st->load(StateKind::kPermanent);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos);

  // A permanent file put where the volatile one belongs.
  write(st->path(StateKind::kVolatile), good);
  r = st->load(StateKind::kVolatile);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("volatile checkpoint"), std::string::npos) << r.error().message;

  write(st->path(StateKind::kPermanent), good);
  VtpmKey other = key_;
  other.host.bytes[0] ^= 0xff;
  auto st2 = StateStore::open(dir_, other);
  r = st2->load(StateKind::kPermanent);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("authentication failed"), std::string::npos);
}

// One vTPM's permanent state copied into another's state dir would give
// that guest this one's EK and seeds: it must not open there.
TEST_F(StateStoreTest, AnotherVtpmsStateIsRefusedAndKept) {
  auto st = StateStore::open(dir_, key_);
  ASSERT_TRUE(st->save(StateKind::kPermanent, secret(), Durability::kPowerLoss).ok());
  const std::string p = st->path(StateKind::kPermanent);
  const auto good = read(p);
  for (const char* id : {"vm2", "vm", "vm1.", "VM1"}) {
    auto other = StateStore::open(dir_, VtpmKey{key_.host, id});
    auto r = other->load(StateKind::kPermanent);
    ASSERT_FALSE(r.ok()) << id;
    const std::string& why = r.error().message;
    EXPECT_NE(why.find("sealed for another vTPM or with another key"), std::string::npos) << why;
    EXPECT_NE(why.find(p), std::string::npos) << why;
    EXPECT_NE(why.find(std::string("'") + id + "'"), std::string::npos) << why;
    EXPECT_EQ(why.find('\n'), std::string::npos) << "one line";
    EXPECT_EQ(read(p), good) << "a refusal must leave the file as it was";
  }
  // The binding is to the id and the host key, not to the directory: the
  // same vTPM's file opens wherever it is put.
  const std::string moved = dir_ + "/moved";
  fs::create_directory(moved);
  write(moved + "/permanent.state", good);
  auto again = StateStore::open(moved, key_);
  auto r = again->load(StateKind::kPermanent);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r.value(), secret());
}

// derive_key: the same inputs give the same key, a different label or id
// another one.
TEST_F(StateStoreTest, KeysAreBoundToLabelAndId) {
  const auto a = derive_key(key_, "l", {});
  EXPECT_EQ(derive_key(key_, "l", {}), a);
  EXPECT_NE(derive_key(key_, "m", {}), a);
  EXPECT_NE(derive_key(VtpmKey{key_.host, "vm2"}, "l", {}), a);
  // label || 0 || id: moving a byte between label and id changes the key.
  EXPECT_NE(derive_key(VtpmKey{key_.host, "1"}, "lvm", {}), derive_key(key_, "l", {}));
  const uint8_t salt[32] = {1};
  EXPECT_NE(derive_key(key_, "l", salt), a);
  EXPECT_NE(a, key_.host.bytes) << "nothing is sealed under the host key itself";
}

// What version 1 wrote: the same header, sealed under the host key itself,
// so valid in every vTPM of the host.
std::vector<uint8_t> seal_v1(const Key& key, std::span<const uint8_t> plain) {
  std::vector<uint8_t> out(kStateHeaderSize + plain.size());
  uint8_t* h = out.data();
  std::memcpy(h, "AXLVTPMS", 8);
  h[9] = 1;  // version 1
  h[11] = static_cast<uint8_t>(StateKind::kPermanent);
  h[18] = static_cast<uint8_t>(plain.size() >> 8);  // length (< 64 KiB here)
  h[19] = static_cast<uint8_t>(plain.size());
  EXPECT_EQ(RAND_bytes(h + 20, 12), 1);
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  int n = 0;
  EXPECT_TRUE(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), nullptr, key.bytes.data(), h + 20) == 1 &&
              EVP_EncryptUpdate(c, nullptr, &n, h, 32) == 1 &&
              EVP_EncryptUpdate(c, h + kStateHeaderSize, &n, plain.data(),
                                static_cast<int>(plain.size())) == 1 &&
              EVP_EncryptFinal_ex(c, h + kStateHeaderSize, &n) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, h + 32) == 1);
  EVP_CIPHER_CTX_free(c);
  return out;
}

TEST_F(StateStoreTest, UnboundVersion1StateIsRefused) {
  auto st = StateStore::open(dir_, key_);
  const std::string p = st->path(StateKind::kPermanent);
  const auto v1 = seal_v1(key_.host, secret());
  write(p, v1);
  auto r = st->load(StateKind::kPermanent);
  ASSERT_FALSE(r.ok()) << "an unbound file must not open, not even under its own host key";
  const std::string& why = r.error().message;
  EXPECT_NE(why.find("unbound state of an older axolotl-vtpm"), std::string::npos) << why;
  EXPECT_NE(why.find("empty the state dir"), std::string::npos) << why;
  EXPECT_NE(why.find(p), std::string::npos) << why;
  EXPECT_EQ(why.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(read(p), v1) << "no migration: the file is left as it was";
}

TEST_F(StateStoreTest, VolatileStateIsOneCheckpointFile) {
  auto st = StateStore::open(dir_, key_);
  for (uint8_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(
        st->save(StateKind::kVolatile, std::vector<uint8_t>(100, i), Durability::kProcessCrash)
            .ok());
  }
  int n = 0;
  for (auto& e : fs::directory_iterator(dir_)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
  EXPECT_EQ(st->path(StateKind::kVolatile), dir_ + "/volatile.ckpt");
  auto st2 = StateStore::open(dir_, key_);
  auto r = st2->load(StateKind::kVolatile);
  ASSERT_TRUE(r.ok() && r.value());
  EXPECT_EQ(*r.value(), std::vector<uint8_t>(100, 3));
  ASSERT_TRUE(st2->remove(StateKind::kVolatile).ok());
  r = st2->load(StateKind::kVolatile);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value().has_value());
}

TEST_F(StateStoreTest, SealingUsesAFreshNonceEachTime) {
  auto a = seal(key_, StateKind::kPermanent, secret());
  auto b = seal(key_, StateKind::kPermanent, secret());
  EXPECT_NE(a, b);
  auto back = open_sealed(key_, StateKind::kPermanent, b, "b");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back.value(), secret());
}

TEST_F(StateStoreTest, KeyFileRules) {
  const std::string raw = dir_ + "/../axl-vtpm-key-" + std::to_string(getpid());
  write(raw, std::vector<uint8_t>(32, 0xab));
  auto k = load_key_file(raw, dir_);
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->bytes[31], 0xab);

  std::string hex(64, 'c');
  hex += "\n";
  write(raw, {hex.begin(), hex.end()});
  k = load_key_file(raw, dir_);
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->bytes[0], 0xcc);

  write(raw, std::vector<uint8_t>(31, 1));
  EXPECT_FALSE(load_key_file(raw, dir_).ok());
  fs::remove(raw);

  const std::string inside = dir_ + "/key";
  write(inside, std::vector<uint8_t>(32, 1));
  auto bad = load_key_file(inside, dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("inside the state dir"), std::string::npos);
  EXPECT_FALSE(load_key_file(dir_ + "/absent", dir_).ok());
}

}  // namespace
// The instance key, against OpenSSL's command line on the same inputs:
// openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:00...00
//   -kdfopt hexinfo:<"axolotl-vtpm instance" NUL "vs"> HKDF
TEST(DeriveInstanceKey, IsHkdfOfTheHostKeyAndTheId) {
  const Key zero{};
  const Key k = derive_instance_key(zero, "vs");
  const std::array<uint8_t, 32> want = {0xA2, 0xF2, 0xBF, 0x03, 0xB1, 0xD6, 0x8B, 0x8A,
                                        0xA4, 0xCF, 0x3E, 0xF0, 0x6A, 0xD7, 0xDA, 0xD8,
                                        0x5F, 0x0E, 0x3A, 0xF9, 0x24, 0xEE, 0xEC, 0x63,
                                        0xE3, 0xCA, 0x14, 0x34, 0x29, 0x88, 0xD1, 0xCD};
  EXPECT_EQ(k.bytes, want);
  EXPECT_NE(derive_instance_key(zero, "vt").bytes, want);
  EXPECT_NE(k.bytes, zero.bytes);
}

}  // namespace axl::vtpm
