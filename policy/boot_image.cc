#include "policy/boot_image.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "driverdom/blk/image.h"

namespace axl::policy {
namespace {

constexpr size_t kMaxFile = 512u << 20;  // the largest file read (a kernel, an initramfs)
constexpr char kEspGuid[] = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
constexpr char kLinuxFsGuid[] = "0fc63daf-8483-4772-8e79-3d69d8477de4";

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

// Reads within a partition, refusing anything outside it.
struct PartReader {
  const DiskRead& disk;
  const Partition& part;
  const char* what;
  Status read(uint64_t off, std::span<uint8_t> out) const {
    if (off > part.size || out.size() > part.size - off)
      return make_error(std::string(what) + ": a structure points outside its partition");
    return disk(part.offset + off, out);
  }
  Result<std::vector<uint8_t>> bytes(uint64_t off, size_t n) const {
    std::vector<uint8_t> b(n);
    if (auto s = read(off, b); !s) return s.error();
    return b;
  }
};

std::string guid_text(const uint8_t* g) {
  char s[40];
  snprintf(s, sizeof s, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", le32(g), le16(g + 4),
           le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
  return s;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

}  // namespace

Result<std::vector<Partition>> read_gpt(const DiskRead& disk, uint64_t disk_size) {
  uint8_t h[92];
  if (disk_size < 34 * 512) return make_error("GPT: the disk is too small for a partition table");
  if (auto s = disk(512, h); !s) return s.error();
  if (memcmp(h, "EFI PART", 8) != 0) return make_error("GPT: no partition table header at LBA 1");
  const uint64_t entries_lba = le64(h + 72);
  const uint32_t count = le32(h + 80), entry_size = le32(h + 84);
  if (count == 0 || count > 1024 || entry_size < 128 || entry_size > 4096 || entry_size % 8)
    return make_error("GPT: bad partition entry count or size");
  if (entries_lba < 2 || entries_lba > disk_size / 512 ||
      uint64_t(count) * entry_size > disk_size - entries_lba * 512)
    return make_error("GPT: the partition entries lie outside the disk");
  std::vector<uint8_t> e(size_t(count) * entry_size);
  if (auto s = disk(entries_lba * 512, e); !s) return s.error();
  std::vector<Partition> parts;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* p = e.data() + size_t(i) * entry_size;
    static const uint8_t kZero[16] = {};
    if (memcmp(p, kZero, 16) == 0) continue;
    const uint64_t first = le64(p + 32), last = le64(p + 40);
    if (last < first || last >= disk_size / 512)
      return make_error("GPT: partition " + std::to_string(i + 1) + " lies outside the disk");
    parts.push_back(Partition{guid_text(p), first * 512, (last - first + 1) * 512});
  }
  return parts;
}

// ---- FAT -------------------------------------------------------------------

Result<std::string> read_fat_file(const DiskRead& disk, const Partition& part,
                                  const std::string& path) {
  PartReader r{disk, part, "FAT"};
  auto bs = r.bytes(0, 512);
  if (!bs) return bs.error();
  const uint8_t* b = bs->data();
  const uint32_t bps = le16(b + 11), spc = b[13], reserved = le16(b + 14), nfats = b[16];
  const uint32_t root_entries = le16(b + 17);
  const uint32_t total = le16(b + 19) ? le16(b + 19) : le32(b + 32);
  const uint32_t fat_size = le16(b + 22) ? le16(b + 22) : le32(b + 36);
  if ((bps != 512 && bps != 1024 && bps != 2048 && bps != 4096) || spc == 0 || (spc & (spc - 1)) ||
      nfats == 0 || fat_size == 0 || reserved == 0 || le16(b + 510) != 0xAA55)
    return make_error("FAT: not a FAT file system");
  const uint64_t root_dir_sectors = (uint64_t(root_entries) * 32 + bps - 1) / bps;
  const uint64_t data_start = reserved + uint64_t(nfats) * fat_size + root_dir_sectors;
  if (data_start >= total) return make_error("FAT: bad geometry");
  const uint64_t clusters = (total - data_start) / spc;
  const int bits = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
  const uint64_t cluster_bytes = uint64_t(spc) * bps;
  auto fat = r.bytes(uint64_t(reserved) * bps, size_t(fat_size) * bps);
  if (!fat) return fat.error();
  auto next = [&](uint32_t c) -> uint32_t {
    const uint64_t at = bits == 12 ? c + c / 2 : uint64_t(c) * (bits / 8);
    if (at + 4 > fat->size()) return 0x0FFFFFFF;
    const uint8_t* p = fat->data() + at;
    if (bits == 12) return (c & 1 ? le16(p) >> 4 : le16(p) & 0xFFF);
    if (bits == 16) return le16(p);
    return le32(p) & 0x0FFFFFFF;
  };
  auto is_end = [&](uint32_t c) {
    return c < 2 || c >= (bits == 12 ? 0xFF7u : bits == 16 ? 0xFFF7u : 0x0FFFFFF7u);
  };
  // A cluster chain's bytes, at most `limit`.
  auto chain = [&](uint32_t first, uint64_t limit) -> Result<std::string> {
    std::string out;
    uint32_t c = first;
    for (uint64_t n = 0; !is_end(c) && out.size() < limit; ++n, c = next(c)) {
      if (n > clusters || c - 2 >= clusters) return make_error("FAT: a broken cluster chain");
      auto d = r.bytes((data_start + uint64_t(c - 2) * spc) * bps, cluster_bytes);
      if (!d) return d.error();
      out.append(reinterpret_cast<const char*>(d->data()), d->size());
    }
    if (out.size() > limit) out.resize(limit);
    return out;
  };
  std::string dir;
  if (bits == 32) {
    auto d = chain(le32(b + 44), kMaxFile);
    if (!d) return d.error();
    dir = std::move(*d);
  } else {
    auto d = r.bytes((reserved + uint64_t(nfats) * fat_size) * bps, size_t(root_entries) * 32);
    if (!d) return d.error();
    dir.assign(reinterpret_cast<const char*>(d->data()), d->size());
  }
  const auto parts = split_path(path);
  for (size_t i = 0; i < parts.size(); ++i) {
    // The 8.3 name, as the directory holds it.
    std::string want(11, ' ');
    std::string up = parts[i];
    for (char& ch : up) ch = char(toupper(static_cast<unsigned char>(ch)));
    const size_t dot = up.rfind('.');
    const std::string base = up.substr(0, dot),
                      ext = dot == std::string::npos ? "" : up.substr(dot + 1);
    if (base.empty() || base.size() > 8 || ext.size() > 3)
      return make_error("FAT: '" + parts[i] + "' is not an 8.3 name");
    want.replace(0, base.size(), base);
    want.replace(8, ext.size(), ext);
    bool found = false;
    for (size_t at = 0; at + 32 <= dir.size(); at += 32) {
      const auto* e = reinterpret_cast<const uint8_t*>(dir.data() + at);
      if (e[0] == 0) break;
      if (e[0] == 0xE5 || (e[11] & 0x0F) == 0x0F || (e[11] & 0x08)) continue;
      if (memcmp(e, want.data(), 11) != 0) continue;
      const uint32_t first = uint32_t(le16(e + 20)) << 16 | le16(e + 26);
      const bool is_dir = e[11] & 0x10;
      if (i + 1 < parts.size()) {
        if (!is_dir) return make_error("FAT: '" + parts[i] + "' is not a directory");
        auto d = chain(first, kMaxFile);
        if (!d) return d.error();
        dir = std::move(*d);
      } else {
        if (is_dir) return make_error("FAT: " + path + " is a directory");
        const uint32_t size = le32(e + 28);
        if (size > kMaxFile) return make_error("FAT: " + path + " is too large");
        auto d = chain(first, size);
        if (!d) return d.error();
        if (d->size() != size) return make_error("FAT: " + path + " is shorter than its size");
        return std::move(*d);
      }
      found = true;
      break;
    }
    if (!found) return make_error("FAT: no " + path);
  }
  return make_error("FAT: no " + path);
}

// ---- ext4 ------------------------------------------------------------------

namespace {

class Ext4 {
 public:
  Ext4(const DiskRead& disk, const Partition& part) : r_{disk, part, "ext4"} {}

