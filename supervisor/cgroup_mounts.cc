#include "supervisor/cgroup_mounts.h"

#include <errno.h>
#include <string.h>
#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace axl::supervisor {

Result<int> mount_cgroups_privately(const std::string& dir) {
  std::ifstream f("/proc/self/cgroup");
  if (!f) return make_error("cannot read /proc/self/cgroup");
  std::string line;
  int mounted = 0;
  bool have_v1_memory = false;
  std::string err;
  while (std::getline(f, line)) {
    // "ID:controllers:path"; "0::path" is the unified hierarchy.
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctls = line.substr(a + 1, b - a - 1);
    bool wanted = false;
    std::stringstream ss(ctls);
    for (std::string c; std::getline(ss, c, ',');) {
      wanted |= c == "memory" || c == "pids" || c == "cpu";
      have_v1_memory |= c == "memory";
    }
    if (!wanted) continue;
    std::string path = dir + "/" + ctls;
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (::mount("cgroup", path.c_str(), "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, ctls.c_str()) ==
        0)
      ++mounted;
    else
      err = "mount cgroup " + ctls + ": " + strerror(errno);
  }
  if (!have_v1_memory) {
    std::string path = dir + "/unified";
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (::mount("cgroup2", path.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0)
      ++mounted;
    else
      err = std::string("mount cgroup2: ") + strerror(errno);
  }
  if (mounted == 0) return make_error(err.empty() ? "no cgroup hierarchies to mount" : err);
  return mounted;
}

}  // namespace axl::supervisor
