#include "common/kv_record.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/unique_fd.h"

namespace axl {

namespace {
bool valid_key(const std::string& k) {
  if (k.empty() || k.size() > 128) return false;
  for (char c : k)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
  return true;
}
}  // namespace

Status write_kv_record(const std::string& path, const KvRecord& r) {
  std::string text;
  for (const auto& [k, v] : r) {
    if (!valid_key(k) || v.find('\n') != std::string::npos)
      return make_error("record " + path + ": bad key or value for '" + k + "'");
    text += k + "=" + v + "\n";
  }
  const std::string tmp = path + ".tmp";
  UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f) return make_error("cannot write " + tmp + ": " + strerror(errno));
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t w = ::write(f.get(), text.data() + off, text.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ::unlink(tmp.c_str());
      return make_error("cannot write " + tmp + ": " + strerror(errno));
    }
    off += size_t(w);
  }
  f.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error("cannot write " + path + ": " + strerror(errno));
  }
  return {};
}

Result<KvRecord> read_kv_record(const std::string& path) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) return make_error("cannot read " + path + ": " + strerror(errno));
  constexpr size_t kMax = 1 << 20;
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(f.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error("cannot read " + path + ": " + strerror(errno));
    if (n == 0) break;
    text.append(buf, size_t(n));
    if (text.size() > kMax) return make_error("record " + path + " larger than 1 MiB");
  }
  KvRecord r;
  size_t at = 0, line = 0;
  while (at < text.size()) {
    ++line;
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    const std::string l = text.substr(at, nl - at);
    at = nl + 1;
    if (l.empty()) continue;
    const size_t eq = l.find('=');
    if (eq == std::string::npos || !valid_key(l.substr(0, eq)))
      return make_error("record " + path + " line " + std::to_string(line) + ": not KEY=VALUE");
    r[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return r;
}

Result<uint64_t> kv_number(const KvRecord& r, const std::string& key, uint64_t max) {
  auto it = r.find(key);
  if (it == r.end()) return make_error("record has no '" + key + "'");
  const std::string& v = it->second;
  if (v.empty() || v.size() > 20) return make_error("record's '" + key + "' is not a number");
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return make_error("record's '" + key + "' is not a number");
    const uint64_t d = uint64_t(c - '0');
    if (n > (UINT64_MAX - d) / 10) return make_error("record's '" + key + "' is out of range");
    n = n * 10 + d;
  }
  if (n > max) return make_error("record's '" + key + "' is out of range");
  return n;
}

std::string hex_encode(const void* data, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 15];
  }
  return out;
}

Result<std::string> hex_decode(const std::string& hex) {
  if (hex.size() % 2) return make_error("hex of odd length");
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]), lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return make_error("not a hex digit");
    out += char(hi << 4 | lo);
  }
  return out;
}

}  // namespace axl
