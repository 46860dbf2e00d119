#include "driverdom/blk/image.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>

namespace axl::driverdom::blk {

namespace {

constexpr uint32_t kQcowMagic = 0x514649fb;              // "QFI\xfb"
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1 and L2 entries: bits 9-55
constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kCompressed = 1ull << 62;
constexpr uint64_t kZero = 1ull;  // v3 L2 entry: reads as zeros
constexpr uint32_t kExtEnd = 0, kExtBackingFormat = 0xe2792aca;
constexpr uint64_t kIncompatDirty = 1, kIncompatCorrupt = 2, kIncompatDataFile = 4,
                   kIncompatCompression = 8, kIncompatExtendedL2 = 16;
constexpr uint32_t kMaxL1Entries = 32u << 20;  // QEMU's own limit
constexpr int kMaxChain = 16;

uint64_t be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}
uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}

// Names and paths taken from an image (a backing file's name) may hold any
// byte: an error that quotes them stays one printable line.
Error one_line(Error e) {
  for (char& c : e.message)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return e;
}

Error sys(const std::string& what) { return make_error(what + ": " + strerror(errno)); }

Status pread_all(int fd, uint8_t* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, buf + done, len - done, off_t(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys("read at " + std::to_string(off + done));
    if (n == 0)
      return make_error("read at " + std::to_string(off + done) + ": past the end of the file");
    done += size_t(n);
  }
  return {};
}

Status pwrite_all(int fd, const uint8_t* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, buf + done, len - done, off_t(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return sys("write at " + std::to_string(off + done));
    done += size_t(n);
  }
  return {};
}

Status sync(int fd) {
  int rc;
  do rc = ::fdatasync(fd);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return sys("fdatasync");
  return {};
}

Result<uint64_t> file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return sys("fstat");
  if (S_ISBLK(st.st_mode)) {
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return sys("lseek");
    return uint64_t(end);
  }
  return uint64_t(st.st_size);
}

class Raw : public Image {
 public:
  Raw(UniqueFd fd, uint64_t size, bool ro) : fd_(std::move(fd)), size_(size), ro_(ro) {}
  uint64_t size() const override { return size_; }
  Status read(uint64_t off, std::span<uint8_t> out) override {
    if (off > size_ || out.size() > size_ - off) return make_error("read beyond the disk's end");
    return pread_all(fd_.get(), out.data(), out.size(), off);
  }
  Status write(uint64_t off, std::span<const uint8_t> in) override {
    if (ro_) return make_error("the image is read-only");
    if (off > size_ || in.size() > size_ - off) return make_error("write beyond the disk's end");
    return pwrite_all(fd_.get(), in.data(), in.size(), off);
  }
  Status flush() override { return sync(fd_.get()); }
  int raw_fd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  uint64_t size_;
  bool ro_;
};

struct Header {
  uint32_t version = 0;
  uint64_t backing_offset = 0;
  uint32_t backing_size = 0;
  uint32_t cluster_bits = 0;
  uint64_t size = 0;
  uint32_t crypt = 0;
  uint32_t l1_size = 0;
  uint64_t l1_offset = 0;
  uint64_t reftable_offset = 0;
  uint32_t reftable_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t incompatible = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 72;
  std::string backing_file, backing_format;
};

