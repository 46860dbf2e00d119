// The real axolotl-driverdom binary against a test-side hypervisor socket.
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include "common/schema/driver.capnp.h"
#include "driverdom/testing/fake_hypervisor.h"

namespace axl::driverdom {
namespace {

using channel::Op;
using channel::Request;
using channel::RespStatus;
using testing::FakeHypervisor;
using testing::make_channel;
using testing::TestChannel;

constexpr uint32_t kSlots = 8;
constexpr uint32_t kSlotSize = 4096;

struct AttachedAnswer {
  uint32_t device_id = 0;
  bool ok = false;
  std::string error;
};

std::optional<AttachedAnswer> read_attached(FakeHypervisor& hv) {
  auto m = hv.recv();
  if (!m) {
    ADD_FAILURE() << m.error().message;
    return std::nullopt;
  }
  auto root = m->root<schema::DriverMsg>();
  if (root.which() != schema::DriverMsg::ATTACHED) {
    ADD_FAILURE() << "expected Attached";
    return std::nullopt;
  }
  auto a = root.getAttached();
  return AttachedAnswer{a.getDeviceId(), a.getOk(), a.getError().cStr()};
}

void send_blk_attach(FakeHypervisor& hv, uint32_t id, uint32_t slots, uint32_t slot_size,
                     const std::vector<int>& fds, const char* serial = "SER-1",
                     const char* aio = nullptr) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<schema::DriverMsg>().initAttach();
  a.setDeviceId(id);
  a.setSlots(slots);
  a.setSlotSize(slot_size);
  auto blk = a.initBlk();
  blk.setSerial(serial);
  if (aio) blk.setAio(aio);
  ASSERT_TRUE(wire::send(hv.conn(), b, fds).ok());
}

void send_detach(FakeHypervisor& hv, uint32_t id) {
  capnp::MallocMessageBuilder b;
  b.initRoot<schema::DriverMsg>().initDetach().setDeviceId(id);
  ASSERT_TRUE(wire::send(hv.conn(), b).ok());
}

UniqueFd temp_image(size_t bytes) {
  char path[] = "/tmp/axl-driverdom-img-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return UniqueFd();
  ::unlink(path);
  if (::ftruncate(fd, off_t(bytes)) < 0) ::close(fd), fd = -1;
  return UniqueFd(fd);
}

class RuntimeTest : public ::testing::Test {
 protected:
  void start(const char* kind) {
    ASSERT_TRUE(hv_.listening());
    ASSERT_TRUE(hv_.spawn("t0", kind).ok());
    ASSERT_TRUE(hv_.accept().ok());
    auto m = hv_.recv();
    ASSERT_TRUE(m.ok()) << m.error().message;
    auto root = m->root<schema::DriverMsg>();
    ASSERT_EQ(root.which(), schema::DriverMsg::HELLO);
    EXPECT_STREQ(root.getHello().getName().cStr(), "t0");
    EXPECT_EQ(root.getHello().getPid(), hv_.pid());
    EXPECT_EQ(root.getHello().getKind(),
              std::string(kind) == "blk" ? schema::DriverKind::BLK : schema::DriverKind::NET);
  }

  // Attaches a blk device; returns its channel.
  TestChannel attach_blk(uint32_t id, int image_fd) {
    auto ch = make_channel(kSlots, kSlotSize);
    EXPECT_TRUE(ch.ok());
    send_blk_attach(hv_, id, kSlots, kSlotSize,
                    {ch->send_fds.mem.get(), ch->send_fds.req_kick.get(),
                     ch->send_fds.resp_kick.get(), image_fd});
    auto a = read_attached(hv_);
    EXPECT_TRUE(a && a->ok && a->device_id == id) << (a ? a->error : "");
    return std::move(ch).value();
  }

  std::optional<channel::Response> round_trip(channel::HvEnd& hv, const Request& r) {
    hv.push(r);
    hv.kick();
    for (int i = 0; i < 500; ++i) {
      if (!testing::wait_readable(hv.resp_kick_fd(), 10)) continue;
      hv.ack_doorbell();
      auto resp = hv.pop();
      if (resp.ok() && resp->has_value()) return **resp;
    }
    return std::nullopt;
  }

