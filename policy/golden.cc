#include "policy/golden.h"

#include <toml++/toml.h>
#include <set>

namespace axl::policy {
namespace {

struct Want {
  std::string what;
  Sha256 digest;
};

std::string short_hex(const Sha256& d) { return hex(d).substr(0, 16) + "…"; }

PcrCheck check_pcr(uint32_t pcr, const std::vector<Event>& log, const std::vector<Want>& want) {
  PcrCheck c{pcr, false, {}};
  std::vector<const Event*> got;
  for (const auto& e : log)
    if (e.pcr == pcr && e.type != kEvNoAction) got.push_back(&e);
  for (size_t i = 0; i < want.size(); ++i) {
    if (i >= got.size()) {
      c.detail = want[i].what + " was never measured";
      return c;
    }
    if (got[i]->digest != want[i].digest) {
      c.detail = want[i].what + " is " + short_hex(got[i]->digest) + ", expected " +
                 short_hex(want[i].digest) + " (\"" + got[i]->data + "\")";
      return c;
    }
  }
  if (got.size() > want.size()) {
    c.detail = std::to_string(got.size() - want.size()) + " unexpected event(s), first \"" +
               got[want.size()]->data + "\"";
    return c;
  }
  c.pass = true;
  for (size_t i = 0; i < want.size(); ++i) c.detail += (i ? ", " : "") + want[i].what;
  c.detail += " as expected";
  return c;
}

}  // namespace

Result<std::vector<GoldenImage>> parse_golden(const std::string& text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return make_error(origin + ": " + std::string(e.description()));
  }
  for (auto& [k, v] : t)
    if (k != "image") return make_error(origin + ": unknown key '" + std::string(k.str()) + "'");
  const toml::array* images = t["image"].as_array();
  if (!images || images->empty()) return make_error(origin + ": no [[image]] table");
  std::vector<GoldenImage> out;
  std::set<std::string> names;
  for (const auto& node : *images) {
    const toml::table* it = node.as_table();
    if (!it) return make_error(origin + ": [[image]] must be a table");
    GoldenImage g;
    for (auto& [k, v] : *it) {
      const std::string key(k.str());
      if (key != "name" && key != "kernel_sha256" && key != "initrd_sha256" &&
          key != "cmdline_sha256")
        return make_error(origin + ": unknown key '" + key + "' in [[image]]");
      auto s = v.value<std::string>();
      if (!s) return make_error(origin + ": '" + key + "' must be a string");
      if (key == "name") {
        g.name = *s;
        continue;
      }
      auto d = parse_hex(*s);
      if (!d) return make_error(origin + ": " + key + ": " + d.error().message);
      if (key == "kernel_sha256") g.kernel = *d;
      if (key == "initrd_sha256") g.initrd = *d;
      if (key == "cmdline_sha256") g.cmdline = *d;
    }
    if (g.name.empty()) return make_error(origin + ": an [[image]] without a name");
    if (!it->contains("kernel_sha256") || !it->contains("initrd_sha256"))
      return make_error(origin + ": image '" + g.name + "' needs kernel_sha256 and initrd_sha256");
    if (!names.insert(g.name).second)
      return make_error(origin + ": image '" + g.name + "' listed twice");
    out.push_back(std::move(g));
  }
  return out;
}

std::vector<PcrCheck> check_boot(const std::vector<Event>& log, const GoldenImage& golden,
                                 const HostRecord& host) {
  std::vector<Want> pcr9{{"kernel", golden.kernel}, {"initrd", golden.initrd}};
  if (host.initrd_overlay) pcr9.push_back({"initrd overlay", *host.initrd_overlay});
  std::vector<Want> pcr8{{"cmdline", golden.cmdline ? *golden.cmdline : host.cmdline}};
  if (host.config) pcr8.push_back({"domain config", *host.config});
  return {check_pcr(kPcrCmdline, log, pcr8), check_pcr(kPcrKernel, log, pcr9)};
}

}  // namespace axl::policy