// The header and its extensions, checked for what can be checked without the tables.
Result<Header> read_header(int fd, uint64_t fsize) {
  uint8_t h[104] = {};
  if (fsize < 72) return make_error("not a qcow2 image: shorter than its header");
  if (auto s = pread_all(fd, h, std::min<uint64_t>(sizeof h, fsize), 0); !s) return s.error();
  if (be32(h) != kQcowMagic) return make_error("not a qcow2 image");
  Header r;
  r.version = be32(h + 4);
  if (r.version != 2 && r.version != 3)
    return make_error("qcow2 version " + std::to_string(r.version) + " (only 2 and 3)");
  r.backing_offset = be64(h + 8);
  r.backing_size = be32(h + 16);
  r.cluster_bits = be32(h + 20);
  r.size = be64(h + 24);
  r.crypt = be32(h + 32);
  r.l1_size = be32(h + 36);
  r.l1_offset = be64(h + 40);
  r.reftable_offset = be64(h + 48);
  r.reftable_clusters = be32(h + 56);
  r.nb_snapshots = be32(h + 60);
  if (r.cluster_bits < 9 || r.cluster_bits > 21)
    return make_error("cluster size 2^" + std::to_string(r.cluster_bits) + " out of range");
  const uint64_t cluster = 1ull << r.cluster_bits;
  if (r.crypt != 0) return make_error("encrypted image (not supported)");
  if (r.size > (1ull << 61)) return make_error("virtual size out of range");
  if (r.version == 3) {
    if (fsize < 104) return make_error("truncated header");
    r.incompatible = be64(h + 72);
    r.refcount_order = be32(h + 96);
    r.header_length = be32(h + 100);
    if (r.header_length < 104 || r.header_length > cluster)
      return make_error("header length " + std::to_string(r.header_length) + " out of range");
    if (r.refcount_order > 6) return make_error("refcount order out of range");
    if (r.incompatible & kIncompatCorrupt)
      return make_error("image marked corrupt (qemu-img check -r all may repair it)");
    if (r.incompatible & kIncompatDataFile) return make_error("external data file (not supported)");
    if (r.incompatible & kIncompatExtendedL2)
      return make_error("extended L2 entries (not supported)");
    const uint64_t unknown =
        r.incompatible & ~(kIncompatDirty | kIncompatCorrupt | kIncompatDataFile |
                           kIncompatCompression | kIncompatExtendedL2);
    if (unknown) return make_error("unknown incompatible features " + std::to_string(unknown));
  }
  const uint64_t l2_entries = cluster / 8;
  const uint64_t needed = (r.size + cluster * l2_entries - 1) / (cluster * l2_entries);
  if (r.l1_size < needed || r.l1_size > kMaxL1Entries)
    return make_error("L1 table size " + std::to_string(r.l1_size) + " does not fit the disk size");
  if (r.l1_offset % cluster || r.l1_offset > fsize || uint64_t(r.l1_size) * 8 > fsize - r.l1_offset)
    return make_error("L1 table outside the file (truncated image?)");
  if (r.reftable_offset % cluster || r.reftable_clusters == 0 || r.reftable_offset > fsize ||
      uint64_t(r.reftable_clusters) * cluster > fsize - r.reftable_offset)
    return make_error("refcount table outside the file (truncated image?)");
  // Header extensions, then the backing file's name, all in the first cluster.
  const uint64_t first = std::min(cluster, fsize);
  std::vector<uint8_t> c(first);
  if (auto s = pread_all(fd, c.data(), c.size(), 0); !s) return s.error();
  if (r.version == 3) {
    uint64_t at = r.header_length;
    for (;;) {
      if (at + 8 > first) return make_error("header extensions run past the first cluster");
      const uint32_t type = be32(&c[at]), len = be32(&c[at + 4]);
      if (type == kExtEnd) break;
      if (len > first - at - 8) return make_error("header extension runs past the first cluster");
      if (type == kExtBackingFormat)
        r.backing_format.assign(reinterpret_cast<char*>(&c[at + 8]), len);
      at += 8 + ((uint64_t(len) + 7) & ~7ull);
    }
  }
  if (r.backing_offset) {
    if (r.backing_size == 0 || r.backing_size > 1023 || r.backing_offset > first ||
        r.backing_size > first - r.backing_offset)
      return make_error("backing file name out of range");
    r.backing_file.assign(reinterpret_cast<char*>(&c[r.backing_offset]), r.backing_size);
    if (r.backing_file.find('\0') != std::string::npos)
      return make_error("backing file name holds a NUL");
  }
  return r;
}

