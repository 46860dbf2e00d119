#include "policy/attest.h"

#include <unistd.h>

#include <optional>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <toml++/toml.h>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace axl::policy {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using Bn = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using EcSig = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG, ECDSA_SIG_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using ParamBld = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using Params = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM, OSSL_PARAM_free>>;

// The EK template's authPolicy: TPM2_PolicySecret(TPM_RH_ENDORSEMENT)
// (TCG EK Credential Profile, template L-2).
constexpr uint8_t kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC,
                                   0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52,
                                   0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};
constexpr uint32_t kAttrFixedTpm = 0x2, kAttrFixedParent = 0x10, kAttrSensitiveOrigin = 0x20,
                   kAttrRestricted = 0x10000, kAttrDecrypt = 0x20000, kAttrSign = 0x40000;
constexpr uint32_t kCcNvRead = 0x14E, kCcActivateCredential = 0x147, kCcPolicySecret = 0x151,
                   kCcQuote = 0x158, kCcFlushContext = 0x165, kCcNvReadPublic = 0x169,
                   kCcReadPublic = 0x173, kCcStartAuthSession = 0x176, kCcPcrRead = 0x17E;
constexpr uint8_t kSePolicy = 0x01;
constexpr size_t kNvChunk = 512;

std::string hex_of(std::span<const uint8_t> b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}

Bytes sha256_bytes(std::span<const uint8_t> b) {
  auto d = sha256(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  return Bytes(d.begin(), d.end());
}

Result<std::string> read_text(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return make_error("cannot read " + std::string(what) + " " + path + ": " + strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result<Pkey> p256_public(const EccPoint& p) {
  if (p.x.size() != 32 || p.y.size() != 32) return make_error("not a P-256 point");
  Bytes oct{0x04};
  oct.insert(oct.end(), p.x.begin(), p.x.end());
  oct.insert(oct.end(), p.y.begin(), p.y.end());
  ParamBld bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, oct.data(), oct.size()))
    return make_error("OpenSSL: cannot build a key");
  Params params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return make_error("not a point on P-256");
  }
  return Pkey(raw);
}

Bytes label_bytes(const char* label) {
  return Bytes(label, label + strlen(label) + 1);  // with its terminating zero octet
}

// TPM 2.0 Part 1 §11.4.10.2 KDFa with HMAC-SHA-256.
Bytes kdfa(std::span<const uint8_t> key, const char* label, std::span<const uint8_t> u,
           std::span<const uint8_t> v, uint32_t bits) {
  Bytes out;
  for (uint32_t i = 1; out.size() * 8 < bits; ++i) {
    tpm2::Writer m;
    m.u32(i).raw(label_bytes(label)).raw(u).raw(v).u32(bits);
    uint8_t mac[32];
    unsigned len = 0;
    HMAC(EVP_sha256(), key.data(), int(key.size()), m.bytes().data(), m.bytes().size(), mac, &len);
    out.insert(out.end(), mac, mac + len);
  }
  out.resize(bits / 8);
  return out;
}

// TPM 2.0 Part 1 §11.4.10.3 KDFe with SHA-256.
Bytes kdfe(std::span<const uint8_t> z, const char* label, std::span<const uint8_t> u,
           std::span<const uint8_t> v, uint32_t bits) {
  Bytes out;
  for (uint32_t i = 1; out.size() * 8 < bits; ++i) {
    tpm2::Writer m;
    m.u32(i).raw(z).raw(label_bytes(label)).raw(u).raw(v);
    auto d = sha256_bytes(m.bytes());
    out.insert(out.end(), d.begin(), d.end());
  }
  out.resize(bits / 8);
  return out;
}

Result<Bytes> aes128_cfb(std::span<const uint8_t> key, std::span<const uint8_t> in, bool enc) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  uint8_t iv[16] = {};
  Bytes out(in.size() + 16);
  int n = 0, m = 0;
  if (!ctx ||
      EVP_CipherInit_ex(ctx.get(), EVP_aes_128_cfb128(), nullptr, key.data(), iv, enc) != 1 ||
      EVP_CipherUpdate(ctx.get(), out.data(), &n, in.data(), int(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + n, &m) != 1)
    return make_error("OpenSSL: AES-CFB failed");
  out.resize(size_t(n) + size_t(m));
  return out;
}

Bytes hmac256(std::span<const uint8_t> key, std::span<const uint8_t> a,
              std::span<const uint8_t> b) {
  Bytes m(a.begin(), a.end());
  m.insert(m.end(), b.begin(), b.end());
  uint8_t mac[32];
  unsigned len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), m.data(), m.size(), mac, &len);
  return Bytes(mac, mac + len);
}

Result<Bytes> ecdh_x(EVP_PKEY* mine, EVP_PKEY* peer) {
  PkeyCtx ctx(EVP_PKEY_CTX_new(mine, nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &len) != 1) {
    ERR_clear_error();
    return make_error("OpenSSL: ECDH failed");
  }
  Bytes z(len);
  if (EVP_PKEY_derive(ctx.get(), z.data(), &len) != 1 || len != 32)
    return make_error("OpenSSL: ECDH failed");
  return z;
}

