// A vhost-user session kept across the death of the process serving it
// (session.h): a successor resumes it from what was kept, the front-end's
// connection never closes, and what was in flight is served exactly once.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "common/fs.h"
#include "hypervisor/io/testing/frontend.h"
#include "hypervisor/io/vhost_user/server.h"

namespace axl::vhost_user {
namespace {

using F = testing::Frontend;

// Pops every chain; completes them only when `complete` is set (else they
// stay in flight, as requests a driver had not answered yet).
class Device : public Backend {
 public:
  explicit Device(bool complete) : complete_(complete) {}
  uint64_t features() const override {
    return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFRingEventIdx);
  }
  uint32_t queue_count() const override { return 2; }
  void queue_started(uint32_t q, virtio::Virtqueue& vq) override { vq_[q] = &vq; }
  void queue_stopped(uint32_t q) override { vq_[q] = nullptr; }
  void queue_kicked(uint32_t q) override {
    virtio::Virtqueue* vq = vq_[q];
    while (vq) {
      auto p = vq->pop();
      if (!p.chain) break;
      std::lock_guard<std::mutex> g(mu_);
      popped_.push_back(p.chain->head);
      if (complete_) vq->push(p.chain->head, 7);
    }
    if (vq) vq->notify();
  }
  std::vector<uint16_t> popped() {
    std::lock_guard<std::mutex> g(mu_);
    return popped_;
  }

 private:
  bool complete_;
  virtio::Virtqueue* vq_[2] = {nullptr, nullptr};
  std::mutex mu_;
  std::vector<uint16_t> popped_;
};

// Keeps copies of the fds and the journal, as the daemon's fd store and
// state dir would; frozen() stands for the process's death (nothing it
// does on the way out, like forget(), reaches what was kept).
class Keeper : public SessionKeeper {
 public:
  void keep_fd(const std::string& name, int fd) override {
    std::lock_guard<std::mutex> g(mu_);
    if (!frozen_) fds_[name].reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  }
  void drop_fd(const std::string& name) override {
    std::lock_guard<std::mutex> g(mu_);
    if (!frozen_) fds_.erase(name);
  }
  void keep_record(const KvRecord& rec) override {
    std::lock_guard<std::mutex> g(mu_);
    if (!frozen_) record_ = rec;
  }
  void forget() override {
    std::lock_guard<std::mutex> g(mu_);
    if (!frozen_) fds_.clear(), record_.clear();
  }
  KeptSession die() {
    std::lock_guard<std::mutex> g(mu_);
    frozen_ = true;
    KeptSession k;
    k.listen = std::move(fds_["listen"]);
    k.conn = std::move(fds_["conn"]);
    fds_.erase("listen");
    fds_.erase("conn");
    k.fds = std::move(fds_);
    k.record = record_;
    return k;
  }
  size_t fds() {
    std::lock_guard<std::mutex> g(mu_);
    return fds_.size();
  }

