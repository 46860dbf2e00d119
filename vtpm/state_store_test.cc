#include "vtpm/state_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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
    for (size_t i = 0; i < 32; ++i) key_.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
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
  Key key_;
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
  struct stat sb{};
  ASSERT_EQ(stat(st->path(StateKind::kPermanent).c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  // No temporary file is left behind.
  int n = 0;
  for (auto& e : fs::directory_iterator(dir_)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
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
  Key other = key_;
  other.bytes[0] ^= 0xff;
  auto st2 = StateStore::open(dir_, other);
  r = st2->load(StateKind::kPermanent);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("authentication failed"), std::string::npos);
}

TEST_F(StateStoreTest, VolatileStateIsOneCheckpointFile) {
  auto st = StateStore::open(dir_, key_);
  for (uint8_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(st->save(StateKind::kVolatile, std::vector<uint8_t>(100, i),
                         Durability::kProcessCrash).ok());
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
}  // namespace axl::vtpm
