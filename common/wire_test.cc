// wire::recv's error codes: callers act on the code (retry, stop, drop the
// peer), so each failure must carry the right one.
#include "common/wire.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

#include "common/schema/driver.capnp.h"

namespace axl {
namespace {

struct Pair {
  UniqueFd a, b;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

void send_raw(int fd, const void* p, size_t n) {
  ASSERT_EQ(::send(fd, p, n, MSG_NOSIGNAL), ssize_t(n)) << strerror(errno);
}

TEST(Wire, ErrorsCarryTheirCode) {
  Pair p;
  auto wb = wire::recv(p.b.get(), MSG_DONTWAIT);
  ASSERT_FALSE(wb.ok());
  EXPECT_EQ(wb.error().code, Errc::kWouldBlock);
  EXPECT_EQ(wb.error().message, wire::kWouldBlock);

  auto to = wire::recv_timeout(p.b.get(), 10);
  ASSERT_FALSE(to.ok());
  EXPECT_EQ(to.error().code, Errc::kTimeout);

  const char odd[5] = "abcd";
  send_raw(p.a.get(), odd, sizeof odd);
  auto na = wire::recv(p.b.get());
  ASSERT_FALSE(na.ok());
  EXPECT_EQ(na.error().code, Errc::kMalformed) << na.error().message;

  // A segment table that promises more words than the packet holds.
  uint32_t table[4] = {0, 100, 0, 0};
  send_raw(p.a.get(), table, sizeof table);
  auto st = wire::recv(p.b.get());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::kMalformed) << st.error().message;

  // The bad packets were consumed: a good one still gets through.
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::DriverMsg>().initDetach().setDeviceId(9);
  ASSERT_TRUE(wire::send(p.a.get(), mb).ok());
  auto good = wire::recv(p.b.get());
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->root<schema::DriverMsg>().getDetach().getDeviceId(), 9u);

  p.a.reset();
  auto cl = wire::recv(p.b.get());
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.error().code, Errc::kClosed);
  EXPECT_EQ(cl.error().message, wire::kClosed);

  auto io = wire::recv(-1);
  ASSERT_FALSE(io.ok());
  EXPECT_EQ(io.error().code, Errc::kIo);
}

TEST(Wire, PlainMakeErrorIsOther) {
  EXPECT_EQ(make_error("x").code, Errc::kOther);
  EXPECT_EQ(make_error(Errc::kTimeout, "y").code, Errc::kTimeout);
  EXPECT_EQ(make_error(Errc::kTimeout, "y").message, "y");
}

}  // namespace
}  // namespace axl
