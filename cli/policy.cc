// axl policy check / reload (docs/policy.md), and the copy of the policy in
// force that both host daemons load at start: STATE/policy.toml.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cli/commands.h"
#include "common/config.h"
#include "common/control_requests.h"
#include "common/unique_fd.h"
#include "policy/access.h"
#include "policy/control.h"

namespace axl::cli {

namespace {

// Where `axl policy reload` without a file reads from: the policy the host
// config named at `axl host up`, as an absolute path.
std::string source_record(const HostPaths& p) { return p.state_dir + "/policy.source"; }

// Replaces `path` whole (a temporary file renamed over it, 0600, never
// through a symlink), so a daemon starting meanwhile reads the old or the new.
Status write_whole(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".new";
  ::unlink(tmp.c_str());
  UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f || ::write(f.get(), text.data(), text.size()) != ssize_t(text.size()) ||
      ::fsync(f.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return make_error("cannot write " + path + ": " + strerror(e));
  }
  return {};
}

Result<std::string> read_policy(const std::string& file) {
  auto text = config::read_file(file);
  if (!text) return text.error();
  if (text->size() > policy::kMaxPolicyBytes)
    return make_error(file + ": a policy is at most 1 MiB");
  if (auto p = policy::Policy::parse(*text, file); !p) return p.error();
  return text;
}

}  // namespace

Status install_policy(const HostPaths& p, const std::string& file) {
  const std::string copy = policy::policy_path(p.state_dir);
  if (file.empty()) {
    ::unlink(copy.c_str());
    ::unlink(source_record(p).c_str());
    return {};
  }
  auto text = read_policy(file);
  if (!text) return text.error();
  std::error_code ec;
  const std::string abs = std::filesystem::absolute(file, ec).lexically_normal().string();
  if (auto s = write_whole(copy, *text); !s) return s;
  return write_whole(source_record(p), abs + "\n");
}

int policy_check(const std::string& file) {
  auto text = read_policy(file);
  if (!text) return fail(text.error().message);
  printf("%s: ok\n", file.c_str());
  return 0;
}

int policy_reload(const HostPaths& p, std::string file) {
  if (file.empty()) {
    auto rec = config::read_file(source_record(p));
    if (!rec || rec->empty())
      return fail("the host runs the built-in policy: name the file (axl policy reload FILE)");
    file = rec->substr(0, rec->find('\n'));
  }
  auto text = read_policy(file);
  if (!text) return fail(text.error().message);
  std::error_code ec;
  const std::string abs = std::filesystem::absolute(file, ec).lexically_normal().string();
  // Both daemons check it first (each against what it runs now); it is put
  // in force only when both accept it, so a refusal changes nothing.
  for (const auto& sock : {p.hv_socket(), p.supervisor_socket()}) {
    auto r = control::call(sock, control::reload_policy(*text, abs, true), 10000);
    if (!r) return fail(r.error().message);
  }
  if (auto s = write_whole(policy::policy_path(p.state_dir), *text); !s)
    return fail(s.error().message);
  if (auto s = write_whole(source_record(p), abs + "\n"); !s) return fail(s.error().message);
  for (const auto& sock : {p.hv_socket(), p.supervisor_socket()}) {
    auto r = control::call(sock, control::reload_policy(*text, abs, false), 10000);
    if (!r) return fail(r.error().message);
  }
  printf("policy %s in force\n", file.c_str());
  return 0;
}

}  // namespace axl::cli
