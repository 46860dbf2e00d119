#include "policy/attest.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include <memory>

namespace axl::policy {
namespace {

struct Key {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  ~Key() { EVP_PKEY_free(k); }
  Bytes param(const char* which) const {
    BIGNUM* bn = nullptr;
    EXPECT_EQ(EVP_PKEY_get_bn_param(k, which, &bn), 1);
    Bytes out(32);
    BN_bn2binpad(bn, out.data(), 32);
    BN_free(bn);
    return out;
  }
  EccPoint point() const {
    return {param(OSSL_PKEY_PARAM_EC_PUB_X), param(OSSL_PKEY_PARAM_EC_PUB_Y)};
  }
  Signature sign(const Bytes& msg) const {
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    size_t len = 0;
    EXPECT_EQ(EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, k), 1);
    EXPECT_EQ(EVP_DigestSign(md, nullptr, &len, msg.data(), msg.size()), 1);
    Bytes der(len);
    EXPECT_EQ(EVP_DigestSign(md, der.data(), &len, msg.data(), msg.size()), 1);
    EVP_MD_CTX_free(md);
    const unsigned char* p = der.data();
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, long(len));
    Signature s{0x0018, 0x000B, Bytes(32), Bytes(32)};
    BN_bn2binpad(ECDSA_SIG_get0_r(es), s.r.data(), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), s.s.data(), 32);
    ECDSA_SIG_free(es);
    return s;
  }
};

Bytes concat_pcrs(const std::map<uint32_t, Sha256>& pcrs) {
  Bytes b;
  for (const auto& [i, v] : pcrs) b.insert(b.end(), v.begin(), v.end());
  return b;
}

class QuoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint32_t i = 0; i < 10; ++i) q.pcrs[i] = sha256("pcr" + std::to_string(i));
    q.nonce = Bytes{1, 2, 3, 4, 5, 6, 7, 8};
    q.ak = ak.point();
    q.ak_qualified_name = qualified_name_in_hierarchy(0x4000000B, Bytes{0, 0x0B, 9, 9});
    a.magic = kAttestMagic;
    a.type = kStAttestQuote;
    a.signer = q.ak_qualified_name;
    a.extra = q.nonce;
    a.clock = 12345;
    a.selection = {{0x000B, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}};
    const Bytes all = concat_pcrs(q.pcrs);
    const Sha256 d =
        sha256(std::string_view(reinterpret_cast<const char*>(all.data()), all.size()));
    a.pcr_digest.assign(d.begin(), d.end());
    sign();
  }
  void sign() {
    q.attest = encode_attest(a);
    q.signature = encode_signature(ak.sign(q.attest));
  }
  Verdict verdict(const char* check) {
    for (const auto& r : verify_quote(q))
      if (r.check == check) return r.verdict;
    ADD_FAILURE() << "no row " << check;
    return Verdict::kInfo;
  }
  Key ak;
  Attest a;
  QuoteEvidence q;
};

TEST_F(QuoteTest, ValidQuotePasses) {
  auto rows = verify_quote(q);
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& r : rows) EXPECT_EQ(r.verdict, Verdict::kPass) << r.check << ": " << r.detail;
  auto parsed = parse_attest(q.attest);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->clock, 12345u);
  EXPECT_EQ(parsed->selection, a.selection);
}

TEST_F(QuoteTest, WrongNonceFails) {
  q.nonce[0] ^= 1;
  EXPECT_EQ(verdict("nonce"), Verdict::kFail);
  EXPECT_EQ(verdict("signature"), Verdict::kPass);
}

TEST_F(QuoteTest, FlippedSignatureByteFails) {
  q.signature[q.signature.size() - 5] ^= 0x01;
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
}

TEST_F(QuoteTest, FlippedAttestByteFailsSignature) {
  q.attest[q.attest.size() - 1] ^= 0x80;
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
}

TEST_F(QuoteTest, SignatureByAnotherKeyFails) {
  Key other;
  q.signature = encode_signature(other.sign(q.attest));
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
}