  FakeHypervisor hv_;
};

TEST_F(RuntimeTest, UsageErrorsExitWithTwo) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execl(AXL_DRIVERDOM_BIN, AXL_DRIVERDOM_BIN, "--kind", "scsi", nullptr);
    ::_exit(127);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 2);
}

TEST_F(RuntimeTest, BlkAttachServesRequestsAndExitsWhenHypervisorHangsUp) {
  start("blk");
  UniqueFd img = temp_image(1 << 20);
  ASSERT_TRUE(img.valid());
  TestChannel ch = attach_blk(7, img.get());
  ASSERT_TRUE(ch.hv);

  memcpy(ch.hv->slot(1), "driver domain", 13);
  auto w = round_trip(*ch.hv, Request{1, uint16_t(Op::kBlkWrite), 0, 3, 1 * kSlotSize, 512, 0});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->status, int32_t(RespStatus::kOk));
  char back[13] = {};
  ASSERT_EQ(::pread(img.get(), back, 13, 3 * 512), 13);
  EXPECT_EQ(memcmp(back, "driver domain", 13), 0);

  auto f = round_trip(*ch.hv, Request{2, uint16_t(Op::kBlkFlush), 0, 0, 2 * kSlotSize, 0, 0});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, int32_t(RespStatus::kOk));

  auto id = round_trip(*ch.hv, Request{0, uint16_t(Op::kBlkGetId), 0, 0, 0, 20, 0});
  ASSERT_TRUE(id);
  EXPECT_EQ(id->len, 20u);
  EXPECT_EQ(memcmp(ch.hv->slot(0), "SER-1\0\0", 7), 0);

  // Only the fds it was given: the one leaked across exec is gone.
  std::string leaked = "/proc/" + std::to_string(hv_.pid()) + "/fd/" +
                       std::to_string(FakeHypervisor::kChildLeakedFd);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(leaked)));

  hv_.hang_up();
  EXPECT_EQ(hv_.wait_exit(), std::optional<int>(0));
}

// Each engine a disk can ask for (config::DiskConfig::aio) serves it; on a
// host without io_uring, "io_uring" is refused with the reason and "auto"
// serves in place.
TEST_F(RuntimeTest, BlkServesWithEitherEngine) {
  start("blk");
  UniqueFd img = temp_image(1 << 20);
  // Whether this process (as the unconfined driver it spawns) may make a ring.
  io_uring_params params{};
  UniqueFd probe(int(::syscall(__NR_io_uring_setup, 1, &params)));
  const bool have_ring = probe.valid();
  uint32_t id = 20;
  for (const char* aio : {"sync", "io_uring", "auto"}) {
    auto ch = make_channel(kSlots, kSlotSize);
    ASSERT_TRUE(ch.ok());
    send_blk_attach(hv_, id, kSlots, kSlotSize,
                    {ch->send_fds.mem.get(), ch->send_fds.req_kick.get(),
                     ch->send_fds.resp_kick.get(), img.get()},
                    "SER-1", aio);
    auto a = read_attached(hv_);
    ASSERT_TRUE(a) << aio;
    if (!have_ring && std::string(aio) == "io_uring") {
      EXPECT_FALSE(a->ok);
      EXPECT_NE(a->error.find("has no io_uring"), std::string::npos) << a->error;
      ++id;
      continue;
    }
    ASSERT_TRUE(a->ok) << aio << ": " << a->error;
    memcpy(ch->hv->slot(1), aio, strlen(aio));
    auto w = round_trip(*ch->hv, Request{1, uint16_t(Op::kBlkWrite), 0, id, 1 * kSlotSize, 512, 0});
    ASSERT_TRUE(w);
    EXPECT_EQ(w->status, int32_t(RespStatus::kOk)) << aio;
    memset(ch->hv->slot(2), 0, 512);
    auto r = round_trip(*ch->hv, Request{2, uint16_t(Op::kBlkRead), 0, id, 2 * kSlotSize, 512, 0});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, int32_t(RespStatus::kOk)) << aio;
    EXPECT_EQ(memcmp(ch->hv->slot(2), aio, strlen(aio)), 0) << aio;
    ++id;
  }
}

