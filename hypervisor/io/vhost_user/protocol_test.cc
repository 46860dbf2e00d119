#include "hypervisor/io/vhost_user/protocol.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace axl::vhost_user {
namespace {

struct Pair : ::testing::Test {
  UniqueFd a, b;
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
    timeval tv{1, 0};
    setsockopt(b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void raw(uint32_t req, uint32_t flags, uint32_t size, const std::vector<uint8_t>& payload) {
    uint32_t h[3] = {req, flags, size};
    ASSERT_EQ(::write(a.get(), h, 12), 12);
    if (!payload.empty()) {
      ASSERT_EQ(::write(a.get(), payload.data(), payload.size()), ssize_t(payload.size()));
    }
  }
};

TEST_F(Pair, RoundTripWithFds) {
  UniqueFd e(::eventfd(0, EFD_CLOEXEC));
  int fds[] = {e.get()};
  ASSERT_TRUE(send_request(a.get(), Req::kSetVringKick, kFlagNeedReply, encode_u64(3), fds).ok());
  auto m = recv_message(b.get());
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->has_value());
  Message& msg = **m;
  EXPECT_EQ(msg.req(), Req::kSetVringKick);
  EXPECT_TRUE(msg.need_reply());
  auto v = parse_vring_fd(msg);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->index, 3u);
  ASSERT_TRUE(v->fd.has_value());
  EXPECT_TRUE(v->fd->valid());
}

TEST_F(Pair, OrderlyCloseIsNotAnError) {
  a.reset();
  auto m = recv_message(b.get());
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
}

TEST_F(Pair, RejectsBadVersionOversizeAndTruncation) {
  raw(1, 0x2, 0, {});
  EXPECT_FALSE(recv_message(b.get()).ok());
  raw(1, 0x1, kMaxPayload + 1, {});
  EXPECT_FALSE(recv_message(b.get()).ok());
  raw(1, 0x1, 8, {1, 2, 3});  // 3 of 8 bytes, then silence: times out
  EXPECT_FALSE(recv_message(b.get()).ok());
}

Message msg(Req r, std::vector<uint8_t> p) {
  Message m;
  m.hdr = {uint32_t(r), kVersion, uint32_t(p.size())};
  m.payload = std::move(p);
  return m;
}

TEST(Parse, SizesAreExact) {
  EXPECT_TRUE(parse_u64(msg(Req::kSetFeatures, encode_u64(5))).ok());
  EXPECT_FALSE(parse_u64(msg(Req::kSetFeatures, {1, 2, 3, 4})).ok());
  EXPECT_FALSE(parse_vring_state(msg(Req::kSetVringNum, std::vector<uint8_t>(12))).ok());
  EXPECT_FALSE(parse_vring_addr(msg(Req::kSetVringAddr, std::vector<uint8_t>(39))).ok());
  VringAddr a{1, 0, 0x1000, 0x2000, 0x3000, 0};
  auto pa = parse_vring_addr(msg(Req::kSetVringAddr, encode_vring_addr(a)));
  ASSERT_TRUE(pa.ok());
  EXPECT_EQ(pa->used, 0x2000u);
  EXPECT_EQ(pa->avail, 0x3000u);
  EXPECT_FALSE(expect_empty(msg(Req::kGetFeatures, {0})).ok());
}

TEST(Parse, MemTable) {
  MemRegion r[2] = {{0, 0x1000, 0x7000, 0}, {0x100000, 0x2000, 0x9000, 0}};
  auto m = msg(Req::kSetMemTable, encode_mem_table(r));
  EXPECT_FALSE(parse_mem_table(m).ok());  // no fds attached
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  auto t = parse_mem_table(m);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[1].guest_phys_addr, 0x100000u);
  // Region count beyond the limit, or disagreeing with the size.
  auto bad = encode_mem_table(r);
  uint32_t n = 9;
  memcpy(bad.data(), &n, 4);
  EXPECT_FALSE(parse_mem_table(msg(Req::kSetMemTable, bad)).ok());
  n = 3;
  memcpy(bad.data(), &n, 4);
  EXPECT_FALSE(parse_mem_table(msg(Req::kSetMemTable, bad)).ok());
  EXPECT_FALSE(parse_mem_table(msg(Req::kSetMemTable, {1, 0})).ok());
}

TEST(Parse, VringFd) {
  auto m = msg(Req::kSetVringCall, encode_u64(2 | kVringNoFd));
  auto v = parse_vring_fd(m);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->fd.has_value());
  auto m2 = msg(Req::kSetVringCall, encode_u64(2));  // fd missing
  EXPECT_FALSE(parse_vring_fd(m2).ok());
  auto m3 = msg(Req::kSetVringCall, encode_u64(1ull << 20));  // reserved bits
  EXPECT_FALSE(parse_vring_fd(m3).ok());
}