class Qcow2 : public Image {
 public:
  Qcow2(UniqueFd fd, std::unique_ptr<Image> backing, bool ro, const Header& h, uint64_t fsize)
      : fd_(std::move(fd)),
        backing_(std::move(backing)),
        ro_(ro),
        h_(h),
        cluster_(1ull << h.cluster_bits),
        l2_entries_(cluster_ / 8),
        end_((fsize + cluster_ - 1) & ~(cluster_ - 1)) {}

  // Loads L1 and the refcount table; checks every L1 and L2 entry: inside
  // the file, and no data cluster on metadata (a write there would rewrite
  // the image's own tables).
  Status load(uint64_t fsize) {
    auto claim = [&](uint64_t off, uint64_t len) {
      for (uint64_t c = off & ~(cluster_ - 1); c < off + len; c += cluster_)
        if (!meta_.insert(c).second) return false;
      return true;
    };
    claim(0, cluster_);
    if (!claim(h_.l1_offset, uint64_t(h_.l1_size) * 8) ||
        !claim(h_.reftable_offset, uint64_t(h_.reftable_clusters) * cluster_))
      return make_error("corrupt image: the L1 and refcount tables overlap");
    const size_t rt = size_t(h_.reftable_clusters) * cluster_ / 8;
    std::vector<uint8_t> rraw(rt * 8);
    if (auto s = pread_all(fd_.get(), rraw.data(), rraw.size(), h_.reftable_offset); !s) return s;
    reftable_.resize(rt);
    for (size_t i = 0; i < rt; ++i) {
      reftable_[i] = be64(&rraw[i * 8]) & kOffsetMask;
      if (!reftable_[i]) continue;
      if (reftable_[i] % cluster_ || reftable_[i] > fsize || cluster_ > fsize - reftable_[i])
        return make_error("refcount block outside the file (truncated image?)");
      if (!claim(reftable_[i], cluster_))
        return make_error("corrupt image: a refcount block overlaps other metadata");
    }
    std::vector<uint8_t> raw(size_t(h_.l1_size) * 8);
    if (auto s = pread_all(fd_.get(), raw.data(), raw.size(), h_.l1_offset); !s) return s;
    l1_.resize(h_.l1_size);
    for (uint32_t i = 0; i < h_.l1_size; ++i) {
      l1_[i] = be64(&raw[size_t(i) * 8]);
      const uint64_t off = l1_[i] & kOffsetMask;
      if (!off) continue;
      if (off % cluster_ || off > fsize || cluster_ > fsize - off)
        return make_error("L2 table " + std::to_string(i) + " outside the file (truncated image?)");
      if (!claim(off, cluster_))
        return make_error("corrupt image: L2 table " + std::to_string(i) + " overlaps metadata");
    }
    std::vector<uint8_t> l2(cluster_);
    for (uint32_t i = 0; i < h_.l1_size; ++i) {
      const uint64_t off = l1_[i] & kOffsetMask;
      if (!off) continue;
      if (auto s = pread_all(fd_.get(), l2.data(), l2.size(), off); !s) return s;
      for (uint64_t j = 0; j < l2_entries_; ++j) {
        const uint64_t e = be64(&l2[j * 8]);
        const uint64_t guest = (uint64_t(i) * l2_entries_ + j) * cluster_;
        if (e & kCompressed)
          return make_error("compressed cluster at disk offset " + std::to_string(guest) +
                            " (not supported: qemu-img convert -O qcow2 without -c)");
        const uint64_t host = e & kOffsetMask;
        if (!host) continue;
        if (host % cluster_ || host > fsize || cluster_ > fsize - host)
          return make_error("data cluster for disk offset " + std::to_string(guest) +
                            " outside the file (truncated image?)");
        if (meta_.count(host))
          return make_error("corrupt image: the data cluster for disk offset " +
                            std::to_string(guest) + " is metadata");
      }
    }
    return {};
  }