Bytes coord(EVP_PKEY* k, const char* which) {
  BIGNUM* raw = nullptr;
  Bytes out(32);
  if (EVP_PKEY_get_bn_param(k, which, &raw) != 1) return {};
  Bn bn(raw);
  if (BN_bn2binpad(bn.get(), out.data(), 32) != 32) return {};
  return out;
}

// The seed's two halves of the KDFs, shared by both directions.
struct Keys {
  Bytes sym, hmac;
};
Keys credential_keys(std::span<const uint8_t> z, const Bytes& eph_x, const EccPoint& ek,
                     std::span<const uint8_t> name) {
  const Bytes seed = kdfe(z, "IDENTITY", eph_x, ek.x, 256);
  return {kdfa(seed, "STORAGE", name, {}, 128), kdfa(seed, "INTEGRITY", {}, {}, 256)};
}

Row row(std::string check, Verdict v, std::string detail, std::string value = "", int pcr = -1) {
  return Row{std::move(check), pcr, std::move(value), v, std::move(detail)};
}

Bytes random_bytes(size_t n) {
  Bytes b(n);
  if (RAND_bytes(b.data(), int(n)) != 1) abort();  // no entropy: nothing sane to do
  return b;
}

}  // namespace

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "PASS";
    case Verdict::kFail:
      return "FAIL";
    case Verdict::kInfo:
      return "info";
  }
  return "?";
}

Result<PublicArea> parse_ecc_public(std::span<const uint8_t> b) {
  PublicArea p;
  p.area.assign(b.begin(), b.end());
  tpm2::Reader r(b);
  uint16_t sym, scheme, kdf, u16;
  Bytes skip;
  if (!r.u16(p.type) || !r.u16(p.name_alg) || !r.u32(p.attributes) || !r.b2(p.auth_policy))
    return make_error("truncated public area");
  if (p.type != tpm2::kAlgEcc) return make_error("not an ECC key");
  if (!r.u16(sym) || (sym != tpm2::kAlgNull && (!r.u16(u16) || !r.u16(u16))) || !r.u16(scheme) ||
      (scheme != tpm2::kAlgNull && !r.u16(u16)) || !r.u16(p.curve) || !r.u16(kdf) ||
      (kdf != tpm2::kAlgNull && !r.u16(u16)) || !r.b2(p.point.x) || !r.b2(p.point.y) || !r.done())
    return make_error("malformed ECC public area");
  if (p.name_alg != tpm2::kAlgSha256) return make_error("name algorithm is not SHA-256");
  if (p.curve != tpm2::kCurveP256 || p.point.x.size() != 32 || p.point.y.size() != 32)
    return make_error("not a P-256 key");
  return p;
}

Bytes object_name(const PublicArea& p) {
  tpm2::Writer w;
  w.u16(p.name_alg).raw(sha256_bytes(p.area));
  return w.bytes();
}

Bytes qualified_name_in_hierarchy(uint32_t hierarchy, std::span<const uint8_t> name) {
  tpm2::Writer in;
  in.u32(hierarchy).raw(name);  // a hierarchy's (qualified) name is its handle
  tpm2::Writer w;
  w.u16(tpm2::kAlgSha256).raw(sha256_bytes(in.bytes()));
  return w.bytes();
}

Bytes encode_pcr_selection(const std::vector<PcrSelection>& sel) {
  tpm2::Writer w;
  w.u32(uint32_t(sel.size()));
  for (const auto& s : sel) {
    uint8_t bits[3] = {};
    for (uint32_t p : s.pcrs)
      if (p < 24) bits[p / 8] |= uint8_t(1u << (p % 8));
    w.u16(s.hash).u8(3).raw(bits);
  }
  return w.bytes();
}

namespace {
bool read_selection(tpm2::Reader& r, std::vector<PcrSelection>& out) {
  uint32_t count;
  if (!r.u32(count) || count > 16) return false;
  for (uint32_t i = 0; i < count; ++i) {
    PcrSelection s;
    uint8_t n;
    Bytes bits;
    if (!r.u16(s.hash) || !r.u8(n) || n > 32 || !r.raw(bits, n)) return false;
    for (uint32_t p = 0; p < 8u * n; ++p)
      if (bits[p / 8] & (1u << (p % 8))) s.pcrs.push_back(p);
    out.push_back(std::move(s));
  }
  return true;
}
}  // namespace

Result<Attest> parse_attest(std::span<const uint8_t> b) {
  Attest a;
  tpm2::Reader r(b);
  if (!r.u32(a.magic) || !r.u16(a.type) || !r.b2(a.signer) || !r.b2(a.extra) || !r.u64(a.clock) ||
      !r.u32(a.reset_count) || !r.u32(a.restart_count) || !r.u8(a.safe) || !r.u64(a.firmware))
    return make_error("truncated TPMS_ATTEST");
  if (a.magic != kAttestMagic) return make_error("TPMS_ATTEST magic is not TPM_GENERATED_VALUE");
  if (a.type != kStAttestQuote) return make_error("TPMS_ATTEST is not a quote");
  if (!read_selection(r, a.selection) || !r.b2(a.pcr_digest))
    return make_error("truncated TPMS_ATTEST");
  if (!r.done()) return make_error("trailing bytes after TPMS_ATTEST");
  return a;
}

