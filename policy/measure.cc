#include "policy/measure.h"

#include <openssl/evp.h>

#include <cstring>
#include <fstream>

namespace axl::policy {
namespace {

constexpr uint16_t kAlgSha256 = 0x000B;  // TPM_ALG_SHA256
constexpr char kSpecIdSignature[16] = "Spec ID Event03";
// Bounds for a log we parse: far above anything a boot records.
constexpr size_t kMaxEvents = 4096;
constexpr uint32_t kMaxEventData = 1 << 20;

void put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
void put16(std::string& out, uint16_t v) {
  out.push_back(char(v & 0xff));
  out.push_back(char(v >> 8));
}

// Little-endian reader over untrusted bytes.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool u8(uint8_t& v) { return take(&v, 1); }
  bool u16(uint16_t& v) {
    uint8_t x[2];
    if (!take(x, 2)) return false;
    v = uint16_t(x[0] | x[1] << 8);
    return true;
  }
  bool u32(uint32_t& v) {
    uint8_t x[4];
    if (!take(x, 4)) return false;
    v = uint32_t(x[0]) | uint32_t(x[1]) << 8 | uint32_t(x[2]) << 16 | uint32_t(x[3]) << 24;
    return true;
  }
  bool bytes(void* out, size_t n) { return take(out, n); }
  bool skip(size_t n) {
    if (b_.size() - pos_ < n) return false;
    pos_ += n;
    return true;
  }
  bool str(std::string& out, size_t n) {
    if (b_.size() - pos_ < n) return false;
    out.assign(b_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }
  bool done() const { return pos_ == b_.size(); }

 private:
  bool take(void* out, size_t n) {
    if (b_.size() - pos_ < n) return false;
    memcpy(out, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view b_;
  size_t pos_ = 0;
};

Event make(uint32_t pcr, std::string_view measured, std::string data) {
  return Event{pcr, kEvIpl, sha256(measured), std::move(data)};
}

std::string basename_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

}  // namespace

Sha256 sha256(std::string_view bytes) {
  Sha256 d{};
  unsigned len = 0;
  EVP_Digest(bytes.data(), bytes.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

Result<Sha256> sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error("cannot read " + path);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) EVP_DigestUpdate(ctx, buf, size_t(f.gcount()));
  const bool bad = f.bad();
  Sha256 d{};
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx, d.data(), &len);
  EVP_MD_CTX_free(ctx);
  if (bad) return make_error("error reading " + path);
  return d;
}

std::string hex(const Sha256& d) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s.push_back(k[b >> 4]);
    s.push_back(k[b & 15]);
  }
  return s;
}

Result<Sha256> parse_hex(std::string_view text) {
  if (text.size() != 64)
    return make_error("a SHA-256 digest is 64 hex digits, not " + std::to_string(text.size()) +
                      " characters");
  Sha256 d{};
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nib(text[2 * i]), lo = nib(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return make_error("not a hex digest: " + std::string(text));
    d[i] = uint8_t(hi << 4 | lo);
  }
  return d;
}

Result<std::vector<Event>> measure_boot(const BootInputs& in) {
  std::vector<Event> ev;
  auto kernel = sha256_file(in.kernel_path);
  if (!kernel) return kernel.error();
  ev.push_back({kPcrKernel, kEvIpl, *kernel, "kernel " + basename_of(in.kernel_path)});
  auto initrd = sha256_file(in.initrd_path);
  if (!initrd) return initrd.error();
  ev.push_back({kPcrKernel, kEvIpl, *initrd, "initrd " + basename_of(in.initrd_path)});
  if (!in.initrd_overlay.empty())
    ev.push_back(make(kPcrKernel, in.initrd_overlay, "initrd overlay (guest script)"));
  ev.push_back(make(kPcrCmdline, in.cmdline, "kernel_cmdline: " + in.cmdline));
  if (!in.config.empty())
    ev.push_back({kPcrCmdline, kEvEventTag, sha256(in.config), "domain config"});
  return ev;
}

