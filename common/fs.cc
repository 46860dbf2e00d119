#include "common/fs.h"

#include <filesystem>

namespace axl {

Status remove_tree(const std::string& path) {
  std::error_code ec;
  for (int i = 0; i < 5; ++i) {
    ec.clear();
    std::filesystem::remove_all(path, ec);
    if (!ec) return {};
  }
  return make_error("cannot remove " + path + ": " + ec.message());
}

}  // namespace axl
