#include "vtpm/ctrl_protocol.h"

#include <gtest/gtest.h>

namespace axl::vtpm::ctrl {
namespace {

std::vector<uint8_t> msg(uint32_t code, std::vector<uint8_t> payload = {}) {
  std::vector<uint8_t> v;
  put_be32(v, code);
  v.insert(v.end(), payload.begin(), payload.end());
  return v;
}

TEST(CtrlProtocol, ParsesInitWithFlags) {
  auto p = parse(msg(0x02, {0, 0, 0, 1}));
  auto* r = std::get_if<Request>(&p);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(std::get<Init>(*r).flags, kInitFlagDeleteVolatile);
}

TEST(CtrlProtocol, ShortMessageIsRejected) {
  for (size_t n = 0; n < 4; ++n) {
    std::vector<uint8_t> m(n, 0);
    auto p = parse(m);
    auto* r = std::get_if<Rejected>(&p);
    ASSERT_NE(r, nullptr) << n;
    EXPECT_EQ(r->result, kBadParameter);
    EXPECT_EQ(rejection(*r).size(), 4u);
  }
}

TEST(CtrlProtocol, ShortInputIsRejectedAndPaddedToTheResponseSize) {
  auto p = parse(msg(0x11, {0, 0x10}));  // SET_BUFFERSIZE wants 4 bytes
  auto* r = std::get_if<Rejected>(&p);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->result, kBadParameter);
  EXPECT_NE(r->why.find("SET_BUFFERSIZE"), std::string::npos);
  auto rsp = rejection(*r);
  ASSERT_EQ(rsp.size(), 16u);  // result, size, min, max
  EXPECT_EQ(be32(rsp.data()), kBadParameter);
}

TEST(CtrlProtocol, UnknownCommandsAreRejectedWithBadOrdinal) {
  for (uint32_t code : {0u, 0x13u, 0xffu, 0xdeadbeefu}) {
    auto p = parse(msg(code, {1, 2, 3}));
    auto* r = std::get_if<Rejected>(&p);
    ASSERT_NE(r, nullptr) << code;
    EXPECT_EQ(r->result, kBadOrdinal);
    EXPECT_EQ(rejection(*r), result_only(kBadOrdinal));
  }
}

TEST(CtrlProtocol, TrailingBytesOnFixedCommandsAreRejected) {
  auto p = parse(msg(0x01, {0}));
  EXPECT_TRUE(std::holds_alternative<Rejected>(p));
  auto q = parse(msg(0x02, {0, 0, 0, 0, 0}));
  EXPECT_TRUE(std::holds_alternative<Rejected>(q));
}

TEST(CtrlProtocol, LocalityAcceptsOneByteOrQemusPaddedStruct) {
  for (const auto& payload : {std::vector<uint8_t>{3}, std::vector<uint8_t>{3, 0, 0, 0}}) {
    auto p = parse(msg(0x05, payload));
    auto* r = std::get_if<Request>(&p);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(std::get<SetLocality>(*r).locality, 3);
  }
  EXPECT_TRUE(std::holds_alternative<Rejected>(parse(msg(0x05, {5}))));
  EXPECT_TRUE(std::holds_alternative<Rejected>(parse(msg(0x05, {}))));
  EXPECT_TRUE(std::holds_alternative<Rejected>(parse(msg(0x05, {1, 0, 0, 0, 0}))));
}

TEST(CtrlProtocol, StateBlobNeedsItsDeclaredLength) {
  std::vector<uint8_t> hdr;
  put_be32(hdr, 0);  // flags
  put_be32(hdr, 2);  // volatile
  put_be32(hdr, 5);  // length
  auto m = msg(0x0d, hdr);
  m.insert(m.end(), {1, 2});
  auto p = parse(m);
  auto* more = std::get_if<NeedMore>(&p);
  ASSERT_NE(more, nullptr);
  EXPECT_EQ(more->total, 16u + 5);
  m.insert(m.end(), {3, 4, 5});
  p = parse(m);
  auto* r = std::get_if<Request>(&p);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(std::get<SetStateBlob>(*r).data, (std::vector<uint8_t>{1, 2, 3, 4, 5}));
  m.push_back(6);
  EXPECT_TRUE(std::holds_alternative<Rejected>(parse(m)));
}

TEST(CtrlProtocol, OversizedStateBlobIsRejectedBeforeReadingIt) {
  std::vector<uint8_t> hdr;
  put_be32(hdr, 0);
  put_be32(hdr, 1);
  put_be32(hdr, static_cast<uint32_t>(kMaxBlob + 1));
  auto p = parse(msg(0x0d, hdr));
  auto* r = std::get_if<Rejected>(&p);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(r->why.find("exceeds"), std::string::npos);
  put_be32(hdr, 0);
  auto q = parse(msg(0x0d, {0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0}));  // unknown blob type
  EXPECT_TRUE(std::holds_alternative<Rejected>(q));
}

TEST(CtrlProtocol, ResponsesHaveQemusLayouts) {
  EXPECT_EQ(capability(0x1234).size(), 8u);
  auto e = established(0, true);
  ASSERT_EQ(e.size(), 8u);
  EXPECT_EQ(e[4], 1);
  std::vector<uint8_t> data{9, 8, 7};
  auto s = state_blob(0, 0, 10, data);
  ASSERT_EQ(s.size(), 19u);
  EXPECT_EQ(be32(s.data() + 8), 10u);
  EXPECT_EQ(be32(s.data() + 12), 3u);
  EXPECT_EQ(buffer_size(0, 4096, 128, 4096).size(), 16u);
}

}  // namespace
}  // namespace axl::vtpm::ctrl