TEST_F(RuntimeTest, DetachDropsTheDeviceAndItsIdCanBeReused) {
  start("blk");
  UniqueFd img = temp_image(1 << 20);
  TestChannel first = attach_blk(3, img.get());
  send_detach(hv_, 3);
  TestChannel second = attach_blk(3, img.get());  // answered ok: the id was free again
  auto r = round_trip(*second.hv, Request{0, uint16_t(Op::kBlkRead), 0, 0, 0, 512, 0});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, int32_t(RespStatus::kOk));
  // The detached channel gets no service any more.
  first.hv->push(Request{0, uint16_t(Op::kBlkRead), 0, 0, 0, 512, 0});
  first.hv->kick();
  EXPECT_FALSE(testing::wait_readable(first.hv->resp_kick_fd(), 200));
}

TEST_F(RuntimeTest, BadAttachesAreRefusedWithAReason) {
  start("blk");
  UniqueFd img = temp_image(1 << 20);
  auto ch = make_channel(kSlots, kSlotSize);
  ASSERT_TRUE(ch.ok());
  const int mem = ch->send_fds.mem.get(), rk = ch->send_fds.req_kick.get(),
            pk = ch->send_fds.resp_kick.get();

  // Missing the image fd.
  send_blk_attach(hv_, 1, kSlots, kSlotSize, {mem, rk, pk});
  auto a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);
  EXPECT_EQ(a->device_id, 1u);
  EXPECT_NE(a->error.find("fds"), std::string::npos) << a->error;

  // No fds at all.
  send_blk_attach(hv_, 2, kSlots, kSlotSize, {});
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);

  // Geometry that does not match the memfd.
  send_blk_attach(hv_, 3, kSlots * 2, kSlotSize, {mem, rk, pk, img.get()});
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);
  EXPECT_FALSE(a->error.empty());

  // A doorbell that is a regular file.
  send_blk_attach(hv_, 4, kSlots, kSlotSize, {mem, img.get(), pk, img.get()});
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);

  // A serial longer than virtio's 20 bytes.
  send_blk_attach(hv_, 5, kSlots, kSlotSize, {mem, rk, pk, img.get()},
                  "this serial is longer than twenty bytes");
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);

  // An engine that does not exist.
  send_blk_attach(hv_, 5, kSlots, kSlotSize, {mem, rk, pk, img.get()}, "SER-1", "threads");
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);
  EXPECT_NE(a->error.find("attach.blk.aio"), std::string::npos) << a->error;

  // A net attach sent to a blk driver.
  {
    capnp::MallocMessageBuilder b;
    auto at = b.initRoot<schema::DriverMsg>().initAttach();
    at.setDeviceId(6);
    at.setSlots(kSlots);
    at.setSlotSize(kSlotSize);
    const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    at.initNet().setMac(kj::arrayPtr(mac, 6));
    ASSERT_TRUE(wire::send(hv_.conn(), b, {mem, rk, pk}).ok());
    a = read_attached(hv_);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->ok);
    EXPECT_EQ(a->device_id, 6u);
  }

  // After all that, a good attach still works and so does a duplicate check.
  TestChannel good = attach_blk(9, img.get());
  ASSERT_TRUE(good.hv);
  send_blk_attach(hv_, 9, kSlots, kSlotSize, {mem, rk, pk, img.get()});
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);
  EXPECT_NE(a->error.find("already"), std::string::npos) << a->error;
}