  Status open() {
    auto sb = r_.bytes(1024, 1024);
    if (!sb) return sb.error();
    const uint8_t* s = sb->data();
    if (le16(s + 0x38) != 0xEF53) return make_error("ext4: no superblock");
    const uint32_t log = le32(s + 0x18);
    if (log > 6) return make_error("ext4: bad block size");
    bs_ = 1024u << log;
    inodes_per_group_ = le32(s + 0x28);
    inodes_ = le32(s + 0x00);
    first_data_block_ = le32(s + 0x14);
    inode_size_ = le32(s + 0x4C) >= 1 ? le16(s + 0x58) : 128;
    const uint32_t incompat = le32(s + 0x60);
    desc_size_ = (incompat & 0x80) ? le16(s + 0xFE) : 32;
    if (inodes_per_group_ == 0 || inode_size_ < 128 || inode_size_ > bs_ ||
        (inode_size_ & (inode_size_ - 1)) || desc_size_ < 32 || desc_size_ > 1024)
      return make_error("ext4: bad superblock");
    if (incompat & 0x8000) return make_error("ext4: inline data is not supported");
    return {};
  }

  // An inode's 160 first bytes.
  Result<std::vector<uint8_t>> inode(uint32_t n) {
    if (n == 0 || n > inodes_)
      return make_error("ext4: inode " + std::to_string(n) + " out of range");
    const uint32_t group = (n - 1) / inodes_per_group_, index = (n - 1) % inodes_per_group_;
    auto d = r_.bytes((uint64_t(first_data_block_) + 1) * bs_ + uint64_t(group) * desc_size_,
                      desc_size_);
    if (!d) return d.error();
    uint64_t table = le32(d->data() + 8);
    if (desc_size_ >= 64) table |= uint64_t(le32(d->data() + 0x28)) << 32;
    return r_.bytes(table * bs_ + uint64_t(index) * inode_size_, 160);
  }