TEST(Parse, Config) {
  Config c{0, 4, 0, {1, 2, 3, 4}};
  auto p = parse_config(msg(Req::kSetConfig, encode_config(c)));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->data.size(), 4u);
  auto bad = encode_config(c);
  uint32_t size = 300;
  memcpy(bad.data() + 4, &size, 4);
  EXPECT_FALSE(parse_config(msg(Req::kSetConfig, bad)).ok());
  size = 5;  // says 5, carries 4
  memcpy(bad.data() + 4, &size, 4);
  EXPECT_FALSE(parse_config(msg(Req::kSetConfig, bad)).ok());
}

Message iotlb_message(std::vector<uint8_t> payload) {
  Message m;
  m.hdr = Header{uint32_t(Req::kIotlbMsg), kVersion, uint32_t(payload.size())};
  m.payload = std::move(payload);
  return m;
}

TEST(Iotlb, ParsesUpdateInvalidateAccessFail) {
  IotlbMsg in{0x1000, 0x2000, 0x7f00'0000'0000, 3, IotlbType::kUpdate};
  auto enc = encode_iotlb(in);
  ASSERT_EQ(enc.size(), kIotlbMsgSize);
  auto out = parse_iotlb(iotlb_message(enc));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->iova, 0x1000u);
  EXPECT_EQ(out->size, 0x2000u);
  EXPECT_EQ(out->uaddr, 0x7f00'0000'0000u);
  EXPECT_EQ(out->perm, 3);
  EXPECT_EQ(out->type, IotlbType::kUpdate);
  // Invalidate and access-fail carry no permission.
  EXPECT_TRUE(parse_iotlb(iotlb_message(encode_iotlb({0, 0, 0, 0, IotlbType::kInvalidate}))).ok());
  EXPECT_TRUE(
      parse_iotlb(iotlb_message(encode_iotlb({0x1000, 1, 0, 0, IotlbType::kAccessFail}))).ok());
}

TEST(Iotlb, RejectsShortBadTypeBadPerm) {
  auto enc = encode_iotlb({0x1000, 0x1000, 0xa000, 1, IotlbType::kUpdate});
  // Short and long payloads.
  EXPECT_FALSE(parse_iotlb(iotlb_message({enc.begin(), enc.begin() + 26})).ok());
  EXPECT_FALSE(parse_iotlb(iotlb_message({})).ok());
  auto longer = enc;
  longer.push_back(0);
  EXPECT_FALSE(parse_iotlb(iotlb_message(longer)).ok());
  // Types 0 and 5+ do not exist; a miss never comes from the front-end.
  for (uint8_t t : {0, 1, 5, 255}) {
    auto bad = enc;
    bad[25] = t;
    EXPECT_FALSE(parse_iotlb(iotlb_message(bad)).ok()) << int(t);
  }
  // An update needs RO, WO or RW, and a size.
  for (uint8_t p : {0, 4, 0x80}) {
    auto bad = enc;
    bad[24] = p;
    EXPECT_FALSE(parse_iotlb(iotlb_message(bad)).ok()) << int(p);
  }
  EXPECT_FALSE(
      parse_iotlb(iotlb_message(encode_iotlb({0x1000, 0, 0xa000, 1, IotlbType::kUpdate}))).ok());
  // No fds ride along.
  Message m = iotlb_message(enc);
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_FALSE(parse_iotlb(m).ok());
}

TEST_F(Pair, BackendMissAndItsAck) {
  IotlbMsg miss{0x5000, 4096, 0, 1, IotlbType::kMiss};
  ASSERT_TRUE(send_backend_request(a.get(), BackendReq::kIotlbMsg, true, encode_iotlb(miss)).ok());
  auto m = recv_message(b.get());
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ((*m)->hdr.request, uint32_t(BackendReq::kIotlbMsg));
  EXPECT_TRUE((*m)->need_reply());
  EXPECT_EQ((*m)->payload, encode_iotlb(miss));
  // The front-end's ack: a reply carrying a u64.
  ASSERT_TRUE(send_reply(b.get(), (*m)->hdr, encode_u64(0)).ok());
  auto ack = recv_message(a.get());
  ASSERT_TRUE(ack.ok() && ack->has_value());
  auto v = parse_backend_ack(**ack, BackendReq::kIotlbMsg);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0u);
  // Not a reply, wrong request, wrong size: rejected.
  auto copy = [&] {
    Message c;
    c.hdr = (*ack)->hdr;
    c.payload = (*ack)->payload;
    return c;
  };
  Message notreply = copy();
  notreply.hdr.flags = kVersion;
  EXPECT_FALSE(parse_backend_ack(notreply, BackendReq::kIotlbMsg).ok());
  Message other = copy();
  other.hdr.request = 2;
  EXPECT_FALSE(parse_backend_ack(other, BackendReq::kIotlbMsg).ok());
  Message shorter = copy();
  shorter.payload.resize(4);
  EXPECT_FALSE(parse_backend_ack(shorter, BackendReq::kIotlbMsg).ok());
}

}  // namespace
}  // namespace axl::vhost_user