  uint64_t size() const override { return h_.size; }

  Status read(uint64_t off, std::span<uint8_t> out) override {
    if (off > h_.size || out.size() > h_.size - off)
      return make_error("read beyond the disk's end");
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t at = off + done, in = at & (cluster_ - 1);
      const size_t n = size_t(std::min<uint64_t>(cluster_ - in, out.size() - done));
      auto e = l2_entry(at);
      if (!e) return e.error();
      const uint64_t host = *e & kOffsetMask;
      uint8_t* dst = out.data() + done;
      if (*e & kCompressed) return make_error("compressed cluster (not supported)");
      if (h_.version == 3 && (*e & kZero)) {
        memset(dst, 0, n);
      } else if (host) {
        if (auto s = pread_all(fd_.get(), dst, n, host + in); !s) return s;
      } else if (auto s = read_backing(at, std::span<uint8_t>(dst, n)); !s) {
        return s;
      }
      done += n;
    }
    return {};
  }

  Status write(uint64_t off, std::span<const uint8_t> in) override {
    if (ro_) return make_error("the image is read-only");
    if (off > h_.size || in.size() > h_.size - off)
      return make_error("write beyond the disk's end");
    size_t done = 0;
    while (done < in.size()) {
      const uint64_t at = off + done, within = at & (cluster_ - 1);
      const size_t n = size_t(std::min<uint64_t>(cluster_ - within, in.size() - done));
      if (auto s = write_in_cluster(at, within, in.subspan(done, n)); !s) return s;
      done += n;
    }
    return {};
  }

  Status flush() override { return sync(fd_.get()); }

 private:
  // The L2 entry for guest offset `at` (0: unallocated, also when no L2 table).
  Result<uint64_t> l2_entry(uint64_t at) {
    const uint64_t idx = at >> h_.cluster_bits;
    const uint64_t l2 = l1_[idx / l2_entries_] & kOffsetMask;
    if (!l2) return uint64_t(0);
    auto t = l2_table(l2);
    if (!t) return t.error();
    return (**t)[idx % l2_entries_];
  }

  // An L2 table, from the cache (this process is the image's only writer,
  // and every write of an entry goes through set_l2_entry).  At most 8 MiB
  // of tables are kept; a full cache forgets one.
  Result<std::vector<uint64_t>*> l2_table(uint64_t off) {
    auto it = l2_cache_.find(off);
    if (it != l2_cache_.end()) return &it->second;
    const size_t max_tables = std::max<size_t>(1, (8u << 20) / cluster_);
    if (l2_cache_.size() >= max_tables) l2_cache_.erase(l2_cache_.begin());
    std::vector<uint8_t> raw(cluster_);
    if (auto s = pread_all(fd_.get(), raw.data(), raw.size(), off); !s) return s.error();
    std::vector<uint64_t> t(l2_entries_);
    for (uint64_t j = 0; j < l2_entries_; ++j) t[j] = be64(&raw[j * 8]);
    return &l2_cache_.emplace(off, std::move(t)).first->second;
  }

  Status set_l2_entry(uint64_t l2, uint64_t i, uint64_t value) {
    uint8_t b[8];
    put_be64(b, value);
    if (auto s = pwrite_all(fd_.get(), b, 8, l2 + i * 8); !s) return s;
    if (auto it = l2_cache_.find(l2); it != l2_cache_.end()) it->second[i] = value;
    return {};
  }

  Status read_backing(uint64_t at, std::span<uint8_t> out) {
    const uint64_t bsize = backing_ ? backing_->size() : 0;
    const size_t from = at >= bsize ? 0 : size_t(std::min<uint64_t>(out.size(), bsize - at));
    if (from) {
      if (auto s = backing_->read(at, out.subspan(0, from)); !s) return s;
    }
    memset(out.data() + from, 0, out.size() - from);
    return {};
  }

  // A fresh cluster at the end of the file, its refcount set to 1.
  Result<uint64_t> allocate() {
    const uint64_t host = end_;
    end_ += cluster_;
    if (auto s = set_refcount(host, 1); !s) return s.error();
    return host;
  }

  Status set_refcount(uint64_t host, uint64_t value) {
    const uint32_t bits = 1u << h_.refcount_order;
    if (bits < 8) return make_error("refcounts narrower than a byte (not supported for writing)");
    const uint64_t per_block = cluster_ * 8 / bits;
    const uint64_t idx = host >> h_.cluster_bits;
    const uint64_t t = idx / per_block;
    if (t >= reftable_.size())
      return make_error("refcount table full (growing it is not supported)");
    if (!reftable_[t]) {
      // A new refcount block, at the end of the file; it counts itself when
      // it lands in the range it covers.
      const uint64_t block = end_;
      end_ += cluster_;
      std::vector<uint8_t> z(cluster_, 0);
      if (auto s = pwrite_all(fd_.get(), z.data(), z.size(), block); !s) return s;
      reftable_[t] = block;
      if ((block >> h_.cluster_bits) / per_block == t) {
        if (auto s = put_count(block, (block >> h_.cluster_bits) % per_block, 1); !s) return s;
      } else if (auto s = set_refcount(block, 1); !s) {
        return s;
      }
      uint8_t b[8];
      put_be64(b, block);
      if (auto s = pwrite_all(fd_.get(), b, 8, h_.reftable_offset + t * 8); !s) return s;
    }
    return put_count(reftable_[t], idx % per_block, value);
  }

  Status put_count(uint64_t block, uint64_t i, uint64_t value) {
    const uint32_t bytes = (1u << h_.refcount_order) / 8;
    uint8_t b[8];
    for (uint32_t k = 0; k < bytes; ++k) b[k] = uint8_t(value >> (8 * (bytes - 1 - k)));
    return pwrite_all(fd_.get(), b, bytes, block + i * bytes);
  }

  Status write_in_cluster(uint64_t at, uint64_t within, std::span<const uint8_t> data) {
    const uint64_t idx = at >> h_.cluster_bits, l1i = idx / l2_entries_;
    uint64_t l2 = l1_[l1i] & kOffsetMask;
    if (l2 && !(l1_[l1i] & kCopied)) return make_error("shared L2 table (internal snapshots?)");
    auto e = l2 ? l2_entry(at) : Result<uint64_t>(uint64_t(0));
    if (!e) return e.error();
    const uint64_t host = *e & kOffsetMask;
    const bool zero = h_.version == 3 && (*e & kZero);
    if (host && !zero) {
      if (!(*e & kCopied)) return make_error("shared cluster (internal snapshots?)");
      return pwrite_all(fd_.get(), data.data(), data.size(), host + within);
    }
    // A cluster of its own: what the disk reads there now, with the write in it.
    std::vector<uint8_t> c(cluster_, 0);
    const uint64_t base = at - within;
    if (!zero) {
      const uint64_t len = std::min<uint64_t>(cluster_, h_.size - base);
      if (auto s = read_backing(base, std::span<uint8_t>(c.data(), len)); !s) return s;
    }
    memcpy(c.data() + within, data.data(), data.size());
    uint64_t target = host;  // a preallocated zero cluster keeps its place
    if (!target) {
      auto a = allocate();
      if (!a) return a.error();
      target = *a;
    }
    // Data, then its refcount (above), then the tables that point at it: a
    // crash in between leaks a cluster, never points at garbage.
    if (auto s = pwrite_all(fd_.get(), c.data(), c.size(), target); !s) return s;
    if (!l2) {
      auto t = allocate();
      if (!t) return t.error();
      std::vector<uint8_t> z(cluster_, 0);
      if (auto s = pwrite_all(fd_.get(), z.data(), z.size(), *t); !s) return s;
      l2 = *t;
      l2_cache_[l2] = std::vector<uint64_t>(l2_entries_, 0);
      uint8_t b[8];
      put_be64(b, l2 | kCopied);
      if (auto s = pwrite_all(fd_.get(), b, 8, h_.l1_offset + l1i * 8); !s) return s;
      l1_[l1i] = l2 | kCopied;
    }
    return set_l2_entry(l2, idx % l2_entries_, target | kCopied);
  }

  UniqueFd fd_;
  std::unique_ptr<Image> backing_;
  bool ro_;
  Header h_;
  uint64_t cluster_, l2_entries_;
  uint64_t end_;  // where the next cluster goes
  std::vector<uint64_t> l1_, reftable_;
  std::set<uint64_t> meta_;                             // clusters holding metadata, as loaded
  std::map<uint64_t, std::vector<uint64_t>> l2_cache_;  // by the table's offset
};

}  // namespace

