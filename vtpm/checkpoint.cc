#include "vtpm/checkpoint.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/unique_fd.h"

namespace axl::vtpm {
namespace {

constexpr char kMagic[8] = {'A', 'X', 'L', 'V', 'T', 'P', 'M', 'C'};
// 1: keys derived from the host key alone, valid in every vTPM of the host.
// 2: keys bound to one vTPM (kLabel and its id in the HKDF info).
constexpr uint32_t kVersion = 2;
constexpr uint32_t kUnboundVersion = 1;
constexpr std::string_view kLabel = "axolotl-vtpm volatile";
constexpr size_t kFileHeader = 4096;
constexpr size_t kPendingCmd = 4096;
constexpr size_t kPendingRsp = 12288;
constexpr size_t kPendingRoom = 8192;
constexpr size_t kPermWriteOffset = 64;
constexpr size_t kSlotsOffset = 20480;
constexpr size_t kDefaultSlot = 64 * 1024;
constexpr size_t kMaxSlot = 16 * 1024 * 1024;
constexpr size_t kSaltOffset = 32;
constexpr uint8_t kTypeSnapshot = 1;
constexpr uint8_t kTypeRecord = 2;
constexpr uint8_t kTypePendingCmd = 3;
constexpr uint8_t kTypePendingRsp = 4;
constexpr const char* kTmpName = ".volatile.ckpt.tmp";

// Entry header, at the start of every slot and record.  `seq` is written
// first (0) and last (its value); see checkpoint.h.
// `prev`: the sequence number of the snapshot or record this one follows
// (pending entries take numbers too, so the journal's are not consecutive).
struct EntryHeader {
  uint64_t seq;
  uint32_t len;
  uint8_t type;
  uint8_t locality;
  uint16_t reserved;
  uint64_t prev;
  uint8_t tag[16];
  uint8_t unused[8];
};
static_assert(sizeof(EntryHeader) == CheckpointFile::kEntryHeader);
constexpr size_t kAadOffset = 8;  // len, type, locality, reserved, prev
constexpr size_t kAadSize = 16;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t slot_size;
  uint32_t journal_records;
  uint32_t record_size;
  uint8_t reserved[8];
  uint8_t salt[32];
};
static_assert(offsetof(FileHeader, salt) == kSaltOffset);

std::string errno_text(const std::string& what) { return what + ": " + strerror(errno); }

size_t file_size(size_t slot) {
  return kSlotsOffset + 2 * slot + CheckpointFile::kJournalRecords * CheckpointFile::kRecordSize;
}

// A process's stores reach the page cache in program order as far as its
// successor can tell (the kill cuts the instruction stream at one point);
// only the compiler may reorder them, which these fences forbid.
void compiler_fence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

void set_seq(EntryHeader* h, uint64_t seq) {
  compiler_fence();
  std::atomic_ref<uint64_t>(h->seq).store(seq, std::memory_order_relaxed);
  compiler_fence();
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

void nonce_for(uint8_t type, uint64_t seq, uint8_t* iv) {
  std::memset(iv, 0, 12);
  iv[3] = type;
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<uint8_t>(seq >> (56 - 8 * i));
}

// Decrypts one entry; false when it fails authentication.
bool open_entry(const std::array<uint8_t, 32>& key, const EntryHeader& h, const uint8_t* ct,
                std::vector<uint8_t>& plain) {
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  uint8_t iv[12];
  nonce_for(h.type, h.seq, iv);
  plain.resize(h.len);
  int n = 0;
  uint8_t tag[16];
  std::memcpy(tag, h.tag, 16);
  const auto* aad = reinterpret_cast<const uint8_t*>(&h) + kAadOffset;
  return ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv) == 1 &&
         EVP_DecryptUpdate(ctx.get(), nullptr, &n, aad, kAadSize) == 1 &&
         (h.len == 0 ||
          EVP_DecryptUpdate(ctx.get(), plain.data(), &n, ct, static_cast<int>(h.len)) == 1) &&
         EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
         EVP_DecryptFinal_ex(ctx.get(), plain.data() + h.len, &n) == 1;
}

}  // namespace

