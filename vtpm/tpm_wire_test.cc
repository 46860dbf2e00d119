#include "vtpm/tpm_wire.h"

#include <gtest/gtest.h>

namespace axl::vtpm::tpm {
namespace {

TEST(TpmWire, CommandHeaderSizeAndPasswordSession) {
  auto c = Command(kCcEvictControl, {kRhOwner, 0x80000000}, 1).u32(0x81000002).finish();
  auto h = header(c);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->tag, kStSessions);
  EXPECT_EQ(h->size, c.size());
  EXPECT_EQ(h->code, kCcEvictControl);
  EXPECT_EQ(c.size(), 10u + 8 + 4 + 9 + 4);
}

TEST(TpmWire, SizedStructuresAreFilledIn) {
  auto c = Command(1, {}, 0).open().u32(7).open().u8(1).close().close().finish();
  ASSERT_EQ(c.size(), 10u + 2 + 4 + 2 + 1);
  EXPECT_EQ(c[10], 0);
  EXPECT_EQ(c[11], 7);  // 4 + 2 + 1
  EXPECT_EQ(c[17], 1);
}

TEST(TpmWire, ReadOnlyCommandsSkipCheckpoints) {
  auto getrandom = Command(kCcGetRandom, {}, 0).u16(16).finish();
  EXPECT_FALSE(may_change_state(getrandom));
  auto quote_pw = Command(kCcQuote, {0x81000002}, 1).u16(0).u16(0x10).u32(0).finish();
  EXPECT_FALSE(may_change_state(quote_pw));
  auto extend = Command(kCcPcrExtend, {16}, 1).u32(0).finish();
  EXPECT_TRUE(may_change_state(extend));
  auto startup = Command(kCcStartup, {}, 0).u16(0).finish();
  EXPECT_TRUE(may_change_state(startup));
}

TEST(TpmWire, SessionOtherThanPasswordMeansStateChanges) {
  // Quote under an HMAC session (handle 0x02000000): its nonces move on.
  Command c(kCcQuote, {0x81000002}, 0);
  auto v = c.finish();
  v[0] = 0x80, v[1] = 0x02;
  for (uint8_t b : {0, 0, 0, 9, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}) v.push_back(b);
  v[5] = static_cast<uint8_t>(v.size());
  EXPECT_TRUE(may_change_state(v));
}

TEST(TpmWire, MalformedCommandsCountAsChanging) {
  std::vector<uint8_t> junk{0x80, 0x02, 0, 0, 0, 12, 0, 0, 0x01, 0x58, 0xff, 0xff};
  EXPECT_TRUE(may_change_state(junk));
  EXPECT_TRUE(may_change_state({}));
}

TEST(TpmWire, ReaderStopsAtTheEnd) {
  std::vector<uint8_t> b{0, 5, 1, 2};
  Reader r(b);
  std::span<const uint8_t> s;
  EXPECT_FALSE(r.b2(s));
  auto e = error_response(kRcCommandSize);
  auto rc = response_code(e);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(rc.value(), kRcCommandSize);
}

}  // namespace
}  // namespace axl::vtpm::tpm

namespace axl::vtpm::tpm {
namespace {

TEST(TpmWire, OnlyPasswordAuthorisedPcrChangesAreReplayable) {
  std::vector<uint8_t> d(32, 7);
  auto ext = Command(kCcPcrExtend, {16}, 1).u32(1).u16(0x000B).raw(d).finish();
  EXPECT_TRUE(replayable(ext));
  EXPECT_TRUE(replayable(Command(kCcPcrReset, {16}, 1).finish()));
  EXPECT_TRUE(replayable(Command(kCcPcrEvent, {16}, 1).b2(d).finish()));
  // An HMAC session (handle 0x02000000): its nonces change with every use.
  auto hmac = ext;
  hmac[18] = 0x02, hmac[19] = hmac[20] = hmac[21] = 0;
  EXPECT_FALSE(replayable(hmac));
  // Not a PCR change, no sessions, a wrong size, truncated.
  EXPECT_FALSE(replayable(Command(kCcGetRandom, {}, 0).u16(8).finish()));
  EXPECT_FALSE(replayable(Command(kCcNvWrite, {1, 2}, 1).finish()));
  auto nosess = ext;
  nosess[1] = 0x01;
  EXPECT_FALSE(replayable(nosess));
  auto longer = ext;
  longer.push_back(0);
  EXPECT_FALSE(replayable(longer));
  EXPECT_FALSE(replayable(std::span<const uint8_t>(ext).first(20)));
  EXPECT_FALSE(replayable({}));
}

}  // namespace
}  // namespace axl::vtpm::tpm