namespace {
Result<std::unique_ptr<Image>> open_qcow2_unchecked(UniqueFd fd, std::unique_ptr<Image> backing,
                                                    bool read_only);
}  // namespace

Result<ImageInfo> probe(int fd) {
  auto fsize = file_size(fd);
  if (!fsize) return fsize.error();
  uint8_t m[4] = {};
  if (*fsize >= 4) {
    if (auto s = pread_all(fd, m, 4, 0); !s) return s.error();
  }
  ImageInfo info;
  if (*fsize < 4 || be32(m) != kQcowMagic) {
    info.format = "raw";
    info.size = *fsize;
    return info;
  }
  auto h = read_header(fd, *fsize);
  if (!h) return h.error();
  info.format = "qcow2";
  info.size = h->size;
  info.backing_file = h->backing_file;
  info.backing_format = h->backing_format;
  return info;
}

std::unique_ptr<Image> open_raw(UniqueFd fd, bool read_only) {
  auto size = file_size(fd.get());
  return std::make_unique<Raw>(std::move(fd), size ? *size : 0, read_only);
}

Result<std::unique_ptr<Image>> open_qcow2(UniqueFd fd, std::unique_ptr<Image> backing,
                                          bool read_only) {
  auto r = open_qcow2_unchecked(std::move(fd), std::move(backing), read_only);
  if (!r) return one_line(r.error());
  return r;
}