 private:
  std::mutex mu_;
  bool frozen_ = false;
  std::map<std::string, UniqueFd> fds_;
  KvRecord record_;
};

struct SessionTest : ::testing::Test {
  std::string dir, sock;
  void SetUp() override {
    char tmpl[] = "/tmp/axl-session-XXXXXX";
    dir = ::mkdtemp(tmpl);
    sock = dir + "/dev.sock";
  }
  void TearDown() override { (void)remove_tree(dir); }
};

template <typename Pred>
bool eventually(Pred p) {
  for (int i = 0; i < 500; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_F(SessionTest, SuccessorResumesAndServesWhatWasInFlightOnce) {
  F fe;
  Keeper keeper;
  Device first(false);
  iommu::DmaContext dma1;
  auto s1 = std::make_unique<Server>(sock, first, dma1);
  s1->set_keeper(&keeper);
  ASSERT_TRUE(s1->start().ok());
  ASSERT_TRUE(fe.connect(sock));
  fe.handshake(2, ~0ull);
  // Journaled: the setup messages and their fds (memory, kick/call per
  // ring, the handler's own inflight region), with the connection.
  EXPECT_GE(keeper.fds(), 8u);
  // Three requests; the first process completes none of them.
  uint16_t a = fe.add_chain(0, {{F::kGpaBase + 0x100000, 512, true}});
  uint16_t b = fe.add_chain(0, {{F::kGpaBase + 0x101000, 512, true}});
  uint16_t c = fe.add_chain(1, {{F::kGpaBase + 0x102000, 64, false}});
  ASSERT_TRUE(eventually([&] { return first.popped().size() == 3; }));
  EXPECT_EQ(fe.used_idx(0), 0);

  // The process dies: only what it kept survives.
  KeptSession kept = keeper.die();
  s1.reset();
  ASSERT_TRUE(kept.conn);

  Keeper keeper2;
  Device second(true);
  iommu::DmaContext dma2;
  Server s2(sock, second, dma2);
  s2.set_keeper(&keeper2);
  ASSERT_TRUE(s2.resume(std::move(kept)).ok());
  // Handed out again, in the order first taken, and completed once each.
  auto used0 = fe.wait_used(0, 2);
  auto used1 = fe.wait_used(1, 1);
  ASSERT_EQ(used0.size(), 2u);
  ASSERT_EQ(used1.size(), 1u);
  EXPECT_EQ(used0[0].id, a);
  EXPECT_EQ(used0[1].id, b);
  EXPECT_EQ(used1[0].id, c);
  EXPECT_EQ(second.popped(), (std::vector<uint16_t>{a, b, c}));
  // New requests are served, and the connection is the same one: the
  // front-end still talks to it.
  uint16_t d = fe.add_chain(0, {{F::kGpaBase + 0x103000, 512, true}});
  auto used = fe.wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, d);
  EXPECT_EQ(used[0].len, 7u);
  EXPECT_NE(fe.call_u64(Req::kGetFeatures), 0u);
  EXPECT_EQ(fe.used_idx(0), 3);
  // The successor journals the session in turn.
  EXPECT_GE(keeper2.fds(), 8u);
}

TEST_F(SessionTest, SessionThatDoesNotReplayIsClosedSoTheFrontEndReconnects) {
  F fe;
  Keeper keeper;
  Device first(true);
  iommu::DmaContext dma1;
  auto s1 = std::make_unique<Server>(sock, first, dma1);
  s1->set_keeper(&keeper);
  ASSERT_TRUE(s1->start().ok());
  ASSERT_TRUE(fe.connect(sock));
  fe.handshake(2, ~0ull);
  KeptSession kept = keeper.die();
  // A process that dies unlinks nothing; this one's destructor would.
  const std::string spare = sock + ".kept";
  ASSERT_EQ(::link(sock.c_str(), spare.c_str()), 0);
  s1.reset();
  ASSERT_EQ(::rename(spare.c_str(), sock.c_str()), 0);
  kept.fds.clear();  // the memory table's fd and the rest were not kept
  Device second(true);
  iommu::DmaContext dma2;
  Server s2(sock, second, dma2);
  ASSERT_TRUE(s2.resume(std::move(kept)).ok());
  // The connection closes (the front-end then reconnects and starts over).
  uint8_t byte;
  timeval tv{5, 0};
  setsockopt(fe.sock(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(::recv(fe.sock(), &byte, 1, 0), 0);
  // And the listening socket still serves a new one.
  F again;
  ASSERT_TRUE(again.connect(sock));
  again.handshake(2, ~0ull);
}

TEST_F(SessionTest, InflightRegionFromGetInflightFd) {
  F fe;
  Device dev(true);
  iommu::DmaContext dma;
  Server s(sock, dev, dma);
  ASSERT_TRUE(s.start().ok());
  ASSERT_TRUE(fe.connect(sock));
  uint64_t pf = 0;
  {
    auto p = fe.call(Req::kGetProtocolFeatures);
    ASSERT_EQ(p.size(), 8u);
    memcpy(&pf, p.data(), 8);
  }
  EXPECT_TRUE(pf & virtio::bit(kPfInflightShmfd));
  ASSERT_EQ(fe.call_ack(Req::kSetProtocolFeatures, encode_u64(pf)), 0u);
  ASSERT_TRUE(send_request(fe.sock(), Req::kGetInflightFd, 0, encode_inflight({0, 0, 2, 64})).ok());
  auto m = recv_message(fe.sock());
  ASSERT_TRUE(m.ok() && m->has_value());
  auto info = parse_inflight(**m, 1);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->num_queues, 2);
  EXPECT_EQ(info->queue_size, 64);
  EXPECT_EQ(info->mmap_size, 2 * virtio::inflight_queue_bytes(64));
  int fd = (*m)->fds[0].get();
  EXPECT_EQ(fe.call_ack(Req::kSetInflightFd, encode_inflight(*info), {fd}), 0u);
  // Refused: more queues than the device has (answered with size 0: no tracking).
  ASSERT_TRUE(send_request(fe.sock(), Req::kGetInflightFd, 0, encode_inflight({0, 0, 9, 64})).ok());
  auto bad = recv_message(fe.sock());
  ASSERT_TRUE(bad.ok() && bad->has_value());
  auto none = parse_inflight(**bad, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->mmap_size, 0u);
  // A region that does not fit what it claims is refused.
  EXPECT_NE(fe.call_ack(Req::kSetInflightFd, encode_inflight({4096, 0, 2, 64}), {fd}), 0u);
}

TEST_F(SessionTest, SuccessorTakesNoAnswerMeantForItsPredecessor) {
  // Guest IOMMU: the first process asks about a buffer and dies before the
  // front-end answers; the answer (a failure) lands on the kept back-end
  // channel.  The successor must not take it for the answer to its own
  // first miss (answers are matched in order): it would mark a page of its
  // own untranslatable.
  constexpr uint64_t kOffset = 0x40'0000'0000;
  constexpr uint64_t kBuf = F::kGpaBase + 0x100000;
  F fe;
  fe.use_iommu(kOffset);
  Keeper keeper;
  Device first(false);
  iommu::DmaContext dma1;
  auto s1 = std::make_unique<Server>(sock, first, dma1);
  s1->set_keeper(&keeper);
  ASSERT_TRUE(s1->start().ok());
  ASSERT_TRUE(fe.connect(sock));
  fe.handshake(1, ~0ull);
  uint16_t a = fe.add_chain(0, {{kBuf, 512, true}});
  auto miss = fe.next_miss();
  ASSERT_TRUE(miss);
  EXPECT_EQ(miss->iova, fe.iova(kBuf));
  KeptSession kept = keeper.die();
  s1.reset();
  fe.answer_miss(false);  // too late: its asker is gone

  Keeper keeper2;
  Device second(true);
  iommu::DmaContext dma2;
  Server s2(sock, second, dma2);
  s2.set_keeper(&keeper2);
  ASSERT_TRUE(s2.resume(std::move(kept)).ok());
  // The successor's IOTLB starts empty: it asks for the ring's pages.
  std::vector<uint64_t> asked;
  while (auto m = fe.next_miss(300)) asked.push_back(m->iova);
  ASSERT_FALSE(asked.empty());
  EXPECT_EQ(s2.iotlb_stats().miss_failures, 0u) << "the stale failure was taken as an answer";
  // Answered now, the ring starts, the buffer is asked for in turn, and the
  // request completes.
  // grant(): maps the page a miss asked for, then acks the miss.
  auto grant = [&](uint64_t iova) {
    const uint64_t page = iova & ~0xfffull;
    EXPECT_EQ(fe.iotlb(vhost_user::IotlbType::kUpdate, page, 0x1000, page - kOffset, 3), 0u);
    fe.answer_miss(true);
  };
  for (uint64_t iova : asked) grant(iova);
  for (int i = 0; i < 20 && fe.used_idx(0) == 0; ++i)
    if (auto m = fe.next_miss(100)) grant(m->iova);
  auto used = fe.wait_used(0, 1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, a);
  EXPECT_EQ(s2.iotlb_stats().miss_failures, 0u);
}

}  // namespace
}  // namespace axl::vhost_user
