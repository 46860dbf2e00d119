#include "vtpm/checkpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <openssl/sha.h>
#include <sys/wait.h>

#include <csignal>

#include "common/unique_fd.h"
#include "vtpm/tpm_engine.h"
#include "vtpm/tpm_wire.h"

namespace axl::vtpm {
namespace {

namespace fs = std::filesystem;

// The layout checkpoint.h documents.
constexpr size_t kSlots = 20480;
constexpr size_t kSlot = 64 * 1024;
constexpr size_t kJournal = kSlots + 2 * kSlot;
constexpr size_t kHdr = CheckpointFile::kEntryHeader;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/axl-vtpm-ckpt.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    dirfd_.reset(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    for (size_t i = 0; i < 32; ++i) key_.host.bytes[i] = static_cast<uint8_t>(i * 5 + 3);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path() const { return dir_ + "/" + CheckpointFile::kName; }
  std::vector<uint8_t> bytes() {
    std::ifstream f(path(), std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
  }
  void put(const std::vector<uint8_t>& b) {
    std::ofstream f(path(), std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  std::unique_ptr<CheckpointFile> make(std::span<const uint8_t> snap) {
    auto f = CheckpointFile::create(dirfd_.get(), dir_, key_, snap);
    EXPECT_TRUE(f.ok()) << (f ? "" : f.error().message);
    return f ? std::move(f.value()) : nullptr;
  }
  VolatileImage load() {
    auto r = CheckpointFile::read(dirfd_.get(), dir_, key_);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    EXPECT_TRUE(r.ok() && r.value().has_value());
    return r.ok() && r.value() ? std::move(*r.value()) : VolatileImage{};
  }
  std::string refusal() {
    auto r = CheckpointFile::read(dirfd_.get(), dir_, key_);
    EXPECT_FALSE(r.ok()) << "a bad checkpoint was accepted";
    return r.ok() ? "" : r.error().message;
  }
  static uint64_t seq_at(const std::vector<uint8_t>& b, size_t off) {
    uint64_t s;
    std::memcpy(&s, b.data() + off, 8);
    return s;
  }
  std::string dir_;
  UniqueFd dirfd_;
  VtpmKey key_{{}, "vm1"};
};

std::vector<uint8_t> blob(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST_F(CheckpointTest, AbsentIsNoImage) {
  auto r = CheckpointFile::read(dirfd_.get(), dir_, key_);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value().has_value());
}

TEST_F(CheckpointTest, SnapshotsAndJournalRoundTrip) {
  auto f = make(blob(9000, 1));
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->journal(0, blob(60, 0xa1)));
  ASSERT_TRUE(f->journal(3, blob(70, 0xa2)));
  auto img = load();
  EXPECT_EQ(img.snapshot, blob(9000, 1));
  ASSERT_EQ(img.journal.size(), 2u);
  EXPECT_EQ(img.journal[0].command, blob(60, 0xa1));
  EXPECT_EQ(img.journal[0].locality, 0);
  EXPECT_EQ(img.journal[1].command, blob(70, 0xa2));
  EXPECT_EQ(img.journal[1].locality, 3);
  // A snapshot supersedes the journal before it; both slots take turns.
  for (uint8_t v = 2; v <= 5; ++v) {
    ASSERT_TRUE(f->snapshot(blob(8000 + v, v)));
    img = load();
    EXPECT_EQ(img.snapshot, blob(8000 + v, v));
    EXPECT_TRUE(img.journal.empty());
  }
  ASSERT_TRUE(f->journal(1, blob(10, 0xb1)));
  img = load();
  EXPECT_EQ(img.snapshot, blob(8005, 5));
  ASSERT_EQ(img.journal.size(), 1u);
  EXPECT_EQ(img.journal[0].command, blob(10, 0xb1));
}

TEST_F(CheckpointTest, AFullJournalAsksForASnapshotAndWrapsAfterIt) {
  auto f = make(blob(100, 1));
  for (size_t i = 0; i < CheckpointFile::kJournalRecords; ++i)
    ASSERT_TRUE(f->journal(0, blob(20, static_cast<uint8_t>(i)))) << i;
  EXPECT_FALSE(f->journal(0, blob(20, 0))) << "a full journal must ask for a snapshot";
  EXPECT_FALSE(f->journal(0, blob(CheckpointFile::kMaxJournalCommand + 1, 0)));
  EXPECT_EQ(load().journal.size(), CheckpointFile::kJournalRecords);
  ASSERT_TRUE(f->snapshot(blob(100, 2)));
  // The records now overwrite those the snapshot made stale.
  for (size_t i = 0; i < 10; ++i)
    ASSERT_TRUE(f->journal(0, blob(20, static_cast<uint8_t>(100 + i))));
  auto img = load();
  EXPECT_EQ(img.snapshot, blob(100, 2));
  ASSERT_EQ(img.journal.size(), 10u);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(img.journal[i].command, blob(20, static_cast<uint8_t>(100 + i)));
}

TEST_F(CheckpointTest, ALargeStateGetsLargerSlots) {
  auto f = make(blob(100, 1));
  EXPECT_FALSE(f->snapshot(blob(kSlot, 2))) << "does not fit a 64 KiB slot";
  f = make(blob(kSlot, 2));
  ASSERT_TRUE(f);
  EXPECT_EQ(load().snapshot, blob(kSlot, 2));
  EXPECT_TRUE(f->snapshot(blob(kSlot + 10, 3)));
  EXPECT_EQ(load().snapshot, blob(kSlot + 10, 3));
}

// A kill in the middle of writing an entry leaves its sequence number 0
// (set first, restored last): the entry reads as empty, whatever else of it
// was written.
TEST_F(CheckpointTest, AnEntryCutShortReadsAsEmpty) {
  auto f = make(blob(100, 1));
  ASSERT_TRUE(f->journal(0, blob(30, 0xc1)));
  ASSERT_TRUE(f->journal(0, blob(30, 0xc2)));
  f.reset();
  auto b = bytes();
  // The second record, half rewritten by a killed writer.
  const size_t rec = kJournal + CheckpointFile::kRecordSize;
  ASSERT_EQ(seq_at(b, rec), 3u);
  std::memset(b.data() + rec, 0, 8);
  std::memset(b.data() + rec + kHdr, 0x5a, 20);
  put(b);
  auto img = load();
  ASSERT_EQ(img.journal.size(), 1u);
  EXPECT_EQ(img.journal[0].command, blob(30, 0xc1));
  // A snapshot cut short: the older slot (and its journal) stand.
  b = bytes();
  std::memset(b.data() + kSlots + kSlot, 0, 8);              // slot B: empty
  std::memset(b.data() + kSlots + kSlot + kHdr, 0x77, 500);  // half written
  put(b);
  img = load();
  EXPECT_EQ(img.snapshot, blob(100, 1));
  EXPECT_EQ(img.journal.size(), 1u);
}

TEST_F(CheckpointTest, TamperingIsRefusedWithAReasonAndTheFileKept) {
  auto f = make(blob(3000, 1));
  ASSERT_TRUE(f->snapshot(blob(3000, 2)));
  ASSERT_TRUE(f->journal(0, blob(40, 0xd1)));
  ASSERT_TRUE(f->journal(0, blob(40, 0xd2)));
  ASSERT_TRUE(f->journal(0, blob(40, 0xd3)));
  f.reset();
  const auto good = bytes();
  const size_t slot_b = kSlots + kSlot;
  struct Case {
    size_t off;
    const char* why;
  } cases[] = {
      {0, "bad magic"},
      {40, "fails authentication"},                 // the salt, so the key
      {kSlots + kHdr + 5, "fails authentication"},  // the older snapshot too
      {slot_b + 8, "fails authentication"},         // length
      {slot_b + 10, "bad header"},                  // length beyond the slot
      {slot_b + 12, "bad header"},                  // type
      {slot_b + 16, "fails authentication"},        // the entry it follows
      {slot_b + 24, "fails authentication"},        // tag
      {slot_b + kHdr + 2999, "fails authentication"},
      {kJournal + CheckpointFile::kRecordSize + kHdr, "fails authentication"},
      {kJournal + CheckpointFile::kRecordSize + 13, "fails authentication"},  // its locality
      {kJournal + CheckpointFile::kRecordSize + 16, "fails authentication"},  // what it follows
      // An empty record made to claim a sequence number after the snapshot.
      {kJournal + 100 * CheckpointFile::kRecordSize + 7, "journal record 100 has a bad header"},
  };
  for (const auto& c : cases) {
    auto bad = good;
    bad[c.off] ^= 0x01;
    put(bad);
    const std::string why = refusal();
    EXPECT_NE(why.find(c.why), std::string::npos) << "offset " << c.off << ": " << why;
    EXPECT_NE(why.find(path()), std::string::npos) << why;
    EXPECT_EQ(bytes(), bad) << "a refusal must leave the file as it was";
  }
  // A record taken out of the middle of the journal.
  auto gap = good;
  std::memset(gap.data() + kJournal + CheckpointFile::kRecordSize, 0, 8);
  put(gap);
  EXPECT_NE(refusal().find("gap"), std::string::npos);
  // Records swapped: their sequence numbers are in their nonces.
  auto swapped = good;
  std::memcpy(swapped.data() + kJournal, good.data() + kJournal + CheckpointFile::kRecordSize, 8);
  std::memcpy(swapped.data() + kJournal + CheckpointFile::kRecordSize, good.data() + kJournal, 8);
  put(swapped);
  EXPECT_NE(refusal().find("fails authentication"), std::string::npos);
  // Cut short, or sealed with another key.
  put({good.begin(), good.begin() + 5000});
  EXPECT_NE(refusal().find("bytes"), std::string::npos);
  put(good);
  key_.host.bytes[7] ^= 1;
  EXPECT_NE(refusal().find("another key"), std::string::npos);
}

// Another vTPM's checkpoint (its PCRs, loaded keys, sessions) put in this
// one's state dir does not open here, even under the same host key.
TEST_F(CheckpointTest, AnotherVtpmsCheckpointIsRefusedAndKept) {
  auto f = make(blob(3000, 1));
  ASSERT_TRUE(f->journal(0, blob(40, 0xe1)));
  f.reset();
  const auto good = bytes();
  key_.id = "vm2";
  const std::string why = refusal();
  EXPECT_NE(why.find("sealed for another vTPM or with another key"), std::string::npos) << why;
  EXPECT_NE(why.find(path()), std::string::npos) << why;
  EXPECT_NE(why.find("'vm2'"), std::string::npos) << why;
  EXPECT_EQ(why.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(bytes(), good) << "a refusal must leave the file as it was";
  key_.id = "vm1";
  auto img = load();
  EXPECT_EQ(img.snapshot, blob(3000, 1));
  ASSERT_EQ(img.journal.size(), 1u);
}

// Version 1 derived its keys from the host key and salt alone.  Such a file
// is refused for what it is, not taken for a tampered one or migrated.
TEST_F(CheckpointTest, UnboundVersion1CheckpointIsRefused) {
  make(blob(100, 1)).reset();
  auto v1 = bytes();
  const uint32_t one = 1;
  std::memcpy(v1.data() + 8, &one, 4);  // the header's version
  put(v1);
  const std::string why = refusal();
  EXPECT_NE(why.find("unbound checkpoint of an older axolotl-vtpm"), std::string::npos) << why;
  EXPECT_NE(why.find(path()), std::string::npos) << why;
  EXPECT_EQ(bytes(), v1);
}

// The engine on libtpms: another vTPM's permanent state next to this one's
// checkpoint fails the power-on with its reason, and nothing is changed.
TEST_F(CheckpointTest, EngineRefusesAnotherVtpmsStateAndChangesNothing) {
  {
    auto st = StateStore::open(dir_, key_);
    auto e = TpmEngine::create(std::move(st.value()), true);
    ASSERT_TRUE(e.ok()) << e.error().message;
    ASSERT_TRUE(e.value()->power_on(false).ok());
    ASSERT_TRUE(e.value()->call(tpm::Command(tpm::kCcStartup, {}, 0).u16(0).finish()).ok());
  }  // killed: permanent state and a checkpoint stay
  const std::string perm = dir_ + "/permanent.state";
  ASSERT_TRUE(fs::exists(perm) && fs::exists(path()));
  auto slurp = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>{std::istreambuf_iterator<char>(f), {}};
  };
  const auto perm_before = slurp(perm), ckpt_before = bytes();
  auto st = StateStore::open(dir_, VtpmKey{key_.host, "vm2"});
  auto e = TpmEngine::create(std::move(st.value()), true);
  ASSERT_TRUE(e.ok());
  auto s = e.value()->power_on(true);
  ASSERT_FALSE(s.ok()) << "another vTPM's state was accepted";
  EXPECT_NE(s.error().message.find("sealed for another vTPM"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(slurp(perm), perm_before);
  EXPECT_EQ(bytes(), ckpt_before);
}

TEST_F(CheckpointTest, HoldsNoPlaintextAndEachFileHasItsOwnKey) {
  const std::string secret = "VOLATILE-SECRET-42-VOLATILE-SECRET";
  std::vector<uint8_t> s(secret.begin(), secret.end());
  auto f = make(s);
  ASSERT_TRUE(f->journal(0, s));
  const auto one = bytes();
  EXPECT_EQ(std::search(one.begin(), one.end(), s.begin(), s.begin() + 16), one.end());
  f = make(s);
  f->journal(0, s);
  const auto two = bytes();
  // Same content, same sequence numbers: a fresh salt makes the ciphertexts differ.
  EXPECT_NE(std::vector<uint8_t>(one.begin() + kSlots, one.begin() + kSlots + 200),
            std::vector<uint8_t>(two.begin() + kSlots, two.begin() + kSlots + 200));
  ASSERT_TRUE(CheckpointFile::remove(dirfd_.get(), dir_).ok());
  EXPECT_FALSE(fs::exists(path()));
  EXPECT_TRUE(CheckpointFile::remove(dirfd_.get(), dir_).ok()) << "absent is fine";
}

// The engine end to end on libtpms: extends are journaled, not snapshotted;
// an engine that goes away without powering off (a killed vTPM) is resumed
// by the next one with the journal replayed, PCRs as they were.
TEST_F(CheckpointTest, EngineJournalsExtendsAndResumesThem) {
  auto pcr16 = [](TpmEngine& e) {
    // TPM2_PCR_Read: one selection, sha256, PCR 16.
    auto r = e.call(tpm::Command(0x17E, {}, 0).u32(1).u16(0x000B).u8(3).u8(0).u8(0).u8(1).finish());
    EXPECT_TRUE(r.ok());
    return r.ok() ? std::vector<uint8_t>(r->end() - 32, r->end()) : std::vector<uint8_t>{};
  };
  auto extend = [](TpmEngine& e, uint8_t v) {
    std::vector<uint8_t> d(32, v);
    auto r = e.call(tpm::Command(tpm::kCcPcrExtend, {16}, 1).u32(1).u16(0x000B).raw(d).finish());
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
  };
  std::vector<uint8_t> before;
  {
    auto st = StateStore::open(dir_, key_);
    ASSERT_TRUE(st.ok());
    auto e = TpmEngine::create(std::move(st.value()), true);
    ASSERT_TRUE(e.ok()) << e.error().message;
    ASSERT_TRUE(e.value()->power_on(false).ok());
    ASSERT_TRUE(e.value()->call(tpm::Command(tpm::kCcStartup, {}, 0).u16(0).finish()).ok());
    for (uint8_t v = 1; v <= 5; ++v) extend(*e.value(), v);
    EXPECT_EQ(e.value()->stats().journaled, 5u);
    before = pcr16(*e.value());
    ASSERT_EQ(before.size(), 32u);
    EXPECT_NE(before, std::vector<uint8_t>(32, 0));
  }  // gone without power_off: the checkpoint stays
  EXPECT_EQ(CheckpointFile::read(dirfd_.get(), dir_, key_).value()->journal.size(), 5u);
  auto st = StateStore::open(dir_, key_);
  auto e = TpmEngine::create(std::move(st.value()), true);
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(e.value()->power_on(true).ok());
  EXPECT_TRUE(e.value()->resumed());
  EXPECT_EQ(e.value()->stats().replayed, 5u);
  EXPECT_EQ(pcr16(*e.value()), before);
  // The resumed engine started a new file with one snapshot of it all.
  auto img = CheckpointFile::read(dirfd_.get(), dir_, key_);
  ASSERT_TRUE(img.ok() && img.value());
  EXPECT_TRUE(img.value()->journal.empty());
  extend(*e.value(), 6);
  EXPECT_EQ(CheckpointFile::read(dirfd_.get(), dir_, key_).value()->journal.size(), 1u);
  e.value()->power_off(true);
  EXPECT_FALSE(fs::exists(path())) << "an orderly power-off keeps no volatile state";
}

// A guest command in flight when its instance is killed is answered by the
// successor: run again when the kill came before its checkpoint, the recorded
// response when after, and in either case applied exactly once.
class GuestInFlightTest : public CheckpointTest,
                          public ::testing::WithParamInterface<TpmEngine::Fault> {};

TEST_P(GuestInFlightTest, IsAnsweredOnceByTheSuccessor) {
  const std::vector<uint8_t> digest(32, 9);
  const auto ext = tpm::Command(tpm::kCcPcrExtend, {16}, 1).u32(1).u16(0x000B).raw(digest).finish();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto st = StateStore::open(dir_, key_);
    auto e = TpmEngine::create(std::move(st.value()), true);
    if (!e || !e.value()->power_on(false) ||
        !e.value()->call(tpm::Command(tpm::kCcStartup, {}, 0).u16(0).finish())) {
      _exit(2);
    }
    e.value()->set_fault(GetParam(), tpm::kCcPcrExtend);
    (void)e.value()->execute_guest(ext);
    _exit(3);  // the fault did not fire
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  auto img = CheckpointFile::read(dirfd_.get(), dir_, key_);
  ASSERT_TRUE(img.ok()) << img.error().message;
  ASSERT_TRUE(img.value() && img.value()->pending);
  EXPECT_EQ(img.value()->pending->command.command, ext);
  EXPECT_EQ(img.value()->pending->response.has_value(),
            GetParam() == TpmEngine::Fault::kDieAfterCheckpoint);

  auto st = StateStore::open(dir_, key_);
  auto e = TpmEngine::create(std::move(st.value()), true);
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(e.value()->power_on(true).ok());
  auto reply = e.value()->take_guest_reply();
  ASSERT_TRUE(reply.has_value());
  auto rc = tpm::response_code(*reply);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(rc.value(), tpm::kRcSuccess);
  EXPECT_FALSE(e.value()->take_guest_reply().has_value()) << "answered twice";
  EXPECT_EQ(e.value()->stats().guest_answered, 1u);
  // PCR 16 = SHA-256(zeros || digest): extended exactly once.
  uint8_t in[64] = {};
  std::memcpy(in + 32, digest.data(), 32);
  std::vector<uint8_t> want(32);
  SHA256(in, sizeof in, want.data());
  auto r = e.value()->call(
      tpm::Command(0x17E, {}, 0).u32(1).u16(0x000B).u8(3).u8(0).u8(0).u8(1).finish());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::vector<uint8_t>(r->end() - 32, r->end()), want);
  // Answered and settled: a further restart has nothing pending.
  e.value().reset();
  img = CheckpointFile::read(dirfd_.get(), dir_, key_);
  ASSERT_TRUE(img.ok()) << img.error().message;
  ASSERT_TRUE(img.value());
  EXPECT_FALSE(img.value()->pending.has_value());
}

INSTANTIATE_TEST_SUITE_P(Kills, GuestInFlightTest,
                         ::testing::Values(TpmEngine::Fault::kDieInCommand,
                                           TpmEngine::Fault::kDieAfterCheckpoint));

}  // namespace
}  // namespace axl::vtpm