Bytes encode_attest(const Attest& a) {
  tpm2::Writer w;
  w.u32(a.magic).u16(a.type).b2(a.signer).b2(a.extra).u64(a.clock).u32(a.reset_count);
  w.u32(a.restart_count).u8(a.safe).u64(a.firmware).raw(encode_pcr_selection(a.selection));
  w.b2(a.pcr_digest);
  return w.bytes();
}

Result<Signature> parse_signature(std::span<const uint8_t> b) {
  Signature s;
  tpm2::Reader r(b);
  if (!r.u16(s.alg) || !r.u16(s.hash)) return make_error("truncated TPMT_SIGNATURE");
  if (s.alg != tpm2::kAlgEcdsa || s.hash != tpm2::kAlgSha256)
    return make_error("signature is not ECDSA/SHA-256");
  if (!r.b2(s.r) || !r.b2(s.s) || !r.done()) return make_error("malformed TPMT_SIGNATURE");
  return s;
}

Bytes encode_signature(const Signature& s) {
  tpm2::Writer w;
  w.u16(s.alg).u16(s.hash).b2(s.r).b2(s.s);
  return w.bytes();
}

Status verify_ecdsa(const EccPoint& key, std::span<const uint8_t> msg, const Signature& sig) {
  auto pk = p256_public(key);
  if (!pk) return pk.error();
  if (sig.r.empty() || sig.s.empty() || sig.r.size() > 32 || sig.s.size() > 32)
    return make_error("signature values out of range");
  EcSig es(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(sig.r.data(), int(sig.r.size()), nullptr);
  BIGNUM* s = BN_bin2bn(sig.s.data(), int(sig.s.size()), nullptr);
  if (!es || !r || !s || ECDSA_SIG_set0(es.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return make_error("OpenSSL: cannot build a signature");
  }
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(es.get(), &der);
  if (der_len <= 0) return make_error("OpenSSL: cannot encode a signature");
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> hold(
      der, [](unsigned char* p) { OPENSSL_free(p); });
  MdCtx md(EVP_MD_CTX_new());
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, pk->get()) != 1)
    return make_error("OpenSSL: cannot verify");
  const int ok = EVP_DigestVerify(md.get(), der, size_t(der_len), msg.data(), msg.size());
  ERR_clear_error();
  if (ok != 1) return make_error("signature does not verify with the AK");
  return {};
}

std::vector<Row> verify_quote(const QuoteEvidence& q) {
  std::vector<Row> rows;
  auto a = parse_attest(q.attest);
  auto s = parse_signature(q.signature);
  Status sig_ok = s ? verify_ecdsa(q.ak, q.attest, *s) : Status(s.error());
  if (!sig_ok) {
    rows.push_back(row("signature", Verdict::kFail, sig_ok.error().message));
  } else if (!a) {
    rows.push_back(row("signature", Verdict::kFail, a.error().message));
  } else if (!q.ak_qualified_name.empty() && a->signer != q.ak_qualified_name) {
    rows.push_back(row("signature", Verdict::kFail, "quote names another signer than the AK"));
  } else {
    rows.push_back(row("signature", Verdict::kPass,
                       "ECDSA P-256/SHA-256 by the AK over TPMS_ATTEST (quote, TPM_GENERATED)"));
  }
  if (!a) {
    rows.push_back(row("nonce", Verdict::kFail, "quote not parsed", hex_of(q.nonce)));
    rows.push_back(row("PCR digest", Verdict::kFail, "quote not parsed"));
    return rows;
  }
  rows.push_back(a->extra == q.nonce
                     ? row("nonce", Verdict::kPass, "extraData is the nonce", hex_of(q.nonce))
                     : row("nonce", Verdict::kFail,
                           "extraData " + hex_of(a->extra) + " is not the nonce", hex_of(q.nonce)));
  PcrSelection want{tpm2::kAlgSha256, {}};
  for (uint32_t i = 0; i < kQuotedPcrs; ++i) want.pcrs.push_back(i);
  Bytes concat;
  for (uint32_t i = 0; i < kQuotedPcrs; ++i) {
    auto it = q.pcrs.find(i);
    if (it == q.pcrs.end()) {
      rows.push_back(
          row("PCR digest", Verdict::kFail, "PCR " + std::to_string(i) + " was not read"));
      return rows;
    }
    concat.insert(concat.end(), it->second.begin(), it->second.end());
  }
  const Bytes digest = sha256_bytes(concat);
  if (a->selection.size() != 1 || !(a->selection[0] == want))
    rows.push_back(row("PCR digest", Verdict::kFail,
                       "quote covers another PCR selection than sha256 0-9",
                       hex_of(a->pcr_digest)));
  else if (a->pcr_digest != digest)
    rows.push_back(row("PCR digest", Verdict::kFail,
                       "quoted digest is not SHA-256 of the PCR values read (" +
                           hex_of(digest).substr(0, 16) + "…)",
                       hex_of(a->pcr_digest)));
  else
    rows.push_back(row("PCR digest", Verdict::kPass, "SHA-256 of sha256 PCRs 0-9 as read",
                       hex_of(a->pcr_digest)));
  return rows;
}