namespace {
Result<std::unique_ptr<Image>> open_qcow2_unchecked(UniqueFd fd, std::unique_ptr<Image> backing,
                                                    bool read_only) {
  auto fsize = file_size(fd.get());
  if (!fsize) return fsize.error();
  auto h = read_header(fd.get(), *fsize);
  if (!h) return h.error();
  if (!read_only && h->nb_snapshots)
    return make_error("internal snapshots (not supported for writing)");
  if (!read_only && (h->incompatible & kIncompatDirty))
    return make_error("image marked dirty (qemu-img check -r all repairs it)");
  if (!h->backing_file.empty() && !backing)
    return make_error("backing file " + h->backing_file + " not given");
  auto q = std::make_unique<Qcow2>(std::move(fd), std::move(backing), read_only, *h, *fsize);
  if (auto s = q->load(*fsize); !s) return s.error();
  return std::unique_ptr<Image>(std::move(q));
}
}  // namespace

namespace {
// Opens `path` and its chain; with `out`, also keeps a duplicate of each fd
// and its format there.
Result<std::unique_ptr<Image>> open_at(const std::string& path, const std::string& format,
                                       bool read_only, int depth,
                                       std::set<std::pair<dev_t, ino_t>>& seen, ChainFds* out) {
  if (depth >= kMaxChain) return make_error(path + ": backing chain deeper than 16");
  UniqueFd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd) return make_error(path + ": " + strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return make_error(path + ": " + strerror(errno));
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return make_error(path + ": neither a regular file nor a block device");
  if (!seen.insert({st.st_dev, st.st_ino}).second)
    return make_error(path + ": backing chain loops back to it");
  auto info = probe(fd.get());
  if (!info) return make_error(path + ": " + info.error().message);
  const std::string fmt = format.empty() ? info->format : format;
  if (fmt != "raw" && fmt != "qcow2") return make_error(path + ": unknown format '" + fmt + "'");
  if (fmt == "qcow2" && info->format != "qcow2")
    return make_error(path + ": named as qcow2 but is not one");
  if (out) {
    out->fds.emplace_back(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    out->formats.push_back(fmt);
    if (!out->fds.back()) return make_error(path + ": " + strerror(errno));
  }
  if (fmt == "raw") return open_raw(std::move(fd), read_only);
  std::unique_ptr<Image> backing;
  if (!info->backing_file.empty()) {
    std::string b = info->backing_file;
    if (b[0] != '/') {
      const auto slash = path.rfind('/');
      b = (slash == std::string::npos ? "." : path.substr(0, slash)) + "/" + b;
    }
    auto r = open_at(b, info->backing_format, true, depth + 1, seen, out);
    if (!r) return r.error();
    backing = std::move(r).value();
  }
  auto q = open_qcow2(std::move(fd), std::move(backing), read_only);
  if (!q) return make_error(path + ": " + q.error().message);
  return q;
}
}  // namespace

Result<std::unique_ptr<Image>> open_chain(const std::string& path, bool read_only) {
  std::set<std::pair<dev_t, ino_t>> seen;
  auto r = open_at(path, "", read_only, 0, seen, nullptr);
  if (!r) return one_line(r.error());
  return r;
}

Result<uint32_t> use_direct_io(int fd) {
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) != 0)
    return make_error(std::string("statx: ") + strerror(errno));
  if (!(sx.stx_mask & STATX_DIOALIGN) || sx.stx_dio_offset_align == 0)
    return make_error("its file system does not support direct I/O (cache = \"none\")");
  const uint32_t align = std::max<uint32_t>(512, sx.stx_dio_offset_align);
  if (align > 4096 || sx.stx_dio_mem_align > 4096)
    return make_error("direct I/O on it needs an alignment of " +
                      std::to_string(std::max(align, sx.stx_dio_mem_align)) +
                      " bytes, more than a page");
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_DIRECT) != 0)
    return make_error(std::string("cannot set O_DIRECT: ") + strerror(errno));
  return align;
}