struct CheckpointFile::Impl {
  uint8_t* map = nullptr;
  size_t size = 0;
  size_t slot_size = 0;
  uint64_t seq = 0;          // the newest entry's
  uint64_t last_commit = 0;  // the newest snapshot or record's
  int newest_slot = 0;       // the slot holding the newest snapshot
  uint64_t next_record = 0;
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx{EVP_CIPHER_CTX_new()};

  EntryHeader* pending_cmd() { return reinterpret_cast<EntryHeader*>(map + kPendingCmd); }
  EntryHeader* pending_rsp() { return reinterpret_cast<EntryHeader*>(map + kPendingRsp); }
  uint64_t* perm_write() { return reinterpret_cast<uint64_t*>(map + kPermWriteOffset); }
  EntryHeader* slot(int i) {
    return reinterpret_cast<EntryHeader*>(map + kSlotsOffset + i * slot_size);
  }
  EntryHeader* record(size_t i) {
    return reinterpret_cast<EntryHeader*>(map + kSlotsOffset + 2 * slot_size + i * kRecordSize);
  }

  // Seals `plain` into the entry at `h` (its room checked by the caller).
  void write(EntryHeader* h, uint8_t type, uint8_t locality, std::span<const uint8_t> plain) {
    set_seq(h, 0);
    const uint64_t s = ++seq;
    h->len = static_cast<uint32_t>(plain.size());
    h->type = type;
    h->locality = locality;
    h->reserved = 0;
    h->prev = last_commit;
    uint8_t iv[12];
    nonce_for(type, s, iv);
    uint8_t* ct = reinterpret_cast<uint8_t*>(h) + kEntryHeader;
    int n = 0;
    if (EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, nullptr, iv) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<uint8_t*>(h) + kAadOffset,
                          kAadSize) != 1 ||
        (!plain.empty() &&
         EVP_EncryptUpdate(ctx.get(), ct, &n, plain.data(), static_cast<int>(plain.size())) != 1) ||
        EVP_EncryptFinal_ex(ctx.get(), ct + plain.size(), &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, h->tag) != 1) {
      abort();  // OpenSSL failing on fixed, valid parameters is a bug, not input
    }
    set_seq(h, s);
    if (type == kTypeSnapshot || type == kTypeRecord) last_commit = s;
  }

  ~Impl() {
    if (map) ::munmap(map, size);
  }
};

CheckpointFile::CheckpointFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CheckpointFile::~CheckpointFile() = default;

