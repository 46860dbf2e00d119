// axl attest: quote a domain's vTPM and verify it end to end (policy/attest.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli/commands.h"
#include "common/config.h"
#include "common/control_requests.h"
#include "common/process.h"
#include "common/quote.h"
#include "policy/attest.h"

namespace axl::cli {
namespace {

int usage(const std::string& msg) {
  fprintf(stderr, "axl: %s\n", msg.c_str());
  return 2;
}

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

// Writes `data` to `path` (mode 0600) by a rename, never through a link.
Status write_private(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return make_error("cannot write " + tmp + ": " + strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error("cannot write " + tmp + ": " + strerror(errno));
    }
    off += size_t(n);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error("cannot write " + path + ": " + strerror(errno));
  }
  return {};
}

Status make_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return make_error("cannot create " + dir + ": " + strerror(errno));
  return {};
}

}  // namespace

int attest(const HostPaths& p, const AttestOptions& o) {
  if (!config::valid_name(o.name)) return usage("bad domain name '" + o.name + "'");
  policy::AttestInputs in;
  if (o.nonce_hex.empty()) {
    in.nonce.resize(32);
    FILE* f = fopen("/dev/urandom", "rb");
    if (!f || fread(in.nonce.data(), 1, in.nonce.size(), f) != in.nonce.size()) {
      if (f) fclose(f);
      return fail("cannot read /dev/urandom for a nonce");
    }
    fclose(f);
  } else {
    const std::string& h = o.nonce_hex;
    if (h.size() % 2 || h.size() > 128 ||
        h.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      return usage("--nonce must be 1 to 64 bytes in hex, got '" + h + "'");
    for (size_t i = 0; i < h.size(); i += 2)
      in.nonce.push_back(uint8_t(strtoul(h.substr(i, 2).c_str(), nullptr, 16)));
  }
  const std::string dom = p.state_dir + "/dom/" + o.name;
  // The policy's golden values for this guest, if it names any.
  std::string policy_golden;
  if (o.tpm.empty()) {
    // The supervisor connects to the vTPM once the access policy allows
    // this attestation, and hands the connection over.
    auto r = control::call(p.supervisor_socket(), control::supervisor::open_vtpm(o.name, "attest"));
    if (!r) return fail(r.error().message);
    if (r->fds().size() != 1) return fail("the supervisor sent no vTPM connection");
    policy_golden = r->get().getGolden();
    in.tpm = "fd:" + std::to_string(r->fds()[0].release());
  } else {
    in.tpm = o.tpm;
  }
  // A domain the hypervisor booted has the hypervisor's boot log beside it;
  // for any other the hypervisor says how it boots.  A firmware-booted
  // domain's log is the firmware's, read from the guest through its agent
  // (docs/architecture.md, "Firmware-measured boot").
  std::string firmware;
  if ((o.tpm.empty() && o.event_log.empty() && !exists(dom + "/eventlog.bin")) || o.record) {
    auto info = control::call(p.hv_socket(), control::hv::domain_info(o.name));
    if (!info) return fail(info.error().message);
    if (info->get().getDomains().size() != 1) return fail("the hypervisor's reply names no domain");
    firmware = info->get().getDomains()[0].getFirmware().cStr();
  }
  if (o.record && firmware.empty())
    return usage("--record is for firmware-booted domains; '" + o.name +
                 "' is booted by the hypervisor, whose golden values come from axl measure");
  in.firmware = !firmware.empty();
  in.event_log = o.event_log.empty() ? dom + "/eventlog.bin" : o.event_log;
  const std::string reference = p.state_dir + "/attest/" + o.name + ".reference";
  if (in.firmware) {
    in.reference = o.record ? "" : reference;
    in.golden_log = o.golden;
    if (o.event_log.empty()) {
      in.event_log = dom + "/firmware-eventlog.bin";
      auto r = control::call(
          p.hv_socket(),
          control::hv::guest_exec(o.name, "cat",
                                  {"/sys/kernel/security/tpm0/binary_bios_measurements"}, 60000),
          70000);
      if (!r) return fail(o.name + ": reading the firmware's event log: " + r.error().message);
      auto x = r->get().getExec();
      if (x.getExitCode() != 0)
        return fail(o.name + ": the guest has no firmware event log: " +
                    std::string(x.getStderr().asChars().begin(), x.getStderr().asChars().end()));
      if (x.getTruncated()) return fail(o.name + ": the firmware's event log was cut short");
      auto log = x.getStdout();
      if (auto s =
              write_private(in.event_log, std::string(log.asChars().begin(), log.asChars().end()));
          !s)
        return fail(s.error().message);
    }
  }
  in.boot_record = o.boot_record.empty() ? dom + "/boot-record.toml" : o.boot_record;
  in.ca = o.ca.empty() ? p.state_dir + "/vtpm-host/ca/ca.crt" : o.ca;
  if (o.policy.empty() && !policy_golden.empty()) {
    in.golden = policy_golden;
  } else if (o.policy.empty()) {
    const char* env = getenv("AXL_GUEST_DIR");
    in.golden = (env ? std::string(env) : proc::exe_dir() + "/../guest") + "/golden.toml";
  } else {
    in.golden = o.policy;
  }

  auto rep = policy::attest(in);
  if (!rep) return fail(o.name + ": " + rep.error().message);
  if (o.record) {
    // Only a boot whose log matches its quote, from a genuine vTPM, becomes
    // the reference.
    for (const auto& r : rep->rows)
      if (r.verdict == policy::Verdict::kFail &&
          r.detail != "no reference boot recorded (axl attest NAME --record)")
        return fail(o.name + ": not recorded: " + r.check + ": " + r.detail);
    auto log = config::read_file(in.event_log);
    if (!log) return fail(log.error().message);
    if (auto s = make_private_dir(p.state_dir + "/attest"); !s) return fail(s.error().message);
    if (auto s = write_private(reference, *log); !s) return fail(s.error().message);
    in.reference = reference;
    rep = policy::attest(in);
    if (!rep) return fail(o.name + ": " + rep.error().message);
    fprintf(stderr, "axl: recorded this boot of %s as its reference (%s)\n", o.name.c_str(),
            reference.c_str());
  }
  std::string failed;
  for (const auto& r : rep->rows)
    if (r.verdict == policy::Verdict::kFail) failed += (failed.empty() ? "" : ", ") + r.check;
  if (o.json) {
    printf("{\"domain\":%s,\"verdict\":\"%s\",\"checks\":[", quoted(o.name).c_str(),
           rep->pass ? "PASS" : "FAIL");
    bool first = true;
    for (const auto& r : rep->rows) {
      printf("%s\n {\"check\":%s,\"pcr\":%s,\"value\":%s,\"verdict\":\"%s\",\"detail\":%s}",
             first ? "" : ",", quoted(r.check).c_str(),
             r.pcr < 0 ? "null" : std::to_string(r.pcr).c_str(), quoted(r.value).c_str(),
             policy::verdict_name(r.verdict), quoted(r.detail).c_str());
      first = false;
    }
    printf("\n]}\n");
  } else {
    printf("%-10s  %-64s  %-7s  %s\n", "CHECK", "VALUE", "VERDICT", "DETAIL");
    for (const auto& r : rep->rows)
      printf("%-10s  %-64s  %-7s  %s\n", r.check.c_str(), r.value.empty() ? "-" : r.value.c_str(),
             policy::verdict_name(r.verdict), r.detail.c_str());
    if (rep->pass)
      printf("PASS\n");
    else
      printf("FAIL: %s\n", failed.c_str());
  }
  return rep->pass ? 0 : 1;
}

}  // namespace axl::cli