Result<Credential> make_credential(const EccPoint& ek, std::span<const uint8_t> name,
                                   std::span<const uint8_t> secret) {
  if (secret.empty() || secret.size() > 32) return make_error("credential must be 1..32 bytes");
  auto ek_key = p256_public(ek);
  if (!ek_key) return make_error("EK: " + ek_key.error().message);
  Pkey eph(EVP_EC_gen("P-256"));
  if (!eph) return make_error("OpenSSL: cannot make an ephemeral key");
  auto z = ecdh_x(eph.get(), ek_key->get());
  if (!z) return z.error();
  const Bytes ex = coord(eph.get(), OSSL_PKEY_PARAM_EC_PUB_X);
  const Bytes ey = coord(eph.get(), OSSL_PKEY_PARAM_EC_PUB_Y);
  if (ex.empty() || ey.empty()) return make_error("OpenSSL: cannot read the ephemeral key");
  const Keys k = credential_keys(*z, ex, ek, name);
  tpm2::Writer plain;
  plain.b2(secret);  // TPM2B_DIGEST
  auto enc = aes128_cfb(k.sym, plain.bytes(), true);
  if (!enc) return enc.error();
  tpm2::Writer id;
  id.b2(hmac256(k.hmac, *enc, name)).raw(*enc);
  tpm2::Writer pt;
  pt.b2(ex).b2(ey);
  return Credential{id.bytes(), pt.bytes()};
}

Result<Bytes> activate_credential_soft(std::span<const uint8_t> ek_private, const EccPoint& ek,
                                       std::span<const uint8_t> name, const Credential& c) {
  tpm2::Reader pr(c.encrypted_secret);
  EccPoint eph;
  if (!pr.b2(eph.x) || !pr.b2(eph.y) || !pr.done()) return make_error("malformed secret");
  auto eph_key = p256_public(eph);
  if (!eph_key) return eph_key.error();
  // The EK's private key, from its scalar and public point.
  Bytes oct{0x04};
  oct.insert(oct.end(), ek.x.begin(), ek.x.end());
  oct.insert(oct.end(), ek.y.begin(), ek.y.end());
  Bn d(BN_bin2bn(ek_private.data(), int(ek_private.size()), nullptr));
  ParamBld bld(OSSL_PARAM_BLD_new());
  if (!d || !bld ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, oct.data(),
                                        oct.size()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, d.get()))
    return make_error("OpenSSL: cannot build a key");
  Params params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1)
    return make_error("OpenSSL: cannot build a key");
  Pkey priv(raw);
  auto z = ecdh_x(priv.get(), eph_key->get());
  if (!z) return z.error();
  const Keys k = credential_keys(*z, eph.x, ek, name);
  tpm2::Reader ir(c.id_object);
  Bytes mac, enc;
  if (!ir.b2(mac) || !ir.raw(enc, ir.left())) return make_error("malformed credential blob");
  if (hmac256(k.hmac, enc, name) != mac) return make_error("credential integrity check failed");
  auto plain = aes128_cfb(k.sym, enc, false);
  if (!plain) return plain.error();
  tpm2::Reader r(*plain);
  Bytes out;
  if (!r.b2(out) || !r.done()) return make_error("malformed credential");
  return out;
}

Result<std::string> verify_ek_certificate(std::span<const uint8_t> der, const std::string& ca_pem,
                                          const EccPoint& ek) {
  const unsigned char* p = der.data();
  Cert cert(d2i_X509(nullptr, &p, long(der.size())));
  if (!cert || p != der.data() + der.size()) {
    ERR_clear_error();
    return make_error("EK certificate is not one DER X.509 certificate");
  }
  Bio bio(BIO_new_mem_buf(ca_pem.data(), int(ca_pem.size())));
  Cert ca(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!ca) {
    ERR_clear_error();
    return make_error("host CA certificate is not PEM X.509");
  }
  Store store(X509_STORE_new());
  StoreCtx ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1)
    return make_error("OpenSSL: cannot set up verification");
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return make_error(std::string("EK certificate does not chain to the host CA: ") +
                      X509_verify_cert_error_string(err));
  }
  auto ek_key = p256_public(ek);
  if (!ek_key) return make_error("EK: " + ek_key.error().message);
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), ek_key->get()) != 1) {
    ERR_clear_error();
    return make_error("EK certificate certifies another key than the persisted EK");
  }
  char issuer[256] = {};
  X509_NAME_oneline(X509_get_issuer_name(cert.get()), issuer, sizeof(issuer) - 1);
  return std::string("certificate issued by ") + issuer + " certifies the EK at 0x81010002";
}

