// The shared TPM 2.0 codec: framing, nested sizes, bounds.
#include "common/tpm2_mu.h"

#include <gtest/gtest.h>

namespace axl::tpm2 {
namespace {

TEST(Tpm2Mu, PasswordSessionsAreEmptySessions) {
  Bytes a = Command(kCcPcrExtend, {16}, 1).u32(0).finish();
  Bytes b = Command(kCcPcrExtend, {16}, std::vector<Session>{Session{}}).u32(0).finish();
  EXPECT_EQ(a, b);
  // tag, size, code, handle, auth size 9, {RS_PW, nonce 0, attrs 0, hmac 0}, u32 param
  const Bytes want{0x80, 0x02, 0,    0, 0, 0x1f, 0, 0, 0x01, 0x82, 0, 0, 0, 16, 0, 0,
                   0,    9,    0x40, 0, 0, 9,    0, 0, 0,    0,    0, 0, 0, 0,  0};
  EXPECT_EQ(a, want);
  auto h = header(a);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->size, a.size());
}

TEST(Tpm2Mu, NoSessionsTag) {
  Bytes c = Command(kCcStartup, {}, 0).u16(0).finish();
  EXPECT_EQ(c, (Bytes{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0}));
}

TEST(Tpm2Mu, NestedSizesAreFilledIn) {
  Writer w;
  w.open().u8(1).open().u16(2).close().close();
  EXPECT_EQ(w.bytes(), (Bytes{0, 5, 1, 0, 2, 0, 2}));
}

TEST(Tpm2Mu, ReaderNeverReadsPastTheEnd) {
  const Bytes b{0, 4, 1, 2};  // a TPM2B claiming 4 bytes with 2 present
  Reader r(b);
  Bytes v;
  EXPECT_FALSE(r.b2(v));
  Reader r2(b);
  std::span<const uint8_t> s;
  EXPECT_FALSE(r2.b2(s));
  uint64_t u;
  Reader r3(b);
  EXPECT_FALSE(r3.u64(u));
  uint32_t x;
  Reader r4(b);
  EXPECT_TRUE(r4.u32(x));
  EXPECT_EQ(x, 0x00040102u);
  EXPECT_TRUE(r4.done());
}

TEST(Tpm2Mu, ResponseCodeChecksTheSize) {
  auto rc = response_code(error_response(kRcFailure));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, kRcFailure);
  Bytes bad = error_response(kRcFailure);
  bad.push_back(0);
  EXPECT_FALSE(response_code(bad).ok());
  EXPECT_FALSE(response_code(Bytes{0x80, 0x01}).ok());
}

}  // namespace
}  // namespace axl::tpm2
