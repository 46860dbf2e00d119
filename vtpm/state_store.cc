#include "vtpm/state_store.h"

#include "vtpm/checkpoint.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace axl::vtpm {
namespace {

constexpr char kMagic[8] = {'A', 'X', 'L', 'V', 'T', 'P', 'M', 'S'};
// 1: sealed under the host key itself, valid in every vTPM of the host.
// 2: sealed under derive_key(key, kPermanentLabel, {}), bound to one vTPM.
constexpr uint16_t kVersion = 2;
constexpr uint16_t kUnboundVersion = 1;
constexpr std::string_view kPermanentLabel = "axolotl-vtpm permanent";
constexpr size_t kAadSize = 32;
constexpr size_t kNonceOffset = 20;
constexpr size_t kTagOffset = 32;
constexpr size_t kMaxState = 16 * 1024 * 1024;

void put16(uint8_t* p, uint16_t v) { p[0] = v >> 8, p[1] = v & 0xff; }
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

std::string errno_text(const std::string& what) { return what + ": " + strerror(errno); }

Status write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return make_error(errno_text("write " + path));
    }
    p += w, n -= static_cast<size_t>(w);
  }
  return {};
}

std::string real_dir(const std::string& p) {
  char buf[PATH_MAX];
  if (!::realpath(p.c_str(), buf)) return {};
  return buf;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

const char* kind_name(StateKind k) { return k == StateKind::kPermanent ? "permanent" : "volatile"; }

Result<Key> load_key_file(const std::string& path, const std::string& state_dir) {
  const std::string key_real = real_dir(path);
  if (key_real.empty()) return make_error(errno_text("key file " + path));
  const std::string dir_real = real_dir(state_dir);
  if (!dir_real.empty() && key_real.rfind(dir_real + "/", 0) == 0) {
    return make_error("key file " + path + " lies inside the state dir " + state_dir +
                      "; keep the key elsewhere");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return make_error(errno_text("key file " + path));
  return load_key_fd(fd.get(), "key file " + path);
}

Result<Key> load_key_fd(int fd, const std::string& what) {
  uint8_t buf[130];
  size_t n = 0;
  while (n < sizeof buf) {
    ssize_t r = ::read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return make_error(errno_text("read " + what));
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  Key k;
  if (n == 32) {
    std::memcpy(k.bytes.data(), buf, 32);
    return k;
  }
  size_t len = n;
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) --len;
  if (len == 64) {
    bool ok = true;
    for (size_t i = 0; i < 32 && ok; ++i) {
      int hi = hexval(static_cast<char>(buf[2 * i])),
          lo = hexval(static_cast<char>(buf[2 * i + 1]));
      ok = hi >= 0 && lo >= 0;
      k.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (ok) return k;
  }
  return make_error(what + " must hold 32 raw bytes or 64 hex digits (has " + std::to_string(n) +
                    " bytes)");
}

std::vector<uint8_t> seal(const VtpmKey& key, StateKind kind, std::span<const uint8_t> plain,
                          uint32_t generation) {
  const auto k = derive_key(key, kPermanentLabel, {});
  std::vector<uint8_t> out(kStateHeaderSize + plain.size());
  uint8_t* h = out.data();
  std::memcpy(h, kMagic, 8);
  put16(h + 8, kVersion);
  put16(h + 10, static_cast<uint16_t>(kind));
  put32(h + 12, generation);  // in the AAD: authenticated with the rest
  put32(h + 16, static_cast<uint32_t>(plain.size()));
  if (RAND_bytes(h + kNonceOffset, 12) != 1) abort();  // no entropy: nothing safe to do
  Ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, k.data(), h + kNonceOffset) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, h, kAadSize) != 1 ||
      (!plain.empty() && EVP_EncryptUpdate(ctx.get(), out.data() + kStateHeaderSize, &len,
                                           plain.data(), static_cast<int>(plain.size())) != 1) ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + kStateHeaderSize, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, h + kTagOffset) != 1) {
    abort();  // OpenSSL failing on fixed, valid parameters is a bug, not input
  }
  return out;
}

Result<std::vector<uint8_t>> open_sealed(const VtpmKey& key, StateKind kind,
                                         std::span<const uint8_t> file, const std::string& what) {
  if (file.size() < kStateHeaderSize) {
    return make_error(what + ": truncated (" + std::to_string(file.size()) +
                      " bytes, header alone is 48)");
  }
  const uint8_t* h = file.data();
  if (std::memcmp(h, kMagic, 8) != 0)
    return make_error(what + ": not a vTPM state file (bad magic)");
  if (get16(h + 8) == kUnboundVersion) {
    return make_error(what +
                      ": unbound state of an older axolotl-vtpm (format version 1, sealed "
                      "alike for every vTPM of the host), refused; empty the state dir to make "
                      "this vTPM anew (new EK and seeds)");
  }
  if (get16(h + 8) != kVersion) {
    return make_error(what + ": unsupported state format version " + std::to_string(get16(h + 8)));
  }
  if (get16(h + 10) != static_cast<uint16_t>(kind)) {
    return make_error(what + ": holds state of kind " + std::to_string(get16(h + 10)) +
                      ", expected " + kind_name(kind));
  }
  const uint32_t len = get32(h + 16);
  if (file.size() != kStateHeaderSize + size_t{len}) {
    return make_error(what + ": length mismatch (header says " + std::to_string(len) +
                      " bytes of state, file holds " +
                      std::to_string(file.size() - kStateHeaderSize) + ")");
  }
  const auto k = derive_key(key, kPermanentLabel, {});
  std::vector<uint8_t> plain(len);
  Ctx ctx(EVP_CIPHER_CTX_new());
  int out = 0;
  uint8_t tag[16];
  std::memcpy(tag, h + kTagOffset, 16);
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, k.data(), h + kNonceOffset) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &out, h, kAadSize) != 1 ||
      (len > 0 && EVP_DecryptUpdate(ctx.get(), plain.data(), &out, h + kStateHeaderSize,
                                    static_cast<int>(len)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &out) != 1) {
    return make_error(what +
                      ": authentication failed (sealed for another vTPM or with another "
                      "key, or tampered; this is vTPM '" +
                      key.id + "')");
  }
  return plain;
}