Result<HostRecord> parse_boot_record(const std::string& text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return make_error(origin + ": " + std::string(e.description()));
  }
  HostRecord h;
  std::optional<std::string> cmdline;
  bool have_cmdline_sha = false;
  for (auto& [k, v] : t) {
    const std::string key(k.str());
    auto s = v.value<std::string>();
    if (!s) return make_error(origin + ": '" + key + "' must be a string");
    if (key == "kernel" || key == "initrd") continue;
    if (key == "cmdline") {
      cmdline = *s;
      continue;
    }
    if (key != "cmdline_sha256" && key != "config_sha256" && key != "initrd_overlay_sha256")
      return make_error(origin + ": unknown key '" + key + "'");
    auto d = parse_hex(*s);
    if (!d) return make_error(origin + ": " + key + ": " + d.error().message);
    if (key == "cmdline_sha256") {
      h.cmdline = *d;
      have_cmdline_sha = true;
    }
    if (key == "config_sha256") h.config = *d;
    if (key == "initrd_overlay_sha256") h.initrd_overlay = *d;
  }
  if (!have_cmdline_sha) return make_error(origin + ": no cmdline_sha256");
  if (cmdline && sha256(*cmdline) != h.cmdline)
    return make_error(origin + ": cmdline_sha256 is not the SHA-256 of cmdline");
  return h;
}

namespace {

struct Tpm {
  tpm2::Client c;
  std::vector<tpm2::Session> pw() { return {tpm2::Session{}}; }
};

Result<std::pair<PublicArea, Bytes>> read_public(Tpm& t, uint32_t handle, const char* what) {
  auto p = t.c.call(what, kCcReadPublic, {handle}, {}, {});
  if (!p) return p.error();
  tpm2::Reader r(*p);
  Bytes area, name, qname;
  if (!r.b2(area) || !r.b2(name) || !r.b2(qname))
    return make_error(std::string(what) + ": malformed response");
  auto pub = parse_ecc_public(area);
  if (!pub) return make_error(std::string(what) + ": " + pub.error().message);
  return std::make_pair(std::move(*pub), name);
}

Result<Bytes> read_ek_cert(Tpm& t) {
  auto p = t.c.call("TPM2_NV_ReadPublic(EK certificate)", kCcNvReadPublic, {kEkCertIndex}, {}, {});
  if (!p) return p.error();
  tpm2::Reader r(*p);
  uint16_t size, name_alg, data_size;
  uint32_t index, attrs;
  Bytes policy;
  if (!r.u16(size) || !r.u32(index) || !r.u16(name_alg) || !r.u32(attrs) || !r.b2(policy) ||
      !r.u16(data_size) || index != kEkCertIndex)
    return make_error("TPM2_NV_ReadPublic(EK certificate): malformed response");
  Bytes cert;
  while (cert.size() < data_size) {
    const auto n = uint16_t(std::min<size_t>(kNvChunk, data_size - cert.size()));
    tpm2::Writer w;
    w.u16(n).u16(uint16_t(cert.size()));
    auto c = t.c.call("TPM2_NV_Read(EK certificate)", kCcNvRead, {tpm2::kRhOwner, kEkCertIndex},
                      t.pw(), w.bytes());
    if (!c) return c.error();
    tpm2::Reader cr(*c);
    Bytes chunk;
    if (!cr.b2(chunk) || chunk.size() != n)
      return make_error("TPM2_NV_Read(EK certificate): malformed response");
    cert.insert(cert.end(), chunk.begin(), chunk.end());
  }
  return cert;
}

// Credential activation: returns "" when the AK is bound to the EK, else why not.
Result<std::string> bind_ak(Tpm& t, const PublicArea& ek, const Bytes& ak_name) {
  const Bytes secret = random_bytes(32);
  auto cred = make_credential(ek.point, ak_name, secret);
  if (!cred) return make_error("MakeCredential: " + cred.error().message);
  tpm2::Writer sa;
  sa.b2(random_bytes(32)).b2(Bytes{}).u8(kSePolicy).u16(tpm2::kAlgNull).u16(tpm2::kAlgSha256);
  std::vector<uint32_t> h;
  auto s = t.c.call("TPM2_StartAuthSession", kCcStartAuthSession, {tpm2::kRhNull, tpm2::kRhNull},
                    {}, sa.bytes(), 1, &h);
  if (!s) return s.error();
  const uint32_t session = h.at(0);
  auto flush = [&] {
    tpm2::Writer f;
    f.u32(session);
    (void)t.c.call("TPM2_FlushContext", kCcFlushContext, {}, {}, f.bytes());
  };
  tpm2::Writer ps;
  ps.b2(Bytes{}).b2(Bytes{}).b2(Bytes{}).u32(0);  // nonceTPM, cpHashA, policyRef, expiration
  auto p = t.c.call("TPM2_PolicySecret(endorsement)", kCcPolicySecret,
                    {tpm2::kRhEndorsement, session}, t.pw(), ps.bytes());
  if (!p) {
    flush();
    return p.error();
  }
  tpm2::Writer ac;
  ac.b2(cred->id_object).b2(cred->encrypted_secret);
  tpm2::Session policy{
      session, random_bytes(32), 0, {}};  // continueSession clear: ends with the command
  auto a = t.c.call("TPM2_ActivateCredential", kCcActivateCredential, {kAkHandle, kEkHandle},
                    {tpm2::Session{}, policy}, ac.bytes());
  if (!a) {
    flush();
    return std::string("the EK's TPM did not release the credential for the AK (") +
           a.error().message + ")";
  }
  tpm2::Reader r(*a);
  Bytes got;
  if (!r.b2(got)) return std::string("TPM2_ActivateCredential: malformed response");
  if (got != secret) return std::string("TPM2_ActivateCredential returned another credential");
  return std::string();
}

Result<std::map<uint32_t, Sha256>> read_pcrs(Tpm& t) {
  std::map<uint32_t, Sha256> out;
  for (int round = 0; round < 4 && out.size() < kQuotedPcrs; ++round) {
    PcrSelection want{tpm2::kAlgSha256, {}};
    for (uint32_t i = 0; i < kQuotedPcrs; ++i)
      if (!out.count(i)) want.pcrs.push_back(i);
    auto p = t.c.call("TPM2_PCR_Read", kCcPcrRead, {}, {}, encode_pcr_selection({want}));
    if (!p) return p.error();
    tpm2::Reader r(*p);
    uint32_t counter, count;
    std::vector<PcrSelection> got;
    if (!r.u32(counter) || !read_selection(r, got) || !r.u32(count) || got.size() != 1 ||
        got[0].hash != tpm2::kAlgSha256 || got[0].pcrs.size() != count)
      return make_error("TPM2_PCR_Read: malformed response");
    for (uint32_t pcr : got[0].pcrs) {
      Bytes v;
      if (!r.b2(v) || v.size() != 32 || pcr >= kQuotedPcrs || out.count(pcr))
        return make_error("TPM2_PCR_Read: malformed response");
      Sha256 d;
      std::copy(v.begin(), v.end(), d.begin());
      out[pcr] = d;
    }
  }
  if (out.size() != kQuotedPcrs) return make_error("TPM2_PCR_Read: PCRs 0-9 not all returned");
  return out;
}

}  // namespace

