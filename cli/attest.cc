// axl attest: quote a domain's vTPM and verify it end to end (policy/attest.h).
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "common/config.h"
#include "common/process.h"
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

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += char(c);
    } else if (c < 0x20) {
      char b[8];
      snprintf(b, sizeof(b), "\\u%04x", c);
      o += b;
    } else {
      o += char(c);
    }
  }
  return o + "\"";
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
  if (o.tpm.empty()) {
    if (!exists(dom)) return fail("no domain '" + o.name + "' in " + p.state_dir);
    if (!exists(dom + "/vtpm.cmd"))
      return fail("domain '" + o.name + "' has no vTPM (no " + dom + "/vtpm.cmd)");
    in.tpm = "unix:" + dom + "/vtpm.cmd";
  } else {
    in.tpm = o.tpm;
  }
  in.event_log = o.event_log.empty() ? dom + "/eventlog.bin" : o.event_log;
  in.boot_record = o.boot_record.empty() ? dom + "/boot-record.toml" : o.boot_record;
  in.ca = o.ca.empty() ? p.state_dir + "/vtpm-host/ca/ca.crt" : o.ca;
  if (o.policy.empty()) {
    const char* env = getenv("AXL_GUEST_DIR");
    in.golden = (env ? std::string(env) : proc::exe_dir() + "/../guest") + "/golden.toml";
  } else {
    in.golden = o.policy;
  }

  auto rep = policy::attest(in);
  if (!rep) return fail(o.name + ": " + rep.error().message);
  std::string failed;
  for (const auto& r : rep->rows)
    if (r.verdict == policy::Verdict::kFail) failed += (failed.empty() ? "" : ", ") + r.check;
  if (o.json) {
    printf("{\"domain\":%s,\"verdict\":\"%s\",\"checks\":[", json_string(o.name).c_str(),
           rep->pass ? "PASS" : "FAIL");
    bool first = true;
    for (const auto& r : rep->rows) {
      printf("%s\n {\"check\":%s,\"pcr\":%s,\"value\":%s,\"verdict\":\"%s\",\"detail\":%s}",
             first ? "" : ",", json_string(r.check).c_str(),
             r.pcr < 0 ? "null" : std::to_string(r.pcr).c_str(), json_string(r.value).c_str(),
             policy::verdict_name(r.verdict), json_string(r.detail).c_str());
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