  // A file's contents, through its extent tree.
  Result<std::string> contents(const std::vector<uint8_t>& ino) {
    uint64_t size = le32(ino.data() + 4) | uint64_t(le32(ino.data() + 0x6C)) << 32;
    if (size > kMaxFile) return make_error("ext4: a file is too large");
    if (!(le32(ino.data() + 0x20) & 0x80000))
      return make_error("ext4: a block-mapped file (only extents are supported)");
    std::string out(size, '\0');
    std::vector<uint8_t> root(ino.begin() + 0x28, ino.begin() + 0x28 + 60);
    if (auto s = walk(root, out, 0); !s) return s.error();
    return out;
  }

  Result<uint32_t> lookup(uint32_t dir_ino, const std::string& name) {
    auto ino = inode(dir_ino);
    if (!ino) return ino.error();
    if ((le16(ino->data()) & 0xF000) != 0x4000) return make_error("ext4: not a directory");
    auto d = contents(*ino);
    if (!d) return d.error();
    const auto* p = reinterpret_cast<const uint8_t*>(d->data());
    for (size_t at = 0; at + 8 <= d->size();) {
      const uint32_t n = le32(p + at);
      const uint16_t rec = le16(p + at + 4);
      const uint8_t len = p[at + 6];
      if (rec < 8 || rec % 4 || at + rec > d->size() || 8u + len > rec)
        return make_error("ext4: a broken directory entry");
      if (n != 0 && len == name.size() && memcmp(p + at + 8, name.data(), len) == 0) return n;
      at += rec;
    }
    return make_error("ext4: no '" + name + "'");
  }

 private:
  Status walk(const std::vector<uint8_t>& node, std::string& out, int depth) {
    if (depth > 5) return make_error("ext4: an extent tree too deep");
    if (node.size() < 12 || le16(node.data()) != 0xF30A)
      return make_error("ext4: a broken extent tree");
    const uint16_t entries = le16(node.data() + 2), level = le16(node.data() + 6);
    if (12u + entries * 12u > node.size()) return make_error("ext4: a broken extent tree");
    for (uint16_t i = 0; i < entries; ++i) {
      const uint8_t* e = node.data() + 12 + i * 12;
      if (level > 0) {
        const uint64_t leaf = le32(e + 4) | uint64_t(le16(e + 8)) << 32;
        auto child = r_.bytes(leaf * bs_, bs_);
        if (!child) return child.error();
        if (auto s = walk(*child, out, depth + 1); !s) return s;
        continue;
      }
      const uint64_t logical = le32(e);
      uint32_t len = le16(e + 4);
      const bool unwritten = len > 32768;
      if (unwritten) len -= 32768;
      const uint64_t phys = le32(e + 8) | uint64_t(le16(e + 6)) << 32;
      const uint64_t start = logical * bs_;
      if (start >= out.size() || unwritten) continue;  // past the end, or reads as zeros
      const uint64_t n = std::min<uint64_t>(uint64_t(len) * bs_, out.size() - start);
      if (auto s =
              r_.read(phys * bs_, std::span(reinterpret_cast<uint8_t*>(out.data() + start), n));
          !s)
        return s;
    }
    return {};
  }