TEST_F(RuntimeTest, GarbageAndUnknownMessagesDoNotKillTheDriver) {
  start("blk");
  // Bytes that are not a Cap'n Proto message.
  const char junk[24] = "not capnp at all......";
  ASSERT_EQ(::send(hv_.conn(), junk, sizeof junk, MSG_NOSIGNAL), ssize_t(sizeof junk));
  auto a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);

  // Not word aligned.
  ASSERT_EQ(::send(hv_.conn(), junk, 5, MSG_NOSIGNAL), 5);
  a = read_attached(hv_);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->ok);

  // A well-formed message whose union names a member this driver does not know.
  {
    capnp::MallocMessageBuilder b;
    b.initRoot<schema::DriverMsg>().initDetach().setDeviceId(1);
    auto flat = capnp::messageToFlatArray(b);
    auto bytes = flat.asBytes();
    // Segment table (8 bytes), root pointer (8), then the struct's data word,
    // whose first 16 bits are the union discriminant.
    bytes[16] = 9;
    bytes[17] = 0;
    ASSERT_EQ(::send(hv_.conn(), bytes.begin(), bytes.size(), MSG_NOSIGNAL), ssize_t(bytes.size()));
    a = read_attached(hv_);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->ok);
    EXPECT_NE(a->error.find("unknown"), std::string::npos) << a->error;
  }

  // A driver-to-hypervisor message sent the wrong way, with fds that must be closed.
  {
    capnp::MallocMessageBuilder b;
    b.initRoot<schema::DriverMsg>().initHello().setName("x");
    UniqueFd img = temp_image(4096);
    ASSERT_TRUE(wire::send(hv_.conn(), b, {img.get()}).ok());
    a = read_attached(hv_);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->ok);
  }

  // Attach with no body.
  {
    capnp::MallocMessageBuilder b;
    b.initRoot<schema::DriverMsg>().setAttach(schema::Attach::Reader());
    ASSERT_TRUE(wire::send(hv_.conn(), b).ok());
    a = read_attached(hv_);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->ok);
  }

  // Detach of a device that was never attached: ignored, no answer needed.
  send_detach(hv_, 77);

  // Still alive and serving.
  UniqueFd img = temp_image(1 << 20);
  TestChannel ch = attach_blk(1, img.get());
  ASSERT_TRUE(ch.hv);
  hv_.hang_up();
  EXPECT_EQ(hv_.wait_exit(), std::optional<int>(0));
}

TEST_F(RuntimeTest, NetDriverWithoutTapSwitchesBetweenTwoGuests) {
  start("net");
  auto attach_net = [&](uint32_t id, uint8_t last) {
    auto ch = make_channel(kSlots, kSlotSize);
    EXPECT_TRUE(ch.ok());
    capnp::MallocMessageBuilder b;
    auto at = b.initRoot<schema::DriverMsg>().initAttach();
    at.setDeviceId(id);
    at.setSlots(kSlots);
    at.setSlotSize(kSlotSize);
    const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, last};
    at.initNet().setMac(kj::arrayPtr(mac, 6));
    EXPECT_TRUE(wire::send(hv_.conn(), b,
                           {ch->send_fds.mem.get(), ch->send_fds.req_kick.get(),
                            ch->send_fds.resp_kick.get()})
                    .ok());
    auto a = read_attached(hv_);
    EXPECT_TRUE(a && a->ok) << (a ? a->error : "");
    return std::move(ch).value();
  };
  TestChannel a = attach_net(1, 0xa);
  TestChannel b = attach_net(2, 0xb);

  b.hv->push(Request{4, uint16_t(Op::kNetRxPost), 0, 0, 4 * kSlotSize, kSlotSize, 0});
  b.hv->kick();
  uint8_t frame[12 + 60] = {};
  const uint8_t hdr[] = {0x52, 0x54, 0, 0, 0, 0xb, 0x52, 0x54, 0, 0, 0, 0xa, 0x88, 0xb5};
  memcpy(frame + 12, hdr, sizeof hdr);
  memcpy(frame + 26, "payload", 7);
  memcpy(a.hv->slot(0), frame, sizeof frame);
  auto tx = round_trip(*a.hv, Request{0, uint16_t(Op::kNetTx), 0, 0, 0, sizeof frame, 0});
  ASSERT_TRUE(tx);
  EXPECT_EQ(tx->status, int32_t(RespStatus::kOk));
  ASSERT_TRUE(testing::wait_readable(b.hv->resp_kick_fd(), 2000));
  auto rx = b.hv->pop();
  ASSERT_TRUE(rx.ok() && rx->has_value());
  EXPECT_EQ((*rx)->id, 4u);
  EXPECT_EQ((*rx)->len, sizeof frame);
  frame[10] = 1;  // num_buffers: one buffer holds the whole frame
  EXPECT_EQ(memcmp(b.hv->slot(4), frame, sizeof frame), 0);
}

TEST_F(RuntimeTest, SigtermExitsCleanly) {
  start("net");
  ASSERT_EQ(::kill(hv_.pid(), SIGTERM), 0);
  EXPECT_EQ(hv_.wait_exit(), std::optional<int>(0));
}

}  // namespace
}  // namespace axl::driverdom