TEST_F(QuoteTest, DigestMismatchFails) {
  q.pcrs[9][0] ^= 1;  // the PCR read differs from what was quoted
  EXPECT_EQ(verdict("PCR digest"), Verdict::kFail);
  EXPECT_EQ(verdict("signature"), Verdict::kPass);
}

TEST_F(QuoteTest, OtherSelectionFails) {
  a.selection = {{0x000B, {0, 1, 2, 3, 4, 5, 6, 7, 8}}};
  sign();
  EXPECT_EQ(verdict("PCR digest"), Verdict::kFail);
}

TEST_F(QuoteTest, WrongMagicOrTypeFails) {
  a.magic = 0xFF544348;
  sign();
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
  a.magic = kAttestMagic;
  a.type = 0x8017;  // TPM_ST_ATTEST_CERTIFY
  sign();
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
}

TEST_F(QuoteTest, OtherSignerFails) {
  a.signer[3] ^= 1;
  sign();
  EXPECT_EQ(verdict("signature"), Verdict::kFail);
}

TEST_F(QuoteTest, TruncatedAttestFails) {
  // Signed as it is (a TPM could sign anything): still refused, every row.
  for (size_t cut : {size_t(0), size_t(3), size_t(20), q.attest.size() - 1}) {
    Bytes whole = q.attest;
    q.attest.resize(cut);
    q.signature = encode_signature(ak.sign(q.attest));
    EXPECT_FALSE(parse_attest(q.attest)) << cut;
    for (const auto& r : verify_quote(q))
      EXPECT_EQ(r.verdict, Verdict::kFail) << cut << " " << r.check;
    q.attest = whole;
  }
  Bytes longer = q.attest;
  longer.push_back(0);
  EXPECT_FALSE(parse_attest(longer));
}

TEST(Signature, MalformedRefused) {
  EXPECT_FALSE(parse_signature(Bytes{0x00, 0x18}));
  EXPECT_FALSE(parse_signature(Bytes{0x00, 0x14, 0x00, 0x0B, 0, 0, 0, 0}));  // RSASSA
  EXPECT_FALSE(parse_signature(Bytes{0x00, 0x18, 0x00, 0x0B, 0, 1, 7, 0, 1}));
}

TEST(Credential, RoundTripAndBinding) {
  Key ek;
  const Bytes name{0x00, 0x0B, 1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                   16,   17,   18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
  const Bytes secret(32, 0x5a);
  auto c = make_credential(ek.point(), name, secret);
  ASSERT_TRUE(c) << c.error().message;
  const Bytes priv = ek.param(OSSL_PKEY_PARAM_PRIV_KEY);
  auto got = activate_credential_soft(priv, ek.point(), name, *c);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, secret);
  // Another object's name, or another EK, cannot recover it.
  Bytes other = name;
  other.back() ^= 1;
  EXPECT_FALSE(activate_credential_soft(priv, ek.point(), other, *c));
  Key ek2;
  EXPECT_FALSE(
      activate_credential_soft(ek2.param(OSSL_PKEY_PARAM_PRIV_KEY), ek2.point(), name, *c));
  // Not a point on the curve.
  EccPoint bad = ek.point();
  bad.y[31] ^= 1;
  EXPECT_FALSE(make_credential(bad, name, secret));
}

TEST(PublicArea, ParsesEccAndRefusesTruncation) {
  tpm2::Writer w;
  w.u16(0x0023).u16(0x000B).u32(0x00050072).u16(0);
  w.u16(0x0010).u16(0x0018).u16(0x000B).u16(0x0003).u16(0x0010);
  w.b2(Bytes(32, 1)).b2(Bytes(32, 2));
  auto p = parse_ecc_public(w.bytes());
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->attributes, 0x00050072u);
  EXPECT_EQ(p->point.y, Bytes(32, 2));
  EXPECT_EQ(object_name(*p).size(), 34u);
  Bytes cut = w.bytes();
  cut.pop_back();
  EXPECT_FALSE(parse_ecc_public(cut));
}