std::string describe_event(const Event& e) {
  static const std::map<uint32_t, const char*> kNames = {
      {0x00000001, "EV_POST_CODE"},
      {0x00000003, "EV_NO_ACTION"},
      {0x00000004, "EV_SEPARATOR"},
      {0x00000005, "EV_ACTION"},
      {0x00000006, "EV_EVENT_TAG"},
      {0x00000007, "EV_S_CRTM_CONTENTS"},
      {0x00000008, "EV_S_CRTM_VERSION"},
      {0x0000000D, "EV_IPL"},
      {0x80000001, "EV_EFI_VARIABLE_DRIVER_CONFIG"},
      {0x80000002, "EV_EFI_VARIABLE_BOOT"},
      {0x80000003, "EV_EFI_BOOT_SERVICES_APPLICATION"},
      {0x80000004, "EV_EFI_BOOT_SERVICES_DRIVER"},
      {0x80000006, "EV_EFI_GPT_EVENT"},
      {0x80000007, "EV_EFI_ACTION"},
      {0x80000008, "EV_EFI_PLATFORM_FIRMWARE_BLOB"},
      {0x8000000A, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"},
      {0x800000E0, "EV_EFI_VARIABLE_AUTHORITY"},
  };
  auto it = kNames.find(e.type);
  char hexname[16];
  snprintf(hexname, sizeof hexname, "0x%08x", e.type);
  std::string out = it != kNames.end() ? it->second : hexname;
  if (e.type == kEvIpl || e.type == 0x80000007) {
    std::string text = e.data.substr(0, 200);
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    out += " \"" + text + (e.data.size() > 200 ? "...\"" : "\"");
  }
  return out;
}

std::vector<Row> check_firmware_boot(const std::vector<Event>& log,
                                     const std::map<uint32_t, Sha256>& quoted,
                                     const std::vector<Event>* reference,
                                     const std::vector<Event>* golden) {
  std::vector<Row> rows;
  auto replayed = replay(log);
  auto of_pcr = [](const std::vector<Event>& events, uint32_t pcr) {
    std::vector<const Event*> out;
    for (const auto& e : events)
      if (e.pcr == pcr && e.type != kEvNoAction) out.push_back(&e);
    return out;
  };
  for (uint32_t i = 0; i < kQuotedPcrs; ++i) {
    const Sha256 value = quoted.count(i) ? quoted.at(i) : Sha256{};
    Row r = row("PCR " + std::to_string(i), Verdict::kFail, "", hex(value), int(i));
    const auto mine = of_pcr(log, i);
    const bool by_golden = golden && !of_pcr(*golden, i).empty();
    const std::vector<Event>* want = by_golden ? golden : reference;
    const std::string whose = by_golden ? "the image's golden values" : "the reference boot";
    if (replayed[i] != value) {
      r.detail = "differs from the event log's replay " + hex(replayed[i]).substr(0, 16) + "…";
    } else if (!want) {
      r.detail = "no reference boot recorded (axl attest NAME --record)";
    } else if (replay(*want)[i] == value) {
      r.verdict = Verdict::kPass;
      r.detail = std::to_string(mine.size()) + " events, as in " + whose;
    } else {
      const auto ref = of_pcr(*want, i);
      size_t k = 0;
      while (k < mine.size() && k < ref.size() && mine[k]->type == ref[k]->type &&
             mine[k]->digest == ref[k]->digest)
        ++k;
      if (k < mine.size())
        r.detail = "event " + std::to_string(k + 1) + " (" + describe_event(*mine[k]) +
                   (k < ref.size() && ref[k]->type == mine[k]->type &&
                            (ref[k]->data == mine[k]->data || by_golden)
                        ? ") has another digest than in " + whose
                        : ") differs from " + whose +
                              (k < ref.size() ? " (" + describe_event(*ref[k]) + ")"
                                              : std::string(" (none)")));
      else
        r.detail = whose + " has more events (" + describe_event(*ref[k]) + " missing)";
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

Result<AttestReport> attest(const AttestInputs& in) {
  auto log_bytes = read_text(in.event_log, "event log");
  if (!log_bytes) return log_bytes.error();
  auto ca = read_text(in.ca, "host CA certificate");
  if (!ca) return ca.error();
  std::string record_text = "", golden_text = "";
  std::optional<std::vector<Event>> reference, golden_events;
  if (in.firmware) {
    if (!in.reference.empty() && ::access(in.reference.c_str(), F_OK) == 0) {
      auto ref_bytes = read_text(in.reference, "reference boot log");
      if (!ref_bytes) return ref_bytes.error();
      auto ref = parse_event_log(*ref_bytes);
      if (!ref)
        return make_error("reference boot log " + in.reference + ": " + ref.error().message);
      reference = std::move(ref).value();
    }
    if (!in.golden_log.empty()) {
      auto g_bytes = read_text(in.golden_log, "golden event log");
      if (!g_bytes) return g_bytes.error();
      auto g = parse_event_log(*g_bytes);
      if (!g) return make_error("golden event log " + in.golden_log + ": " + g.error().message);
      golden_events = std::move(g).value();
    }
  } else {
    auto r = read_text(in.boot_record, "boot record");
    if (!r) return r.error();
    record_text = *r;
    auto g = read_text(in.golden, "golden values");
    if (!g) return g.error();
    golden_text = *g;
  }
  auto golden = in.firmware ? Result<std::vector<GoldenImage>>(std::vector<GoldenImage>{})
                            : parse_golden(golden_text, in.golden);
  if (!golden) return golden.error();
  auto host = in.firmware ? Result<HostRecord>(HostRecord{})
                          : parse_boot_record(record_text, in.boot_record);
  if (!host) return host.error();

  auto client = tpm2::Client::connect(in.tpm);
  if (!client) return client.error();
  Tpm t{std::move(*client)};
  AttestReport rep;
  auto& rows = rep.rows;

  // EK: persisted key, its certificate, the chain to the host CA.
  auto ek = read_public(t, kEkHandle, "TPM2_ReadPublic(EK 0x81010002)");
  if (!ek) return ek.error();
  const PublicArea& ekp = ek->first;
  const std::string ek_name = hex_of(object_name(ekp));
  if ((ekp.attributes & (kAttrFixedTpm | kAttrFixedParent | kAttrRestricted | kAttrDecrypt)) !=
          (kAttrFixedTpm | kAttrFixedParent | kAttrRestricted | kAttrDecrypt) ||
      (ekp.attributes & kAttrSign) ||
      ekp.auth_policy != Bytes(std::begin(kEkPolicy), std::end(kEkPolicy))) {
    rows.push_back(
        row("EK chain", Verdict::kFail,
            "the key at 0x81010002 is not a TPM-bound restricted decryption key with the EK policy",
            ek_name));
  } else {
    auto cert = read_ek_cert(t);
    if (!cert) return cert.error();
    auto v = verify_ek_certificate(*cert, *ca, ekp.point);
    rows.push_back(v ? row("EK chain", Verdict::kPass, *v, ek_name)
                     : row("EK chain", Verdict::kFail, v.error().message, ek_name));
  }

  // AK: a TPM-bound restricted signing key, bound to the EK by activation.
  auto ak = read_public(t, kAkHandle, "TPM2_ReadPublic(AK 0x81000002)");
  if (!ak) return ak.error();
  const PublicArea& akp = ak->first;
  const Bytes ak_name = object_name(akp);
  const uint32_t ak_need =
      kAttrFixedTpm | kAttrFixedParent | kAttrSensitiveOrigin | kAttrRestricted | kAttrSign;
  if ((akp.attributes & ak_need) != ak_need || (akp.attributes & kAttrDecrypt)) {
    rows.push_back(row("AK binding", Verdict::kFail,
                       "the key at 0x81000002 is not a TPM-bound restricted signing key",
                       hex_of(ak_name)));
  } else if (ak->second != ak_name) {
    rows.push_back(row("AK binding", Verdict::kFail,
                       "the TPM names the AK differently than its public area", hex_of(ak_name)));
  } else {
    auto b = bind_ak(t, ekp, ak_name);
    if (!b) return b.error();
    rows.push_back(
        b->empty()
            ? row("AK binding", Verdict::kPass,
                  "credential for the AK's name activated by the EK (TPM2_ActivateCredential)",
                  hex_of(ak_name))
            : row("AK binding", Verdict::kFail, *b, hex_of(ak_name)));
  }

  // The quote, and the PCR values it must cover.
  auto pcrs = read_pcrs(t);
  if (!pcrs) return pcrs.error();
  PcrSelection sel{tpm2::kAlgSha256, {}};
  for (uint32_t i = 0; i < kQuotedPcrs; ++i) sel.pcrs.push_back(i);
  tpm2::Writer qw;
  qw.b2(in.nonce).u16(tpm2::kAlgEcdsa).u16(tpm2::kAlgSha256).raw(encode_pcr_selection({sel}));
  auto qp = t.c.call("TPM2_Quote", kCcQuote, {kAkHandle}, t.pw(), qw.bytes());
  if (!qp) return qp.error();
  tpm2::Reader qr(*qp);
  QuoteEvidence q;
  if (!qr.b2(q.attest) || !qr.raw(q.signature, qr.left()))
    return make_error("TPM2_Quote: malformed response");
  q.ak = akp.point;
  q.ak_qualified_name = qualified_name_in_hierarchy(tpm2::kRhEndorsement, ak_name);
  q.nonce = in.nonce;
  q.pcrs = *pcrs;
  for (auto& r : verify_quote(q)) rows.push_back(std::move(r));

  if (in.firmware) {
    auto events = parse_event_log(*log_bytes);
    if (!events) {
      rows.push_back(row("event log", Verdict::kFail, events.error().message));
    } else {
      for (auto& r : check_firmware_boot(*events, *pcrs, reference ? &*reference : nullptr,
                                         golden_events ? &*golden_events : nullptr))
        rows.push_back(std::move(r));
    }
    rep.pass = true;
    for (const auto& r : rows)
      if (r.verdict == Verdict::kFail) rep.pass = false;
    return rep;
  }

  // PCRs 0-7 (firmware) are reported; 8 and 9 replay the log and match golden.
  for (uint32_t i = 0; i < 8; ++i)
    rows.push_back(row("PCR " + std::to_string(i), Verdict::kInfo, "firmware (SeaBIOS), reported",
                       hex((*pcrs)[i]), int(i)));
  auto events = parse_event_log(*log_bytes);
  if (!events) {
    for (uint32_t i : {kPcrCmdline, kPcrKernel})
      rows.push_back(row("PCR " + std::to_string(i), Verdict::kFail,
                         "event log: " + events.error().message, hex((*pcrs)[i]), int(i)));
  } else {
    auto replayed = replay(*events);
    const Event* kernel = nullptr;
    for (const auto& e : *events)
      if (e.pcr == kPcrKernel && e.type != kEvNoAction) {
        kernel = &e;
        break;
      }
    const GoldenImage* g = nullptr;
    for (const auto& gi : *golden)
      if (kernel && gi.kernel == kernel->digest) g = &gi;
    GoldenImage none;
    auto checks = check_boot(*events, g ? *g : none, *host);
    for (const auto& c : checks) {
      const Sha256& value = (*pcrs)[c.pcr];
      Row r = row("PCR " + std::to_string(c.pcr), Verdict::kFail, "", hex(value), int(c.pcr));
      if (replayed[c.pcr] != value)
        r.detail =
            "differs from the event log's replay " + hex(replayed[c.pcr]).substr(0, 16) + "…";
      else if (c.pcr == kPcrKernel && !g)
        r.detail = kernel ? "kernel " + hex(kernel->digest).substr(0, 16) + "… (\"" + kernel->data +
                                "\") matches no golden image in " + in.golden
                          : "kernel was never measured";
      else if (!c.pass)
        r.detail = c.detail;
      else {
        r.verdict = Verdict::kPass;
        r.detail = "log replay matches; " + c.detail +
                   (c.pcr == kPcrKernel ? " (image " + g->name + ")" : "");
      }
      rows.push_back(std::move(r));
    }
  }
  rep.pass = true;
  for (const auto& r : rows)
    if (r.verdict == Verdict::kFail) rep.pass = false;
  return rep;
}

}  // namespace axl::policy