std::map<uint32_t, Sha256> replay(const std::vector<Event>& events) {
  std::map<uint32_t, Sha256> pcrs;
  for (const auto& e : events) {
    if (e.type == kEvNoAction) continue;  // never extended
    Sha256& p = pcrs[e.pcr];              // value-initialised: all zero
    std::string cat(reinterpret_cast<const char*>(p.data()), p.size());
    cat.append(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
    p = sha256(cat);
  }
  return pcrs;
}

std::string encode_event_log(const std::vector<Event>& events) {
  std::string out;
  // Header: a TCG_PCClientPCREvent (SHA-1 layout) holding the Spec ID event.
  std::string spec(kSpecIdSignature, sizeof kSpecIdSignature);
  put32(spec, 0);     // platformClass: client
  spec.push_back(0);  // specVersionMinor
  spec.push_back(2);  // specVersionMajor
  spec.push_back(0);  // specErrata
  spec.push_back(2);  // uintnSize: UINT64
  put32(spec, 1);     // numberOfAlgorithms
  put16(spec, kAlgSha256);
  put16(spec, 32);
  spec.push_back(0);  // vendorInfoSize
  put32(out, 0);
  put32(out, kEvNoAction);
  out.append(20, '\0');
  put32(out, uint32_t(spec.size()));
  out += spec;
  for (const auto& e : events) {
    put32(out, e.pcr);
    put32(out, e.type);
    put32(out, 1);  // TPML_DIGEST_VALUES.count
    put16(out, kAlgSha256);
    out.append(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
    // EV_IPL data is a NUL-terminated string, as GRUB writes it (tpm2_eventlog
    // warns about the PCR 8 ones otherwise).
    if (e.type == kEvEventTag) {  // a TCG_PCClientTaggedEvent
      put32(out, uint32_t(e.data.size() + 8));
      put32(out, kAxlTaggedEventId);
      put32(out, uint32_t(e.data.size()));
      out += e.data;
      continue;
    }
    const bool nul = e.type == kEvIpl;
    put32(out, uint32_t(e.data.size() + (nul ? 1 : 0)));
    out += e.data;
    if (nul) out += '\0';
  }
  return out;
}

Result<std::vector<Event>> parse_event_log(std::string_view log) {
  Reader r(log);
  uint32_t pcr, type, size;
  if (!r.u32(pcr) || !r.u32(type) || !r.skip(20) || !r.u32(size))
    return make_error("event log: truncated header");
  if (type != kEvNoAction || pcr != 0) return make_error("event log: no Spec ID header event");
  if (size < sizeof kSpecIdSignature + 4 + 4 + 4 + 1 || size > kMaxEventData)
    return make_error("event log: bad Spec ID event size " + std::to_string(size));
  std::string spec;
  if (!r.str(spec, size)) return make_error("event log: truncated Spec ID event");
  if (memcmp(spec.data(), kSpecIdSignature, sizeof kSpecIdSignature) != 0)
    return make_error("event log: not a crypto-agile log (Spec ID signature)");
  Reader s(std::string_view(spec).substr(sizeof kSpecIdSignature));
  uint32_t platform, nalg;
  uint8_t minor, major, errata, uintn;
  if (!s.u32(platform) || !s.u8(minor) || !s.u8(major) || !s.u8(errata) || !s.u8(uintn) ||
      !s.u32(nalg))
    return make_error("event log: truncated Spec ID event");
  if (major != 2)
    return make_error("event log: spec version " + std::to_string(major) + " unsupported");
  if (nalg == 0 || nalg > 16) return make_error("event log: bad algorithm count");
  std::map<uint16_t, uint16_t> sizes;
  for (uint32_t i = 0; i < nalg; ++i) {
    uint16_t alg, len;
    if (!s.u16(alg) || !s.u16(len)) return make_error("event log: truncated algorithm list");
    if (len == 0 || len > 64) return make_error("event log: bad digest size");
    sizes[alg] = len;
  }
  if (!sizes.count(kAlgSha256) || sizes[kAlgSha256] != 32)
    return make_error("event log: no SHA-256 bank");

  std::vector<Event> events;
  while (!r.done()) {
    if (events.size() >= kMaxEvents) return make_error("event log: too many events");
    Event e;
    uint32_t count;
    if (!r.u32(e.pcr) || !r.u32(e.type) || !r.u32(count))
      return make_error("event log: truncated event " + std::to_string(events.size()));
    if (e.pcr > 23) return make_error("event log: PCR " + std::to_string(e.pcr) + " out of range");
    if (count == 0 || count > nalg) return make_error("event log: bad digest count");
    bool have = false;
    for (uint32_t i = 0; i < count; ++i) {
      uint16_t alg;
      if (!r.u16(alg)) return make_error("event log: truncated digest");
      auto it = sizes.find(alg);
      if (it == sizes.end()) return make_error("event log: digest of an undeclared algorithm");
      if (alg == kAlgSha256) {
        if (!r.bytes(e.digest.data(), 32)) return make_error("event log: truncated digest");
        have = true;
      } else if (!r.skip(it->second)) {
        return make_error("event log: truncated digest");
      }
    }
    if (!have) return make_error("event log: event without a SHA-256 digest");
    if (!r.u32(size) || size > kMaxEventData || !r.str(e.data, size))
      return make_error("event log: truncated event data");
    if (e.type == kEvIpl && !e.data.empty() && e.data.back() == '\0') e.data.pop_back();
    if (e.type == kEvEventTag && e.data.size() >= 8) {
      auto le32 = [&](size_t at) {
        uint32_t v = 0;
        for (int i = 3; i >= 0; --i) v = v << 8 | uint8_t(e.data[at + size_t(i)]);
        return v;
      };
      const uint32_t id = le32(0), n = le32(4);
      if (id == kAxlTaggedEventId && n == e.data.size() - 8) e.data.erase(0, 8);
    }
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace axl::policy

namespace axl::policy {

std::string kernel_cmdline(const std::string& user_cmdline, bool iommu) {
  std::string s = "console=ttyS0 panic=-1";
  // iommu.strict=1: the guest invalidates exactly what it unmaps, when it
  // unmaps it.  The lazy default batches unmaps into periodic whole-space
  // invalidations that would drop translations of buffers still in flight,
  // and a completion cannot wait for a miss (see iommu/dma.h).
  if (iommu) s += " intel_iommu=on iommu.strict=1";
  if (!user_cmdline.empty()) s += " " + user_cmdline;
  return s;
}

}  // namespace axl::policy
