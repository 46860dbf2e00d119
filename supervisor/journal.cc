#include "supervisor/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "common/log.h"

namespace axl::supervisor {

namespace {

bool valid_word(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

Result<uint64_t> number(const std::string& key, const std::string& v, uint64_t max) {
  if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos)
    return make_error("record field " + key + " is not a number");
  const unsigned long long n = strtoull(v.c_str(), nullptr, 10);
  if (n > max) return make_error("record field " + key + " is out of range");
  return uint64_t(n);
}

}  // namespace

std::string cgroup_prefix(const std::string& state_dir) {
  char* real = ::realpath(state_dir.c_str(), nullptr);
  const std::string path = real ? real : state_dir;
  free(real);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : path) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return std::string("axolotl-") + hex;
}

std::string format_record(const InstanceRecord& r) {
  std::ostringstream o;
  o << "kind=" << r.kind << "\nname=" << r.name << "\nrole=" << r.role << "\npid=" << r.pid
    << "\nstart=" << r.start << "\nholder_pid=" << (r.holder_pid > 0 ? r.holder_pid : 0)
    << "\nholder_start=" << r.holder_start << "\ncgroup=" << r.cgroup << "\nseq=" << r.seq
    << "\nport=" << r.port << "\nmeasure_log=" << (r.measure_log ? 1 : 0) << "\n";
  return o.str();
}

Result<InstanceRecord> parse_record(const std::string& text) {
  InstanceRecord r;
  std::istringstream in(text);
  std::string line;
  bool have_pid = false, have_start = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) return make_error("record line without '=': " + line);
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "kind") {
      r.kind = v;
    } else if (k == "name") {
      r.name = v;
    } else if (k == "role") {
      r.role = v;
    } else if (k == "cgroup") {
      r.cgroup = v;
    } else if (k == "pid" || k == "holder_pid") {
      auto n = number(k, v, INT32_MAX);
      if (!n) return n.error();
      (k == "pid" ? r.pid : r.holder_pid) = pid_t(*n);
      have_pid |= k == "pid";
    } else if (k == "start" || k == "holder_start") {
      auto n = number(k, v, UINT64_MAX);
      if (!n) return n.error();
      (k == "start" ? r.start : r.holder_start) = *n;
      have_start |= k == "start";
    } else if (k == "seq") {
      auto n = number(k, v, UINT32_MAX);
      if (!n) return n.error();
      r.seq = uint32_t(*n);
    } else if (k == "port") {
      auto n = number(k, v, 65534);
      if (!n) return n.error();
      r.port = uint32_t(*n);
    } else if (k == "measure_log") {
      auto n = number(k, v, 1);
      if (!n) return n.error();
      r.measure_log = *n == 1;
    } else {
      return make_error("unknown record field '" + k + "'");
    }
  }
  if (r.kind != "driver" && r.kind != "vtpm") return make_error("record kind '" + r.kind + "'");
  if (!valid_word(r.name)) return make_error("record name '" + r.name + "'");
  if (r.role != "active" && r.role != "standby" && r.role != "spare")
    return make_error("record role '" + r.role + "'");
  if (!have_pid || r.pid <= 1 || !have_start || !r.start)
    return make_error("record without a pid and start time");
  if (r.holder_pid == 0) r.holder_pid = -1;
  if (r.holder_pid == 1) return make_error("record holder pid 1");
  if (!r.cgroup.empty() && !valid_word(r.cgroup))
    return make_error("record cgroup '" + r.cgroup + "'");
  return r;
}

Journal::Journal(std::string dir, FdStore& store) : dir_(std::move(dir)), store_(store) {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    AXL_WARN("cannot create %s: %s", dir_.c_str(), strerror(errno));
}

Status Journal::write(const InstanceRecord& r) {
  const std::string path = dir_ + "/" + r.key(), tmp = path + ".tmp";
  UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f) return make_error("cannot write " + tmp + ": " + strerror(errno));
  const std::string text = format_record(r);
  if (::write(f.get(), text.data(), text.size()) != ssize_t(text.size()))
    return make_error("cannot write " + tmp + ": " + strerror(errno));
  f.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error("cannot write " + path + ": " + strerror(errno));
  return {};
}

Status Journal::record(const InstanceRecord& r, int health_fd) {
  if (auto s = write(r); !s) return s;
  if (health_fd >= 0) return store_.put(r.key(), health_fd);
  return {};
}

void Journal::update(const InstanceRecord& r) {
  if (auto s = write(r); !s) AXL_WARN("%s", s.error().message.c_str());
}

void Journal::forget(const std::string& key) {
  store_.remove(key);
  if (::unlink((dir_ + "/" + key).c_str()) != 0 && errno != ENOENT)
    AXL_WARN("cannot remove %s/%s: %s", dir_.c_str(), key.c_str(), strerror(errno));
}

std::vector<InstanceRecord> Journal::load() {
  std::vector<InstanceRecord> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names) {
    const std::string path = dir_ + "/" + n;
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    std::string text;
    char buf[1024];
    ssize_t got = 0;
    while (f && (got = ::read(f.get(), buf, sizeof buf)) > 0 && text.size() < 8192)
      text.append(buf, size_t(got));
    auto r = f ? parse_record(text) : Result<InstanceRecord>(make_error(strerror(errno)));
    if (!r || r->key() != n) {
      AXL_WARN("instance record %s dropped: %s", path.c_str(),
               r ? "its name does not match its contents" : r.error().message.c_str());
      ::unlink(path.c_str());
      continue;
    }
    out.push_back(std::move(r).value());
  }
  return out;
}

}  // namespace axl::supervisor