TEST(BootRecord, ParsesAndChecks) {
  const std::string cmd = "console=ttyS0 panic=-1";
  const std::string good = "kernel = \"/k\"\ninitrd = \"/i\"\ncmdline = \"" + cmd +
                           "\"\ncmdline_sha256 = \"" + hex(sha256(cmd)) + "\"\nconfig_sha256 = \"" +
                           hex(sha256("cfg")) + "\"\n";
  auto h = parse_boot_record(good, "rec");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->cmdline, sha256(cmd));
  EXPECT_EQ(*h->config, sha256("cfg"));
  EXPECT_FALSE(h->initrd_overlay);
  EXPECT_FALSE(parse_boot_record(good + "extra = \"x\"\n", "rec"));
  EXPECT_FALSE(
      parse_boot_record("cmdline = \"x\"\ncmdline_sha256 = \"" + hex(sha256(cmd)) + "\"\n", "rec"));
  EXPECT_FALSE(parse_boot_record("kernel = \"/k\"\n", "rec"));
}

// A firmware boot: OVMF's events in PCRs 0-7, GRUB's in 8 and 9.
std::vector<Event> firmware_log(const std::string& cmdline, const std::string& kernel) {
  auto ev = [](uint32_t pcr, uint32_t type, const std::string& data, const std::string& what) {
    return Event{pcr, type, sha256(what), data};
  };
  return {ev(0, 0x80000008, "", "ovmf"),
          ev(4, 0x80000003, "", "bootx64.efi"),
          ev(7, 0x80000001, "", "SecureBoot"),
          ev(8, kEvIpl, "grub_cmd: linuxefi " + cmdline, cmdline),
          ev(9, kEvIpl, "/boot/vmlinuz", kernel),
          Event{0, kEvNoAction, {}, "ignored"}};
}

TEST(FirmwareBoot, MatchesItsReference) {
  auto log = firmware_log("ro", "k1");
  auto rows = check_firmware_boot(log, replay(log), &log);
  ASSERT_EQ(rows.size(), 10u);
  for (const auto& r : rows) EXPECT_EQ(r.verdict, Verdict::kPass) << r.check << ": " << r.detail;
}

TEST(FirmwareBoot, NoReferenceFailsEveryPcr) {
  auto log = firmware_log("ro", "k1");
  for (const auto& r : check_firmware_boot(log, replay(log), nullptr)) {
    EXPECT_EQ(r.verdict, Verdict::kFail);
    EXPECT_EQ(r.detail, "no reference boot recorded (axl attest NAME --record)");
  }
}

TEST(FirmwareBoot, AChangedCommandLineNamesPcr8AndItsEvent) {
  auto ref = firmware_log("ro", "k1"), log = firmware_log("ro quiet", "k1");
  auto rows = check_firmware_boot(log, replay(log), &ref);
  for (const auto& r : rows) {
    if (r.pcr == 8) {
      EXPECT_EQ(r.verdict, Verdict::kFail);
      EXPECT_NE(r.detail.find("event 1 (EV_IPL \"grub_cmd: linuxefi ro quiet\")"),
                std::string::npos)
          << r.detail;
    } else {
      EXPECT_EQ(r.verdict, Verdict::kPass) << r.check << ": " << r.detail;
    }
  }
}

TEST(FirmwareBoot, AChangedKernelHasAnotherDigestInPcr9) {
  auto ref = firmware_log("ro", "k1"), log = firmware_log("ro", "k2");
  auto rows = check_firmware_boot(log, replay(log), &ref);
  EXPECT_EQ(rows[9].verdict, Verdict::kFail);
  EXPECT_EQ(rows[9].detail,
            "event 1 (EV_IPL \"/boot/vmlinuz\") has another digest than in the reference boot");
}

TEST(FirmwareBoot, ALogThatDoesNotReplayToTheQuoteFails) {
  auto log = firmware_log("ro", "k1");
  auto quoted = replay(log);
  quoted[4][0] ^= 1;
  auto rows = check_firmware_boot(log, quoted, &log);
  EXPECT_EQ(rows[4].verdict, Verdict::kFail);
  EXPECT_NE(rows[4].detail.find("differs from the event log's replay"), std::string::npos);
  EXPECT_EQ(rows[3].verdict, Verdict::kPass);
}

}  // namespace
}  // namespace axl::policy