Result<ChainFds> open_chain_fds(const std::string& path, const std::string& format,
                                bool read_only) {
  std::set<std::pair<dev_t, ino_t>> seen;
  ChainFds out;
  auto img = open_at(path, format.empty() ? "raw" : format, read_only, 0, seen, &out);
  if (!img) return one_line(img.error());
  out.size = (*img)->size();
  return out;
}

Result<std::unique_ptr<Image>> open_fds(std::vector<UniqueFd> fds,
                                        const std::vector<std::string>& formats, bool read_only) {
  if (fds.empty() || fds.size() != formats.size() || fds.size() > size_t(kMaxChain))
    return make_error("an image chain of " + std::to_string(fds.size()) + " fds and " +
                      std::to_string(formats.size()) + " formats");
  std::unique_ptr<Image> img;
  for (size_t i = fds.size(); i-- > 0;) {
    const bool ro = read_only || i > 0;
    if (formats[i] == "raw") {
      if (img) return make_error("a raw image cannot have a backing file");
      img = open_raw(std::move(fds[i]), ro);
    } else if (formats[i] == "qcow2") {
      auto q = open_qcow2(std::move(fds[i]), std::move(img), ro);
      if (!q) return q.error();
      img = std::move(q).value();
    } else {
      return make_error("unknown image format '" + formats[i] + "'");
    }
  }
  return img;
}

}  // namespace axl::driverdom::blk
