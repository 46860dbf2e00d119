#include "common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace axl {
namespace {

// Empties the directory open as `dfd` (which this call closes), then the
// caller unlinks it. ENOENT anywhere means someone else removed that entry
// first, which is what was wanted. Symlinks are removed, never followed.
int empty_dir(int dfd, std::string& failed) {
  DIR* dir = ::fdopendir(dfd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dfd);
    return err;
  }
  int result = 0;
  while (true) {
    errno = 0;
    const dirent* e = ::readdir(dir);
    if (e == nullptr) {
      if (errno != 0 && result == 0) result = errno;
      break;
    }
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (::unlinkat(dfd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR && errno != EPERM) {
      if (result == 0) {
        result = errno;
        failed = name;
      }
      continue;
    }
    // A directory (unlink(2) says EISDIR on Linux, EPERM per POSIX).
    const int child = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      if (errno == ENOENT) continue;
      if (result == 0) {
        result = errno;
        failed = name;
      }
      continue;
    }
    std::string inner;
    if (const int err = empty_dir(child, inner); err != 0) {
      if (result == 0) {
        result = err;
        failed = name + "/" + inner;
      }
      continue;
    }
    if (::unlinkat(dfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT && result == 0) {
      result = errno;
      failed = name;
    }
  }
  ::closedir(dir);
  return result;
}

}  // namespace

Status remove_tree(const std::string& path) {
  // Not a directory (or gone): one unlink settles it.
  if (::unlink(path.c_str()) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR && errno != EPERM) {
    return make_error("cannot remove " + path + ": " + std::strerror(errno));
  }
  // Entries created while the walk runs are caught by walking again.
  int err = 0;
  std::string failed;
  for (int i = 0; i < 5; ++i) {
    const int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
      if (errno == ENOENT) return {};
      return make_error("cannot remove " + path + ": " + std::strerror(errno));
    }
    failed.clear();
    err = empty_dir(dfd, failed);
    if (err != 0) break;
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return {};
    err = errno;
    failed.clear();
    if (err != ENOTEMPTY && err != EEXIST) break;
  }
  return make_error("cannot remove " + path + (failed.empty() ? "" : "/" + failed) + ": " +
                    std::strerror(err));
}

Status check_state_dir(const std::string& path) {
  if (path.empty()) return make_error("empty state dir");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return make_error("state dir " + path + ": " + strerror(errno));
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
      return make_error("cannot create state dir " + path + ": " + strerror(errno));
    if (::lstat(path.c_str(), &st) != 0)
      return make_error("state dir " + path + ": " + strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) return make_error("state dir " + path + " is a symlink: refused");
  if (!S_ISDIR(st.st_mode)) return make_error("state dir " + path + " is not a directory");
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    return make_error("state dir " + path + " is owned by uid " + std::to_string(st.st_uid) +
                      ", not root: refused");
  if (st.st_mode & 022)
    return make_error("state dir " + path + " is writable by others (mode " + [&] {
      char m[8];
      snprintf(m, sizeof m, "%04o", unsigned(st.st_mode & 07777));
      return std::string(m);
    }() + "): refused");
  // Its own files are private whatever the umask was; others may only
  // have had read access, which is taken away too.
  if ((st.st_mode & 0777) != 0700 && ::chmod(path.c_str(), 0700) != 0)
    return make_error("cannot chmod state dir " + path + ": " + strerror(errno));
  return {};
}

}  // namespace axl
