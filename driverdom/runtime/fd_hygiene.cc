#include "driverdom/runtime/fd_hygiene.h"

#include <errno.h>
#include <linux/close_range.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

namespace axl::driverdom {

Status close_inherited_fds(std::span<const int> keep) {
  std::vector<int> k(keep.begin(), keep.end());
  std::sort(k.begin(), k.end());
  unsigned from = 3;
  for (int fd : k) {
    if (fd < 3) continue;
    if (unsigned(fd) > from && ::syscall(SYS_close_range, from, unsigned(fd) - 1, 0) < 0)
      return make_error(std::string("close_range: ") + strerror(errno));
    from = std::max(from, unsigned(fd) + 1);
  }
  if (::syscall(SYS_close_range, from, UINT_MAX, 0) < 0)
    return make_error(std::string("close_range: ") + strerror(errno));
  return {};
}

}  // namespace axl::driverdom
