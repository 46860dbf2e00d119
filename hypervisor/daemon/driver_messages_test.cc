#include "hypervisor/daemon/driver_messages.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "common/schema/driver.capnp.h"

namespace axl::hv {
namespace {

// A Received as wire::recv would hand it over: the message's words, as flat
// as they were on the socket.
wire::Received received(capnp::MessageBuilder& mb) {
  auto flat = capnp::messageToFlatArray(mb);
  auto words = kj::heapArray<capnp::word>(flat.size());
  memcpy(words.begin(), flat.begin(), flat.asBytes().size());
  return wire::Received(kj::mv(words), {});
}

// One segment of `body` words, whatever they hold: the segment table is the
// only part wire::recv checks before a decoder sees the message.
wire::Received one_segment(const std::vector<uint64_t>& body) {
  auto words = kj::heapArray<capnp::word>(body.size() + 1);
  uint32_t table[2] = {0, uint32_t(body.size())};  // segment count - 1, size in words
  kj::byte* bytes = words.asBytes().begin();
  memcpy(bytes, table, sizeof table);
  if (!body.empty()) memcpy(bytes + 8, body.data(), body.size() * 8);
  return wire::Received(kj::mv(words), {});
}

wire::Received hello(const std::string& name, schema::DriverKind kind = schema::DriverKind::BLK,
                     int32_t pid = 1234, bool standby = false) {
  capnp::MallocMessageBuilder mb;
  auto h = mb.initRoot<schema::DriverMsg>().initHello();
  h.setName(capnp::Text::Reader(name.data(), name.size()));  // embedded NULs too
  h.setKind(kind);
  h.setPid(pid);
  h.setStandby(standby);
  return received(mb);
}

wire::Received attached(uint32_t id, bool ok, const std::string& error = "") {
  capnp::MallocMessageBuilder mb;
  auto a = mb.initRoot<schema::DriverMsg>().initAttached();
  a.setDeviceId(id);
  a.setOk(ok);
  if (!error.empty()) a.setError(error);
  return received(mb);
}

// A rejection is kMalformed with a one-line reason that says `needle`.
template <typename T>
void expect_malformed(const Result<T>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kMalformed) << r.error().message;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
}

TEST(DecodeHello, AGoodHelloIsAValue) {
  auto m = hello("net-0", schema::DriverKind::NET, 4242, true);
  auto h = decode_hello(m);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->name, "net-0");
  EXPECT_EQ(h->kind, config::DriverKind::kNet);
  EXPECT_EQ(h->pid, 4242);
  EXPECT_TRUE(h->standby);
  auto b = hello("blk0");
  auto hb = decode_hello(b);
  ASSERT_TRUE(hb.ok()) << hb.error().message;
  EXPECT_EQ(hb->kind, config::DriverKind::kBlk);
  EXPECT_FALSE(hb->standby);
}

TEST(DecodeHello, AnotherMessageFirstIsRefused) {
  auto a = attached(1, true);
  expect_malformed(decode_hello(a), "attached, not hello");
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::DriverMsg>().initDetach().setDeviceId(1);
  auto d = received(mb);
  expect_malformed(decode_hello(d), "detach, not hello");
}

TEST(DecodeHello, InvalidNamesAreRefused) {
  for (const std::string& bad :
       {std::string(""), std::string("-lead"), std::string("a b"), std::string("x/../y"),
        std::string(33, 'a'), std::string("nul\0x", 5), std::string("new\nline")}) {
    SCOPED_TRACE("name of " + std::to_string(bad.size()) + " bytes");
    auto m = hello(bad);
    auto h = decode_hello(m);
    expect_malformed(h, "name");
  }
  auto huge = hello(std::string(100000, 'a'));
  expect_malformed(decode_hello(huge), "100000 bytes");
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::DriverMsg>().initHello().setPid(5);
  auto none = received(mb);
  expect_malformed(decode_hello(none), "without a name");
}

TEST(DecodeHello, UnknownKindIsRefused) {
  auto m = hello("blk0", static_cast<schema::DriverKind>(7));
  expect_malformed(decode_hello(m), "kind 7");
}

TEST(DecodeHello, PidOutOfRangeIsRefused) {
  for (int32_t pid : {0, -1, int32_t(INT32_MIN), kMaxPid + 1, int32_t(INT32_MAX)}) {
    auto m = hello("blk0", schema::DriverKind::BLK, pid);
    expect_malformed(decode_hello(m), "pid " + std::to_string(pid));
  }
  auto top = hello("blk0", schema::DriverKind::BLK, kMaxPid);
  EXPECT_TRUE(decode_hello(top).ok());
}

