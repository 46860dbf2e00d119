#include "vtpm/provision.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/log.h"
#include "common/unique_fd.h"
#include "vtpm/tpm_wire.h"

namespace axl::vtpm {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Bn = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

// TPM2_PolicySecret(TPM_RH_ENDORSEMENT) digest every default EK template
// carries as its authPolicy (EK Credential Profile, template L-2).
constexpr uint8_t kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC,
                                   0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52,
                                   0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};
using namespace tpm2;  // algorithm and curve identifiers
// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
constexpr uint32_t kEkAttributes = 0x000300B2;
// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
constexpr uint32_t kAkAttributes = 0x00050072;
// PPWRITE | PPREAD | OWNERREAD | AUTHREAD | NO_DA | PLATFORMCREATE
constexpr uint32_t kEkCertNvAttributes = 0x42070001;
constexpr size_t kNvChunk = 512;

std::string ssl_error(const std::string& what) { return what + " (OpenSSL)"; }

Result<std::string> read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return make_error("cannot read " + p + ": " + strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Status write_file_atomic(const std::string& p, const std::string& data, mode_t mode) {
  const std::string tmp = p + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return make_error("cannot create " + tmp + ": " + strerror(errno));
  if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()) ||
      ::fsync(fd.get()) != 0) {
    ::unlink(tmp.c_str());
    return make_error("cannot write " + tmp + ": " + strerror(errno));
  }
  fd.reset();
  if (::rename(tmp.c_str(), p.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error("cannot rename " + tmp + ": " + strerror(errno));
  }
  return {};
}

std::string pem_of(int (*write)(BIO*, void*), void* obj) {
  Bio b(BIO_new(BIO_s_mem()));
  write(b.get(), obj);
  char* p = nullptr;
  long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<size_t>(n));
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

bool random_serial(X509* cert) {
  Bn bn(BN_new());
  if (!bn || BN_rand(bn.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) return false;
  return BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) != nullptr;
}