  PartReader r_;
  uint32_t bs_ = 1024, inodes_per_group_ = 0, inodes_ = 0, first_data_block_ = 0;
  uint32_t inode_size_ = 128, desc_size_ = 32;
};

}  // namespace

Result<std::string> read_ext4_file(const DiskRead& disk, const Partition& part,
                                   const std::string& path) {
  Ext4 fs(disk, part);
  if (auto s = fs.open(); !s) return s.error();
  uint32_t n = 2;  // the root directory
  for (const auto& name : split_path(path)) {
    auto next = fs.lookup(n, name);
    if (!next) return make_error(next.error().message + " (looking for " + path + ")");
    n = *next;
  }
  auto ino = fs.inode(n);
  if (!ino) return ino.error();
  if ((le16(ino->data()) & 0xF000) != 0x8000) return make_error("ext4: " + path + " is not a file");
  return fs.contents(*ino);
}

// ---- Authenticode ------------------------------------------------------------

Result<Sha256> authenticode_sha256(std::string_view pe) {
  auto u = [&](size_t at, int bytes) -> Result<uint32_t> {
    if (at + size_t(bytes) > pe.size()) return make_error("PE: truncated headers");
    const auto* p = reinterpret_cast<const uint8_t*>(pe.data() + at);
    return bytes == 2 ? le16(p) : le32(p);
  };
  if (pe.size() < 64 || pe[0] != 'M' || pe[1] != 'Z') return make_error("PE: no MZ header");
  auto lfanew = u(0x3C, 4);
  if (!lfanew || *lfanew > pe.size() - 24 || pe.substr(*lfanew, 4) != std::string_view("PE\0\0", 4))
    return make_error("PE: no PE signature");
  const size_t coff = *lfanew + 4, opt = coff + 20;
  auto nsec = u(coff + 2, 2), optsize = u(coff + 16, 2), magic = u(opt, 2);
  if (!nsec || !optsize || !magic) return make_error("PE: truncated headers");
  const bool plus = *magic == 0x20B;
  if (!plus && *magic != 0x10B) return make_error("PE: unknown optional header magic");
  const size_t checksum = opt + 64;
  auto hdrs = u(opt + 60, 4), ndirs = u(opt + (plus ? 108 : 92), 4);
  if (!hdrs || !ndirs || *hdrs > pe.size() || checksum + 4 > *hdrs)
    return make_error("PE: bad header size");
  const size_t certdir = opt + (plus ? 112 : 96) + 4 * 8;
  const bool has_cert = *ndirs > 4 && certdir + 8 <= *hdrs;
  uint32_t cert_size = 0;
  if (has_cert) {
    auto cs = u(certdir + 4, 4);
    if (!cs) return cs.error();
    cert_size = *cs;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  auto add = [&](size_t from, size_t to) {
    EVP_DigestUpdate(ctx.get(), pe.data() + from, to - from);
  };
  add(0, checksum);
  if (has_cert) {
    add(checksum + 4, certdir);
    add(certdir + 8, *hdrs);
  } else {
    add(checksum + 4, *hdrs);
  }
  struct Sec {
    uint32_t ptr, size;
  };
  std::vector<Sec> secs;
  const size_t table = opt + *optsize;
  for (uint32_t i = 0; i < *nsec && i < 96; ++i) {
    auto size = u(table + i * 40 + 16, 4), ptr = u(table + i * 40 + 20, 4);
    if (!size || !ptr) return make_error("PE: truncated section table");
    if (*size == 0) continue;
    if (*ptr > pe.size() || *size > pe.size() - *ptr)
      return make_error("PE: a section lies outside the file");
    secs.push_back({*ptr, *size});
  }
  std::sort(secs.begin(), secs.end(), [](const Sec& a, const Sec& b) { return a.ptr < b.ptr; });
  uint64_t hashed = *hdrs;
  for (const auto& s : secs) {
    add(s.ptr, size_t(s.ptr) + s.size);
    hashed += s.size;
  }
  if (pe.size() > hashed) {
    if (cert_size > pe.size() - hashed)
      return make_error("PE: the certificate table lies outside the file");
    add(size_t(hashed), pe.size() - cert_size);
  }
  Sha256 d{};
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx.get(), d.data(), &len);
  return d;
}

// ---- GRUB ------------------------------------------------------------------

Result<std::vector<Event>> grub_events(
    const std::string& cfg, const std::string& cfg_path, const std::string& platform,
    const std::function<Result<std::string>(const std::string&)>& read_file) {
  std::vector<Event> ev;
  auto file_event = [&](const std::string& path, const std::string& data) {
    ev.push_back(Event{kPcrKernel, kEvIpl, sha256(data), path});
  };
  auto string_event = [&](const std::string& prefix, const std::string& text) {
    ev.push_back(Event{kPcrCmdline, kEvIpl, sha256(text), prefix + text});
  };
  file_event(cfg_path, cfg);
  std::map<std::string, std::string> vars = {{"grub_platform", platform}};
  // One line's words, variables expanded and quotes removed.
  auto words_of = [&](const std::string& line, size_t lineno) -> Result<std::vector<std::string>> {
    std::vector<std::string> words;
    std::string cur;
    bool in_word = false;
    char quote = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      char c = line[i];
      if (quote == '\'') {
        if (c == '\'')
          quote = 0;
        else
          cur += c;
        continue;
      }
      if (c == '$' && quote != '\'') {
        std::string name;
        size_t j = i + 1;
        if (j < line.size() && line[j] == '{') {
          size_t k = line.find('}', j);
          if (k == std::string::npos)
            return make_error("grub.cfg line " + std::to_string(lineno) + ": unterminated ${");
          name = line.substr(j + 1, k - j - 1);
          i = k;
        } else {
          while (j < line.size() &&
                 (isalnum(static_cast<unsigned char>(line[j])) || line[j] == '_'))
            name += line[j++];
          i = j - 1;
        }
        cur += vars.count(name) ? vars[name] : "";
        in_word = true;
        continue;
      }
      if (quote == '"') {
        if (c == '"')
          quote = 0;
        else if (c == '\\' && i + 1 < line.size())
          cur += line[++i];
        else
          cur += c;
        continue;
      }
      if (c == '"' || c == '\'') {
        quote = c;
        in_word = true;
      } else if (c == ' ' || c == '\t') {
        if (in_word) words.push_back(cur);
        cur.clear();
        in_word = false;
      } else if (c == '#' && !in_word) {
        break;
      } else if (c == '\\' && i + 1 < line.size()) {
        cur += line[++i];
        in_word = true;
      } else {
        cur += c;
        in_word = true;
      }
    }
    if (quote)
      return make_error("grub.cfg line " + std::to_string(lineno) + ": unterminated quote");
    if (in_word) words.push_back(cur);
    return words;
  };
  auto join = [](const std::vector<std::string>& w, size_t from) {
    std::string s;
    for (size_t i = from; i < w.size(); ++i) s += (i > from ? " " : "") + w[i];
    return s;
  };
  // The stack of if-blocks: whether this branch runs.
  struct Block {
    bool parent_runs, cond, in_else;
  };
  std::vector<Block> blocks;
  auto running = [&] {
    return blocks.empty() || (blocks.back().parent_runs &&
                              (blocks.back().in_else ? !blocks.back().cond : blocks.back().cond));
  };
  size_t lineno = 0, pos = 0;
  while (pos <= cfg.size()) {
    size_t nl = cfg.find('\n', pos);
    if (nl == std::string::npos) nl = cfg.size();
    std::string line = cfg.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    const std::string where = "grub.cfg line " + std::to_string(lineno);
    auto w = words_of(line, lineno);
    if (!w) return w.error();
    if (w->empty()) continue;
    const std::string& cmd = (*w)[0];
    if (cmd == "if") {
      // if [ A = B ]; then    (the condition is a command GRUB measures)
      const std::string& semi = w->size() >= 3 ? (*w)[w->size() - 2] : std::string();
      if (w->back() != "then" || semi.empty() || semi.back() != ';')
        return make_error(where + ": only 'if [ ... ]; then' is understood");
      std::vector<std::string> cond(w->begin() + 1, w->end() - 1);
      cond.back().pop_back();  // the ';'
      if (cond.back().empty()) cond.pop_back();
      if (!(cond.size() == 5 && cond[0] == "[" && cond[4] == "]" &&
            (cond[2] == "=" || cond[2] == "!=")))
        return make_error(where + ": only '[ A = B ]' and '[ A != B ]' conditions are understood");
      const bool runs = running();
      if (runs) string_event("grub_cmd: ", join(cond, 0));
      const bool eq = cond[1] == cond[3];
      blocks.push_back({runs, cond[2] == "=" ? eq : !eq, false});
      continue;
    }
    if (cmd == "else") {
      if (blocks.empty() || blocks.back().in_else || w->size() != 1)
        return make_error(where + ": 'else' without 'if'");
      blocks.back().in_else = true;
      continue;
    }
    if (cmd == "fi") {
      if (blocks.empty() || w->size() != 1) return make_error(where + ": 'fi' without 'if'");
      blocks.pop_back();
      continue;
    }
    for (const char* unsupported : {"menuentry", "submenu", "function", "for", "while", "until",
                                    "source", "configfile", "elif", "insmod", "chainloader"})
      if (cmd == unsupported)
        return make_error(where + ": '" + cmd + "' is not understood by axl measure --image");
    if (!running()) continue;
    string_event("grub_cmd: ", join(*w, 0));
    if (cmd == "set") {
      if (w->size() != 2 || w->at(1).find('=') == std::string::npos)
        return make_error(where + ": only 'set NAME=VALUE' is understood");
      const size_t eq = w->at(1).find('=');
      vars[w->at(1).substr(0, eq)] = w->at(1).substr(eq + 1);
    } else if (cmd == "linux" || cmd == "linuxefi") {
      if (w->size() < 2) return make_error(where + ": " + cmd + " without a kernel");
      auto k = read_file((*w)[1]);
      if (!k) return make_error(where + ": " + k.error().message);
      file_event((*w)[1], *k);
      string_event("kernel_cmdline: ", join(*w, 1));
    } else if (cmd == "initrd" || cmd == "initrdefi") {
      for (size_t i = 1; i < w->size(); ++i) {
        auto f = read_file((*w)[i]);
        if (!f) return make_error(where + ": " + f.error().message);
        file_event((*w)[i], *f);
      }
    }
  }
  if (!blocks.empty()) return make_error("grub.cfg: 'if' without 'fi'");
  return ev;
}

// ---- The whole image ---------------------------------------------------------

Result<std::vector<Event>> measure_firmware_image(const std::string& path,
                                                  const std::string& format) {
  auto fds = driverdom::blk::open_chain_fds(path, format, true);
  if (!fds) return fds.error();
  const uint64_t size = fds->size;
  auto img = driverdom::blk::open_fds(std::move(fds->fds), fds->formats, true);
  if (!img) return img.error();
  driverdom::blk::Image& image = **img;
  DiskRead disk = [&](uint64_t off, std::span<uint8_t> out) -> Status {
    if (off > size || out.size() > size - off) return make_error("a read past the end of the disk");
    return image.read(off, out);
  };
  auto parts = read_gpt(disk, size);
  if (!parts) return parts.error();
  const Partition* esp = nullptr;
  for (const auto& p : *parts)
    if (p.type_guid == kEspGuid) esp = &p;
  if (!esp) return make_error(path + ": no EFI system partition");
  auto loader = read_fat_file(disk, *esp, "/EFI/BOOT/BOOTX64.EFI");
  if (!loader) return make_error(path + ": " + loader.error().message);
  auto app = authenticode_sha256(*loader);
  if (!app) return make_error(path + ": EFI/BOOT/BOOTX64.EFI: " + app.error().message);
  std::vector<Event> ev = {
      {4, kEvEfiAction, sha256("Calling EFI Application from Boot Option"),
       "Calling EFI Application from Boot Option"},
      {4, kEvSeparator, sha256(std::string(4, '\0')), ""},
      {4, kEvEfiBootServicesApplication, *app, "\\EFI\\BOOT\\BOOTX64.EFI"},
  };
  // GRUB's config lives on the first Linux file system that has one.
  for (const auto& p : *parts) {
    if (p.type_guid != kLinuxFsGuid) continue;
    auto cfg = read_ext4_file(disk, p, "/boot/grub/grub.cfg");
    if (!cfg) continue;
    auto g = grub_events(*cfg, "/boot/grub/grub.cfg", "efi",
                         [&](const std::string& f) { return read_ext4_file(disk, p, f); });
    if (!g) return make_error(path + ": " + g.error().message);
    ev.insert(ev.end(), g->begin(), g->end());
    return ev;
  }
  return make_error(path + ": no Linux file system with /boot/grub/grub.cfg");
}

}  // namespace axl::policy