Result<StateStore> StateStore::open(const std::string& dir, const VtpmKey& key) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return make_error(errno_text("state dir " + dir));
  StateStore s(dir, std::move(fd), key);
  // The generation of the permanent state there, from its header (its
  // authenticity is checked when it is loaded: the field is in the AAD).
  UniqueFd perm(::openat(s.dirfd_.get(), "permanent.state", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  uint8_t h[kStateHeaderSize];
  if (perm && ::pread(perm.get(), h, sizeof h, 0) == ssize_t(sizeof h) &&
      std::memcmp(h, kMagic, 8) == 0 && get16(h + 8) == kVersion)
    s.generation_ = get32(h + 12);
  return s;
}

std::string StateStore::path(StateKind kind) const {
  return dir_ + "/" + (kind == StateKind::kPermanent ? "permanent.state" : CheckpointFile::kName);
}

Status StateStore::save(StateKind kind, std::span<const uint8_t> plain, Durability d) {
  if (kind == StateKind::kVolatile) {
    auto f = CheckpointFile::create(dirfd_.get(), dir_, key_, plain);
    if (!f) return f.error();
    return {};
  }
  const std::vector<uint8_t> sealed = seal(key_, kind, plain, generation_ + 1);
  const std::string name = "permanent.state";
  const std::string tmp = ".permanent.tmp";
  UniqueFd fd(::openat(dirfd_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return make_error(errno_text("create " + dir_ + "/" + tmp));
  if (auto s = write_all(fd.get(), sealed.data(), sealed.size(), dir_ + "/" + tmp); !s) {
    ::unlinkat(dirfd_.get(), tmp.c_str(), 0);
    return s;
  }
  if (d == Durability::kPowerLoss && ::fsync(fd.get()) != 0) {
    ::unlinkat(dirfd_.get(), tmp.c_str(), 0);
    return make_error(errno_text("fsync " + dir_ + "/" + tmp));
  }
  fd.reset();
  if (::renameat(dirfd_.get(), tmp.c_str(), dirfd_.get(), name.c_str()) != 0) {
    ::unlinkat(dirfd_.get(), tmp.c_str(), 0);
    return make_error(errno_text("rename to " + dir_ + "/" + name));
  }
  if (d == Durability::kPowerLoss && ::fsync(dirfd_.get()) != 0) {
    return make_error(errno_text("fsync " + dir_));
  }
  ++generation_;
  if (on_saved_) on_saved_(generation_);
  return {};
}

Result<std::optional<std::vector<uint8_t>>> StateStore::load(StateKind kind) const {
  if (kind == StateKind::kVolatile) {
    auto img = CheckpointFile::read(dirfd_.get(), dir_, key_);
    if (!img) return img.error();
    if (!img.value()) return std::optional<std::vector<uint8_t>>{};
    if (!img.value()->journal.empty()) {
      return make_error("volatile checkpoint " + path(kind) + " holds " +
                        std::to_string(img.value()->journal.size()) +
                        " journal records not yet replayed; start the TPM to apply them");
    }
    return std::optional<std::vector<uint8_t>>(std::move(img.value()->snapshot));
  }
  const std::string p = path(kind);
  UniqueFd fd(::openat(dirfd_.get(), "permanent.state", O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::optional<std::vector<uint8_t>>{};
    return make_error(errno_text("open " + p));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return make_error(errno_text("stat " + p));
  if (!S_ISREG(st.st_mode)) return make_error(p + ": not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxState + kStateHeaderSize) {
    return make_error(p + ": " + std::to_string(st.st_size) + " bytes is too large for TPM state");
  }
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r = ::read(fd.get(), buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return make_error(errno_text("read " + p));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  buf.resize(got);
  auto plain = open_sealed(key_, kind, buf, "state file " + p);
  if (!plain) return plain.error();
  return std::optional<std::vector<uint8_t>>(std::move(plain.value()));
}

Status StateStore::remove(StateKind kind) {
  if (kind == StateKind::kVolatile) {
    if (auto s = CheckpointFile::remove(dirfd_.get(), dir_); !s) return s;
  } else if (::unlinkat(dirfd_.get(), "permanent.state", 0) != 0 && errno != ENOENT) {
    return make_error(errno_text("remove " + path(kind)));
  }
  if (::fsync(dirfd_.get()) != 0) return make_error(errno_text("fsync " + dir_));
  return {};
}

}  // namespace axl::vtpm