Cert new_cert(const char* cn, long days) {
  Cert c(X509_new());
  if (!c || X509_set_version(c.get(), 2) != 1 || !random_serial(c.get())) return nullptr;
  X509_gmtime_adj(X509_getm_notBefore(c.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 60L * 60 * 24 * days);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const uint8_t*>("Axolotl"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>(cn), -1, -1,
                             0);
  return c;
}

Result<HostCa> create_ca(const std::string& dir) {
  Pkey key(EVP_EC_gen("P-256"));
  if (!key) return make_error(ssl_error("cannot generate the host CA key"));
  Cert c = new_cert("Axolotl vTPM host CA", 20 * 365);
  if (!c || X509_set_issuer_name(c.get(), X509_get_subject_name(c.get())) != 1 ||
      X509_set_pubkey(c.get(), key.get()) != 1 ||
      !add_ext(c.get(), c.get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !add_ext(c.get(), c.get(), NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !add_ext(c.get(), c.get(), NID_subject_key_identifier, "hash") ||
      X509_sign(c.get(), key.get(), EVP_sha256()) == 0) {
    return make_error(ssl_error("cannot make the host CA certificate"));
  }
  HostCa ca;
  {
    Bio b(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(b.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    ca.key_pem.assign(p, static_cast<size_t>(n));
  }
  ca.cert_pem =
      pem_of([](BIO* b, void* x) { return PEM_write_bio_X509(b, static_cast<X509*>(x)); }, c.get());
  if (auto s = write_file_atomic(dir + "/ca.key", ca.key_pem, 0600); !s) return s.error();
  if (auto s = write_file_atomic(dir + "/ca.crt", ca.cert_pem, 0644); !s) return s.error();
  AXL_INFO("created the host vTPM CA in %s", dir.c_str());
  return ca;
}

struct EccPoint {
  uint32_t handle;
  std::vector<uint8_t> x, y;
};

// Parses TPM2_CreatePrimary's response up to the ECC public point.
Result<EccPoint> parse_create_primary(std::span<const uint8_t> rsp) {
  tpm::Reader r(rsp);
  EccPoint p{};
  uint32_t param_size, attrs;
  uint16_t type, name_alg, sym, scheme, curve, kdf;
  std::span<const uint8_t> pub, policy, x, y;
  if (!r.skip(10) || !r.u32(p.handle) || !r.u32(param_size) || !r.b2(pub)) {
    return make_error("malformed TPM2_CreatePrimary response");
  }
  tpm::Reader q(pub);
  if (!q.u16(type) || !q.u16(name_alg) || !q.u32(attrs) || !q.b2(policy) || !q.u16(sym) ||
      (sym != kAlgNull && !q.skip(4)) || !q.u16(scheme) || (scheme != kAlgNull && !q.skip(2)) ||
      !q.u16(curve) || !q.u16(kdf) || (kdf != kAlgNull && !q.skip(2)) || !q.b2(x) || !q.b2(y) ||
      type != kAlgEcc || x.size() != 32 || y.size() != 32) {
    return make_error("TPM2_CreatePrimary returned an unexpected public area");
  }
  p.x.assign(x.begin(), x.end());
  p.y.assign(y.begin(), y.end());
  return p;
}

std::vector<uint8_t> create_primary(const std::vector<uint8_t>& public_area) {
  tpm::Command c(tpm::kCcCreatePrimary, {tpm::kRhEndorsement}, 1);
  c.open().u16(0).u16(0).close();  // inSensitive: empty userAuth and data
  c.b2(public_area);
  c.u16(0);  // outsideInfo
  c.u32(0);  // creationPCR: none
  return c.finish();
}

std::vector<uint8_t> ek_template() {
  std::vector<uint8_t> zero(32, 0);
  tpm2::Writer t;
  t.u16(kAlgEcc).u16(kAlgSha256).u32(kEkAttributes).b2(kEkPolicy);
  t.u16(kAlgAes).u16(128).u16(kAlgCfb).u16(kAlgNull).u16(kCurveP256).u16(kAlgNull);
  t.b2(zero).b2(zero);
  return t.bytes();
}

std::vector<uint8_t> ak_template() {
  tpm2::Writer t;
  t.u16(kAlgEcc).u16(kAlgSha256).u32(kAkAttributes).u16(0);
  t.u16(kAlgNull).u16(kAlgEcdsa).u16(kAlgSha256).u16(kCurveP256).u16(kAlgNull);
  t.u16(0).u16(0);
  return t.bytes();
}

Status persist(TpmEngine& e, uint32_t transient, uint32_t persistent) {
  auto r = e.call(
      tpm::Command(tpm::kCcEvictControl, {tpm::kRhOwner, transient}, 1).u32(persistent).finish());
  if (!r) return r.error();
  auto f = e.call(tpm::Command(tpm::kCcFlushContext, {}, 0).u32(transient).finish());
  if (!f) return f.error();
  return {};
}

}  // namespace

Result<HostCa> ensure_host_ca(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error("cannot create CA dir " + dir + ": " + strerror(errno));
  }
  // Two vTPMs made at once must not both create a CA.
  UniqueFd lock(::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0) {
    return make_error("cannot lock CA dir " + dir + ": " + strerror(errno));
  }
  struct stat st {};
  const bool have_key = ::stat((dir + "/ca.key").c_str(), &st) == 0;
  const bool have_crt = ::stat((dir + "/ca.crt").c_str(), &st) == 0;
  if (!have_key && !have_crt) return create_ca(dir);
  if (have_key != have_crt) {
    return make_error("CA dir " + dir + " holds only one of ca.key and ca.crt");
  }
  HostCa ca;
  auto k = read_file(dir + "/ca.key");
  if (!k) return k.error();
  auto c = read_file(dir + "/ca.crt");
  if (!c) return c.error();
  ca.key_pem = k.value();
  ca.cert_pem = c.value();
  return ca;
}

Result<std::vector<uint8_t>> make_ek_cert(const HostCa& ca, const std::vector<uint8_t>& x,
                                          const std::vector<uint8_t>& y) {
  Bio kb(BIO_new_mem_buf(ca.key_pem.data(), static_cast<int>(ca.key_pem.size())));
  Pkey ca_key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  Bio cb(BIO_new_mem_buf(ca.cert_pem.data(), static_cast<int>(ca.cert_pem.size())));
  Cert ca_cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  if (!ca_key || !ca_cert) return make_error("host CA key or certificate unreadable");

  std::vector<uint8_t> point{0x04};
  point.insert(point.end(), x.begin(), x.end());
  point.insert(point.end(), y.begin(), y.end());
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
  OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  EVP_PKEY* raw = nullptr;
  const bool ok = pctx && params && EVP_PKEY_fromdata_init(pctx) == 1 &&
                  EVP_PKEY_fromdata(pctx, &raw, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(pctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  Pkey ek(raw);
  if (!ok || !ek) return make_error("the TPM's EK is not a valid P-256 point");

  Cert c = new_cert("Axolotl vTPM endorsement key", 20 * 365);
  if (!c || X509_set_issuer_name(c.get(), X509_get_subject_name(ca_cert.get())) != 1 ||
      X509_set_pubkey(c.get(), ek.get()) != 1 ||
      !add_ext(c.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !add_ext(c.get(), ca_cert.get(), NID_key_usage, "critical,keyAgreement") ||
      // tcg-kp-EKCertificate
      !add_ext(c.get(), ca_cert.get(), NID_ext_key_usage, "2.23.133.8.1") ||
      !add_ext(c.get(), ca_cert.get(), NID_authority_key_identifier, "keyid:always") ||
      X509_sign(c.get(), ca_key.get(), EVP_sha256()) == 0) {
    return make_error(ssl_error("cannot make the EK certificate"));
  }
  int n = i2d_X509(c.get(), nullptr);
  if (n <= 0) return make_error(ssl_error("cannot encode the EK certificate"));
  std::vector<uint8_t> der(static_cast<size_t>(n));
  uint8_t* p = der.data();
  i2d_X509(c.get(), &p);
  return der;
}

Status provision(TpmEngine& e, const HostCa& ca, const std::string& ek_cert_path) {
  auto up = e.call(tpm::Command(tpm::kCcStartup, {}, 0).u16(0).finish());  // TPM_SU_CLEAR
  if (!up) return up.error();

  auto ek_rsp = e.call(create_primary(ek_template()));
  if (!ek_rsp) return make_error("creating the EK: " + ek_rsp.error().message);
  auto ek = parse_create_primary(ek_rsp.value());
  if (!ek) return ek.error();
  if (auto s = persist(e, ek->handle, kEkHandle); !s)
    return make_error("persisting the EK: " + s.error().message);

  auto der = make_ek_cert(ca, ek->x, ek->y);
  if (!der) return der.error();
  const auto& cert = der.value();
  auto def = e.call(tpm::Command(tpm::kCcNvDefineSpace, {tpm::kRhPlatform}, 1)
                        .u16(0)
                        .open()
                        .u32(kEkCertIndex)
                        .u16(kAlgSha256)
                        .u32(kEkCertNvAttributes)
                        .u16(0)
                        .u16(static_cast<uint16_t>(cert.size()))
                        .close()
                        .finish());
  if (!def) return make_error("defining the EK certificate index: " + def.error().message);
  for (size_t off = 0; off < cert.size(); off += kNvChunk) {
    const size_t n = std::min(kNvChunk, cert.size() - off);
    auto w = e.call(tpm::Command(tpm::kCcNvWrite, {tpm::kRhPlatform, kEkCertIndex}, 1)
                        .b2({cert.data() + off, n})
                        .u16(static_cast<uint16_t>(off))
                        .finish());
    if (!w) return make_error("writing the EK certificate: " + w.error().message);
  }

  auto ak_rsp = e.call(create_primary(ak_template()));
  if (!ak_rsp) return make_error("creating the AK: " + ak_rsp.error().message);
  auto ak = parse_create_primary(ak_rsp.value());
  if (!ak) return ak.error();
  if (auto s = persist(e, ak->handle, kAkHandle); !s)
    return make_error("persisting the AK: " + s.error().message);

  auto down = e.call(tpm::Command(tpm::kCcShutdown, {}, 0).u16(0).finish());
  if (!down) return down.error();
  auto perm = e.get_state(StateKind::kPermanent);
  if (!perm) return perm.error();
  if (auto s = e.store().save(StateKind::kPermanent, perm.value(), Durability::kPowerLoss); !s) {
    return s;
  }
  e.power_off(true);

  std::string pem;
  {
    const uint8_t* p = cert.data();
    Cert c(d2i_X509(nullptr, &p, static_cast<long>(cert.size())));
    pem = pem_of([](BIO* b, void* x) { return PEM_write_bio_X509(b, static_cast<X509*>(x)); },
                 c.get());
  }
  if (auto s = write_file_atomic(ek_cert_path, pem, 0644); !s) return s;
  AXL_INFO("provisioned: EK 0x%08x (certificate in NV 0x%08x), AK 0x%08x", kEkHandle, kEkCertIndex,
           kAkHandle);
  return {};
}

}  // namespace axl::vtpm