TEST(DecodeHello, AHelloWithoutABodyIsRefused) {
  // The union says hello, the pointer is null: reading it would give an
  // all-default hello, which must not pass as one.
  auto m = one_segment({0x0000000100000000ull, 0});  // root: struct, 1 data word, 0 ptrs
  // Data word 0 is the union discriminant (0: hello); there is no pointer.
  expect_malformed(decode_hello(m), "hello without a body");
}

TEST(DecodeHello, TruncatedMessageIsRefused) {
  capnp::MallocMessageBuilder mb;
  auto h = mb.initRoot<schema::DriverMsg>().initHello();
  h.setName("blk0");
  h.setPid(7);
  auto flat = capnp::messageToFlatArray(mb);
  // Cut words off the end and make the segment table agree, so the message
  // itself is well formed but its pointers lead past its end.
  for (size_t keep = 1; keep < flat.size() - 1; ++keep) {
    std::vector<uint64_t> body(keep);
    memcpy(body.data(), flat.begin() + 1, keep * 8);
    auto m = one_segment(body);
    auto r = decode_hello(m);
    EXPECT_FALSE(r.ok()) << "kept " << keep << " words";
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, Errc::kMalformed);
    }
  }
}

TEST(DecodeHello, RandomWordsNeverThrow) {
  std::mt19937_64 rng(20240610);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint64_t> body(1 + rng() % 16);
    for (auto& w : body) w = rng();
    // Half the time a plausible root (a struct of 1 data word and 1 pointer
    // right after it), so the decoder gets past the first read.
    if (i % 2) body[0] = 0x0001000100000000ull;
    auto m = one_segment(body);
    Result<DriverHello> h = make_error("unset");
    ASSERT_NO_THROW(h = decode_hello(m));
    if (h.ok()) {
      EXPECT_TRUE(config::valid_name(h->name));
      EXPECT_GE(h->pid, 1);
      EXPECT_LE(h->pid, kMaxPid);
    } else {
      EXPECT_EQ(h.error().code, Errc::kMalformed);
    }
    ASSERT_NO_THROW((void)decode_attached(m, 1));
    ASSERT_NO_THROW((void)describe(m));
  }
}

TEST(DecodeAttached, GoodAnswers) {
  auto m = attached(3, true);
  auto a = decode_attached(m, 3);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->device_id, 3u);
  EXPECT_TRUE(a->ok);
  auto r = attached(4, false, "attach carries 2 fds, expected 3");
  auto ra = decode_attached(r, 4);
  ASSERT_TRUE(ra.ok()) << ra.error().message;
  EXPECT_FALSE(ra->ok);
  EXPECT_EQ(ra->error, "attach carries 2 fds, expected 3");
  auto bare = attached(5, false);
  auto ba = decode_attached(bare, 5);
  ASSERT_TRUE(ba.ok());
  EXPECT_EQ(ba->error, "no reason given");
}

TEST(DecodeAttached, WrongMessageOrIdIsRefused) {
  auto h = hello("blk0");
  expect_malformed(decode_attached(h, 1), "hello, not attached");
  auto m = attached(2, true);
  expect_malformed(decode_attached(m, 1), "device 2, not 1");
}

TEST(DecodeAttached, LongOrMultilineErrorText) {
  auto at_cap = attached(1, false, std::string(kMaxAttachErrorBytes, 'e'));
  EXPECT_TRUE(decode_attached(at_cap, 1).ok());
  auto over = attached(1, false, std::string(kMaxAttachErrorBytes + 1, 'e'));
  expect_malformed(decode_attached(over, 1), "513 bytes");
  auto lines = attached(1, false, "one\ntwo\x1b[2J");
  auto a = decode_attached(lines, 1);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->error, "one?two?[2J");
}

TEST(DecodeAttached, TruncatedAndGarbageAreRefused) {
  capnp::MallocMessageBuilder mb;
  auto a = mb.initRoot<schema::DriverMsg>().initAttached();
  a.setDeviceId(1);
  a.setError("a reason long enough to need its own words");
  auto flat = capnp::messageToFlatArray(mb);
  for (size_t keep = 1; keep < flat.size() - 1; ++keep) {
    std::vector<uint64_t> body(keep);
    memcpy(body.data(), flat.begin() + 1, keep * 8);
    auto m = one_segment(body);
    auto r = decode_attached(m, 1);
    EXPECT_FALSE(r.ok()) << "kept " << keep << " words";
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, Errc::kMalformed);
    }
  }
  // A root pointer that is a far pointer into a segment that does not exist.
  auto far = one_segment({0x0000000a00000002ull});
  expect_malformed(decode_attached(far, 1), "undecodable attached");
}

}  // namespace
}  // namespace axl::hv