Result<std::unique_ptr<CheckpointFile>> CheckpointFile::create(int dirfd, const std::string& dir,
                                                               const VtpmKey& key,
                                                               std::span<const uint8_t> snapshot) {
  size_t slot = kDefaultSlot;
  while (slot < snapshot.size() + kEntryHeader) slot *= 2;
  if (slot > kMaxSlot) {
    return make_error("volatile state of " + std::to_string(snapshot.size()) +
                      " bytes is too large");
  }
  const std::string tmp_path = dir + "/" + kTmpName;
  UniqueFd fd(::openat(dirfd, kTmpName, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return make_error(errno_text("create " + tmp_path));
  auto impl = std::make_unique<Impl>();
  impl->size = file_size(slot);
  impl->slot_size = slot;
  auto fail = [&](const std::string& what) {
    auto e = make_error(errno_text(what));
    ::unlinkat(dirfd, kTmpName, 0);
    return e;
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(impl->size)) != 0) return fail("size " + tmp_path);
  void* m = ::mmap(nullptr, impl->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (m == MAP_FAILED) return fail("map " + tmp_path);
  impl->map = static_cast<uint8_t*>(m);
  auto* fh = reinterpret_cast<FileHeader*>(impl->map);
  std::memcpy(fh->magic, kMagic, 8);
  fh->version = kVersion;
  fh->slot_size = static_cast<uint32_t>(slot);
  fh->journal_records = kJournalRecords;
  fh->record_size = kRecordSize;
  if (RAND_bytes(fh->salt, sizeof fh->salt) != 1) abort();  // no entropy: nothing safe to do
  const auto k = derive_key(key, kLabel, fh->salt);
  if (!impl->ctx ||
      EVP_EncryptInit_ex(impl->ctx.get(), EVP_aes_256_gcm(), nullptr, k.data(), nullptr) != 1) {
    abort();
  }
  impl->write(impl->slot(0), kTypeSnapshot, 0, snapshot);
  impl->newest_slot = 0;
  if (::renameat(dirfd, kTmpName, dirfd, kName) != 0) return fail("rename to " + dir + "/" + kName);
  return std::unique_ptr<CheckpointFile>(new CheckpointFile(std::move(impl)));
}

bool CheckpointFile::snapshot(std::span<const uint8_t> plain) {
  Impl& m = *impl_;
  if (plain.size() + kEntryHeader > m.slot_size) return false;
  const int target = 1 - m.newest_slot;
  m.write(m.slot(target), kTypeSnapshot, 0, plain);
  m.newest_slot = target;
  since_snapshot_ = 0;
  return true;
}

bool CheckpointFile::journal(uint8_t locality, std::span<const uint8_t> command) {
  Impl& m = *impl_;
  if (command.size() > kMaxJournalCommand || since_snapshot_ >= kJournalRecords) return false;
  m.write(m.record(m.next_record % kJournalRecords), kTypeRecord, locality, command);
  ++m.next_record;
  ++since_snapshot_;
  return true;
}

bool CheckpointFile::begin(uint8_t locality, std::span<const uint8_t> command) {
  Impl& m = *impl_;
  if (command.size() + kEntryHeader > kPendingRoom) return false;
  set_seq(m.pending_rsp(), 0);
  m.write(m.pending_cmd(), kTypePendingCmd, locality, command);
  return true;
}

bool CheckpointFile::answer(std::span<const uint8_t> response) {
  Impl& m = *impl_;
  if (response.size() + kEntryHeader > kPendingRoom) return false;
  m.write(m.pending_rsp(), kTypePendingRsp, 0, response);
  return true;
}

void CheckpointFile::mark_permanent_write() {
  Impl& m = *impl_;
  const uint64_t s =
      std::atomic_ref<uint64_t>(m.pending_cmd()->seq).load(std::memory_order_relaxed);
  compiler_fence();
  std::atomic_ref<uint64_t>(*m.perm_write()).store(s, std::memory_order_relaxed);
  compiler_fence();
}

void CheckpointFile::settle() {
  Impl& m = *impl_;
  // The command first: without it a response is never looked at.
  set_seq(m.pending_cmd(), 0);
  set_seq(m.pending_rsp(), 0);
}

Result<std::optional<VolatileImage>> CheckpointFile::read(int dirfd, const std::string& dir,
                                                          const VtpmKey& key) {
  const std::string path = dir + "/" + kName;
  UniqueFd fd(::openat(dirfd, kName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::optional<VolatileImage>{};
    return make_error(errno_text("open " + path));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return make_error(errno_text("stat " + path));
  if (!S_ISREG(st.st_mode)) return make_error(path + ": not a regular file");
  const std::string what = "volatile checkpoint " + path;
  if (static_cast<size_t>(st.st_size) < kFileHeader) {
    return make_error(what + ": truncated (" + std::to_string(st.st_size) + " bytes)");
  }
  FileHeader fh{};
  if (::pread(fd.get(), &fh, sizeof fh, 0) != static_cast<ssize_t>(sizeof fh)) {
    return make_error(errno_text("read " + path));
  }
  if (std::memcmp(fh.magic, kMagic, 8) != 0) return make_error(what + ": bad magic");
  if (fh.version == kUnboundVersion) {
    return make_error(what +
                      ": unbound checkpoint of an older axolotl-vtpm (format version 1, "
                      "sealed alike for every vTPM of the host), refused; remove it (the TPM then "
                      "starts from its permanent state, as after a power-off)");
  }
  if (fh.version != kVersion) {
    return make_error(what + ": unsupported format version " + std::to_string(fh.version));
  }
  if (fh.slot_size < kDefaultSlot || fh.slot_size > kMaxSlot || fh.slot_size % 4096 != 0 ||
      fh.journal_records != kJournalRecords || fh.record_size != kRecordSize) {
    return make_error(what + ": bad geometry in its header");
  }
  const size_t size = file_size(fh.slot_size);
  if (static_cast<size_t>(st.st_size) != size) {
    return make_error(what + ": " + std::to_string(st.st_size) + " bytes, its header says " +
                      std::to_string(size));
  }
  std::vector<uint8_t> buf(size);
  for (size_t got = 0; got < size;) {
    ssize_t r = ::pread(fd.get(), buf.data() + got, size - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return make_error(errno_text("read " + path));
    got += static_cast<size_t>(r);
  }
  const auto k = derive_key(key, kLabel, fh.salt);
  // Opens the entry at `off`; nullopt when it is empty (seq 0).
  auto entry = [&](size_t off, size_t room, uint8_t type, const std::string& name)
      -> Result<std::optional<std::pair<EntryHeader, std::vector<uint8_t>>>> {
    EntryHeader h;
    std::memcpy(&h, buf.data() + off, sizeof h);
    if (h.seq == 0) return std::optional<std::pair<EntryHeader, std::vector<uint8_t>>>{};
    if (h.type != type || h.len > room - kEntryHeader) {
      return make_error(what + ": " + name + " has a bad header (tampered?)");
    }
    std::vector<uint8_t> plain;
    if (!open_entry(k, h, buf.data() + off + kEntryHeader, plain)) {
      return make_error(what + ": " + name +
                        " fails authentication (sealed for another vTPM or with another key, or "
                        "tampered; this is vTPM '" +
                        key.id + "')");
    }
    return std::optional(std::pair(h, std::move(plain)));
  };
  VolatileImage img;
  uint64_t snap_seq = 0;
  for (int i = 0; i < 2; ++i) {
    auto e = entry(kSlotsOffset + i * size_t{fh.slot_size}, fh.slot_size, kTypeSnapshot,
                   std::string("snapshot slot ") + char('A' + i));
    if (!e) return e.error();
    if (e.value() && e.value()->first.seq > snap_seq) {
      snap_seq = e.value()->first.seq;
      img.snapshot = std::move(e.value()->second);
    }
  }
  if (snap_seq == 0) return make_error(what + ": holds no snapshot");
  struct Rec {
    uint64_t prev;
    JournalEntry entry;
  };
  std::vector<std::pair<uint64_t, Rec>> recs;
  const size_t jbase = kSlotsOffset + 2 * size_t{fh.slot_size};
  for (size_t i = 0; i < kJournalRecords; ++i) {
    EntryHeader h;
    std::memcpy(&h, buf.data() + jbase + i * kRecordSize, sizeof h);
    if (h.seq <= snap_seq) continue;  // empty, or older than the snapshot
    auto e = entry(jbase + i * kRecordSize, kRecordSize, kTypeRecord,
                   "journal record " + std::to_string(i));
    if (!e) return e.error();
    recs.push_back({h.seq, Rec{h.prev, JournalEntry{h.locality, std::move(e.value()->second)}}});
  }
  std::sort(recs.begin(), recs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  auto cmd = entry(kPendingCmd, kPendingRoom, kTypePendingCmd, "the pending command");
  if (!cmd) return cmd.error();
  if (cmd.value()) {
    PendingCommand p;
    p.seq = cmd.value()->first.seq;
    p.command = {cmd.value()->first.locality, std::move(cmd.value()->second)};
    auto rsp = entry(kPendingRsp, kPendingRoom, kTypePendingRsp, "the pending response");
    if (!rsp) return rsp.error();
    if (rsp.value() && rsp.value()->first.seq > p.seq) {
      p.response = std::move(rsp.value()->second);
      p.response_seq = rsp.value()->first.seq;
    }
    uint64_t perm;
    std::memcpy(&perm, buf.data() + kPermWriteOffset, sizeof perm);
    p.permanent_write = perm == p.seq;
    img.pending = std::move(p);
  }
  img.seq = snap_seq;
  for (auto& [seq, rec] : recs) {
    if (rec.prev != img.seq) {
      return make_error(what + ": journal has a gap after entry " + std::to_string(img.seq) +
                        " (entries removed?)");
    }
    img.seq = seq;
    img.journal.push_back(std::move(rec.entry));
  }
  return std::optional<VolatileImage>(std::move(img));
}

Status CheckpointFile::remove(int dirfd, const std::string& dir) {
  for (const char* n : {kName, kTmpName}) {
    if (::unlinkat(dirfd, n, 0) != 0 && errno != ENOENT) {
      return make_error(errno_text("remove " + dir + "/" + n));
    }
  }
  return {};
}

}  // namespace axl::vtpm
