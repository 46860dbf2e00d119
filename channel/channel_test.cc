#include "channel/channel.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace axl::channel {
namespace {

struct Pair {
  HvEnd hv;
  DriverEnd drv;
};

Pair make_pair(uint32_t slots, uint32_t slot_size) {
  auto fds = create(slots, slot_size);
  EXPECT_TRUE(fds.ok());
  auto m1 = Mapping::map(fds->mem.get(), slots, slot_size);
  auto m2 = Mapping::map(fds->mem.get(), slots, slot_size);
  EXPECT_TRUE(m1.ok() && m2.ok());
  UniqueFd rk2(::dup(fds->req_kick.get())), pk2(::dup(fds->resp_kick.get()));
  return Pair{HvEnd(std::move(m1).value(), std::move(fds->req_kick), std::move(fds->resp_kick)),
              DriverEnd(std::move(m2).value(), std::move(rk2), std::move(pk2))};
}

TEST(Channel, GeometryRejectsBadSizes) {
  Geometry g;
  EXPECT_FALSE(compute_geometry(0, 4096, &g));
  EXPECT_FALSE(compute_geometry(3, 4096, &g));
  EXPECT_FALSE(compute_geometry(8, 100, &g));
  EXPECT_FALSE(compute_geometry(8, 2u << 20, &g));
  ASSERT_TRUE(compute_geometry(8, 4096, &g));
  EXPECT_EQ(g.pool_off % 4096, 0u);
  EXPECT_GE(g.total_size, g.pool_off + 8 * 4096);
}

TEST(Channel, MapRejectsWrongAnnouncedGeometry) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  EXPECT_FALSE(Mapping::map(fds->mem.get(), 16, 4096).ok());
  EXPECT_FALSE(Mapping::map(fds->mem.get(), 8, 8192).ok());
  EXPECT_TRUE(Mapping::map(fds->mem.get(), 8, 4096).ok());
}

TEST(Channel, SealedAgainstShrinking) {
  auto fds = create(8, 4096);
  ASSERT_TRUE(fds.ok());
  EXPECT_LT(::ftruncate(fds->mem.get(), 0), 0);
}

TEST(Channel, RequestsAndResponsesTravelInOrderWithPoolData) {
  auto p = make_pair(8, 4096);
  for (uint32_t round = 0; round < 5; ++round) {
    for (uint32_t id = 0; id < 8; ++id) {
      p.hv.slot(id)[0] = uint8_t(id + round);
      p.hv.push(Request{id, uint16_t(Op::kBlkWrite), 0, id * 8, id * 4096, 512, 0});
    }
    p.hv.kick();
    for (uint32_t id = 0; id < 8; ++id) {
      auto r = p.drv.pop();
      ASSERT_TRUE(r.ok());
      ASSERT_TRUE(r->has_value());
      EXPECT_EQ((*r)->id, id);
      EXPECT_EQ((*r)->sector, id * 8u);
      EXPECT_EQ(p.drv.slot(id)[0], uint8_t(id + round));
      p.drv.push(Response{id, 0, 0, 0});
    }
    auto none = p.drv.pop();
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
    p.drv.kick();
    for (uint32_t id = 0; id < 8; ++id) {
      auto r = p.hv.pop();
      ASSERT_TRUE(r.ok() && r->has_value());
      EXPECT_EQ((*r)->id, id);
    }
  }
}

TEST(Channel, CorruptedResponseIndexIsAnError) {
  auto p = make_pair(8, 4096);
  // A hostile driver advances its producer index past the ring size.
  p.drv.mapping().header()->resp.head.store(100);
  auto r = p.hv.pop();
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace axl::channel
