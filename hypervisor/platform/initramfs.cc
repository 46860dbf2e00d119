#include "hypervisor/platform/initramfs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "common/unique_fd.h"

namespace axl::hv {
namespace {

constexpr uint32_t kModeTypeMask = 0170000;
constexpr uint32_t kModeDir = 0040000;
constexpr uint32_t kModeRegular = 0100000;
constexpr uint32_t kModeSymlink = 0120000;
// newc stores sizes in 8 hex digits.
constexpr uint64_t kMaxFieldValue = 0xffffffffu;
// Inode numbers only tell hard links apart (nlink > 1); start high so they are
// recognisable when debugging and cannot collide with the base image's links.
constexpr uint32_t kFirstInode = 0x41580000;
// The kernel's PATH_MAX; longer names are rejected by the unpacker anyway.
constexpr size_t kMaxPath = 4095;

void pad4(std::string& out) {
  while (out.size() % 4 != 0) out.push_back('\0');
}

// newc header: magic "070701" and 13 fields of 8 hex digits (cpio(5), "New ASCII
// Format"); header plus name, and the data, are each padded to 4 bytes.
void append_entry(std::string& out, uint32_t ino, uint32_t mode, uint32_t nlink,
                  const std::string& name, const std::string& data) {
  char header[6 + 13 * 8 + 1];
  std::snprintf(header, sizeof header, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
                ino, mode, 0u /*uid*/, 0u /*gid*/, nlink, 0u /*mtime*/,
                static_cast<uint32_t>(data.size()), 0u, 0u, 0u, 0u,
                static_cast<uint32_t>(name.size() + 1), 0u /*check*/);
  out.append(header, sizeof header - 1);
  out.append(name);
  out.push_back('\0');
  pad4(out);
  out.append(data);
  pad4(out);
}

Status check_path(const std::string& path) {
  if (path.empty()) return make_error("initramfs overlay: empty file path");
  if (path.size() > kMaxPath)
    return make_error("initramfs overlay: path longer than " + std::to_string(kMaxPath));
  if (path.find('\0') != std::string::npos)
    return make_error("initramfs overlay: path contains a NUL byte");
  if (path.front() == '/')
    return make_error("initramfs overlay: path '" + path + "' must be relative");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..")
      return make_error("initramfs overlay: bad path '" + path + "'");
    start = end + 1;
  }
  if (path == "TRAILER!!!") return make_error("initramfs overlay: reserved name TRAILER!!!");
  return {};
}

Status write_all(int fd, const char* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return make_error("write " + what + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}

}  // namespace

Result<std::string> newc_archive(const std::vector<CpioFile>& files) {
  // Entries by path; std::map sorts parents before their children.
  struct Entry {
    uint32_t mode;
    const std::string* data;
  };
  std::map<std::string, Entry> entries;
  std::set<std::string> implied_dirs;
  static const std::string kEmpty;
  for (const CpioFile& f : files) {
    if (auto s = check_path(f.path); !s) return s.error();
    uint32_t type = f.mode & kModeTypeMask;
    uint32_t mode = f.mode;
    if (type == 0) {
      mode |= kModeRegular;
    } else if (type == kModeDir) {
      if (!f.data.empty())
        return make_error("initramfs overlay: directory '" + f.path + "' has data");
    } else if (type == kModeSymlink) {
      if (f.data.empty())
        return make_error("initramfs overlay: symlink '" + f.path + "' has no target");
    } else if (type != kModeRegular) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%o", f.mode);
      return make_error("initramfs overlay: '" + f.path + "' has unsupported mode " + buf);
    }
    if (f.data.size() > kMaxFieldValue)
      return make_error("initramfs overlay: '" + f.path + "' is larger than 4 GiB");
    if (!entries.emplace(f.path, Entry{mode, &f.data}).second)
      return make_error("initramfs overlay: '" + f.path + "' given twice");
    for (size_t slash = f.path.find('/'); slash != std::string::npos;
         slash = f.path.find('/', slash + 1))
      implied_dirs.insert(f.path.substr(0, slash));
  }
  for (const std::string& dir : implied_dirs) {
    auto it = entries.find(dir);
    if (it == entries.end()) {
      entries.emplace(dir, Entry{kModeDir | 0755, &kEmpty});
    } else if ((it->second.mode & kModeTypeMask) != kModeDir) {
      return make_error("initramfs overlay: '" + dir + "' is a file but has entries below it");
    }
  }

  std::string out;
  uint32_t ino = kFirstInode;
  for (const auto& [path, e] : entries) {
    bool dir = (e.mode & kModeTypeMask) == kModeDir;
    append_entry(out, ino++, e.mode, dir ? 2 : 1, path, *e.data);
  }
  append_entry(out, 0, 0, 1, "TRAILER!!!", kEmpty);
  return out;
}

Status append_overlay(const std::string& base_initrd, const std::vector<CpioFile>& files,
                      const std::string& out_path) {
  auto archive = newc_archive(files);
  if (!archive) return archive.error();

  UniqueFd in(::open(base_initrd.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return make_error("open base initrd " + base_initrd + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(in.get(), &st) < 0 || !S_ISREG(st.st_mode))
    return make_error("base initrd " + base_initrd + " is not a regular file");

  std::string tmp = out_path + ".tmp." + std::to_string(::getpid());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return make_error("create " + tmp + ": " + std::strerror(errno));
  auto fail = [&](Error e) -> Status {
    ::unlink(tmp.c_str());
    return e;
  };

  std::string buf(1 << 20, '\0');
  uint64_t copied = 0;
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(make_error("read " + base_initrd + ": " + std::strerror(errno)));
    if (n == 0) break;
    if (auto s = write_all(out.get(), buf.data(), static_cast<size_t>(n), tmp); !s)
      return fail(s.error());
    copied += static_cast<uint64_t>(n);
  }
  if (copied == 0) return fail(make_error("base initrd " + base_initrd + " is empty"));

  // The kernel looks for an uncompressed archive only at 4-byte aligned offsets
  // and skips zero bytes between archives (init/initramfs.c, unpack_to_rootfs);
  // a gzip base rarely ends aligned, and without this the overlay is ignored.
  std::string payload(static_cast<size_t>((4 - copied % 4) % 4), '\0');
  payload += archive.value();
  if (auto s = write_all(out.get(), payload.data(), payload.size(), tmp); !s)
    return fail(s.error());
  if (::fsync(out.get()) < 0) return fail(make_error("fsync " + tmp + ": " + std::strerror(errno)));
  if (::close(out.release()) < 0)
    return fail(make_error("close " + tmp + ": " + std::strerror(errno)));
  if (::rename(tmp.c_str(), out_path.c_str()) < 0)
    return fail(make_error("rename " + tmp + " to " + out_path + ": " + std::strerror(errno)));
  return {};
}

}  // namespace axl::hv
