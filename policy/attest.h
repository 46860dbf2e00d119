// The verifier behind `axl attest`: it trusts nothing the vTPM, the guest or
// QEMU says until it is checked.
//  - EK: its certificate (NV 0x01C0000A) must chain to the host's vTPM CA
//    and certify the public key of the persisted EK (0x81010002).
//  - AK (0x81000002): bound to that EK by credential activation (TPM 2.0
//    Part 1 §24: the verifier makes the credential in software against the
//    EK public and the AK's name; only the TPM holding the EK's private key,
//    with the AK loaded, can recover it with TPM2_ActivateCredential).
//  - Quote: ECDSA P-256/SHA-256 signature by the AK over TPMS_ATTEST, magic
//    and type, the nonce, the PCR selection (sha256 0-9) and the PCR digest
//    against the PCR values read; PCR 8 and 9 must equal the replay of the
//    event log and their events must match the golden values.
#pragma once
#include <map>
#include <span>
#include <string>
#include <vector>

#include "policy/golden.h"
#include "policy/measure.h"
#include "policy/tpm2.h"

namespace axl::policy {

using tpm2::Bytes;

inline constexpr uint32_t kEkHandle = 0x81010002;
inline constexpr uint32_t kAkHandle = 0x81000002;
inline constexpr uint32_t kEkCertIndex = 0x01C0000A;
inline constexpr uint32_t kAttestMagic = 0xFF544347;  // TPM_GENERATED_VALUE
inline constexpr uint16_t kStAttestQuote = 0x8018;
inline constexpr uint32_t kQuotedPcrs = 10;  // sha256 PCRs 0-9

struct EccPoint {
  Bytes x, y;
};

// A TPMT_PUBLIC of an ECC key, with the fields the verifier looks at.
struct PublicArea {
  Bytes area;  // the marshalled TPMT_PUBLIC (what the name is computed over)
  uint16_t type = 0, name_alg = 0;
  uint32_t attributes = 0;
  Bytes auth_policy;
  uint16_t curve = 0;
  EccPoint point;
};
Result<PublicArea> parse_ecc_public(std::span<const uint8_t> tpmt_public);
// TPM 2.0 Part 1 §16: nameAlg || H(TPMT_PUBLIC).
Bytes object_name(const PublicArea& p);
// The qualified name of a primary object of the hierarchy `hierarchy`.
Bytes qualified_name_in_hierarchy(uint32_t hierarchy, std::span<const uint8_t> name);

struct PcrSelection {
  uint16_t hash = 0;
  std::vector<uint32_t> pcrs;  // ascending
  bool operator==(const PcrSelection&) const = default;
};
Bytes encode_pcr_selection(const std::vector<PcrSelection>& sel);

struct Attest {
  uint32_t magic = 0;
  uint16_t type = 0;
  Bytes signer, extra;
  uint64_t clock = 0;
  uint32_t reset_count = 0, restart_count = 0;
  uint8_t safe = 0;
  uint64_t firmware = 0;
  std::vector<PcrSelection> selection;
  Bytes pcr_digest;
};
// Strict: a quote's TPMS_ATTEST, nothing missing, nothing after it.
Result<Attest> parse_attest(std::span<const uint8_t> b);
Bytes encode_attest(const Attest& a);

struct Signature {
  uint16_t alg = 0, hash = 0;
  Bytes r, s;
};
Result<Signature> parse_signature(std::span<const uint8_t> b);
Bytes encode_signature(const Signature& s);

// Is `sig` an ECDSA P-256 signature of SHA-256(msg) by `key`?
Status verify_ecdsa(const EccPoint& key, std::span<const uint8_t> msg, const Signature& sig);

enum class Verdict { kPass, kFail, kInfo };
const char* verdict_name(Verdict v);

struct Row {
  std::string check;  // "EK chain", "AK binding", "signature", "nonce", "PCR digest", "PCR 9"
  int pcr = -1;       // the PCR of a PCR row, else -1
  std::string value;  // hex, or "" when there is none
  Verdict verdict = Verdict::kFail;
  std::string detail;
};

// What a quote claims, and what it must match.
struct QuoteEvidence {
  Bytes attest;     // TPMS_ATTEST as the TPM returned it (signed bytes)
  Bytes signature;  // TPMT_SIGNATURE
  EccPoint ak;
  Bytes ak_qualified_name;  // expected qualifiedSigner
  Bytes nonce;
  std::map<uint32_t, Sha256> pcrs;  // sha256 PCRs 0-9 as read
};
// Rows "signature", "nonce", "PCR digest".
std::vector<Row> verify_quote(const QuoteEvidence& q);

// TPM2_MakeCredential in software for an ECC P-256 EK (nameAlg SHA-256,
// AES-128-CFB): an ephemeral ECDH key gives the seed (KDFe, "IDENTITY"),
// from which KDFa derives the symmetric ("STORAGE", bound to the object's
// name) and integrity ("INTEGRITY") keys.
struct Credential {
  Bytes id_object;         // TPM2B_ID_OBJECT's contents
  Bytes encrypted_secret;  // TPM2B_ENCRYPTED_SECRET's contents (a TPMS_ECC_POINT)
};
Result<Credential> make_credential(const EccPoint& ek, std::span<const uint8_t> object_name,
                                   std::span<const uint8_t> secret);
// The receiving side (TPM2_ActivateCredential), given the EK's private
// scalar: for tests of make_credential.
Result<Bytes> activate_credential_soft(std::span<const uint8_t> ek_private, const EccPoint& ek,
                                       std::span<const uint8_t> object_name, const Credential& c);

// The EK certificate (DER) chains to the CA (PEM text) and certifies `ek`.
// Returns a one-line description of what was verified.
Result<std::string> verify_ek_certificate(std::span<const uint8_t> der, const std::string& ca_pem,
                                          const EccPoint& ek);

// STATE/dom/NAME/boot-record.toml as the hypervisor writes it.
Result<HostRecord> parse_boot_record(const std::string& toml, const std::string& origin);

struct AttestInputs {
  std::string tpm;                                 // unix:PATH or tcp:IPV4:PORT
  std::string event_log, boot_record, ca, golden;  // file paths
  Bytes nonce;
  // A firmware-measured boot (firmware = "uefi"): event_log is the
  // firmware's TCG log as the guest's kernel exposes it, and PCRs 0-9 are
  // checked against `reference`, the log of a reference boot the operator
  // recorded (empty path or no file: none yet).  boot_record and golden are
  // not used.
  bool firmware = false;
  std::string reference;
  // Optional: golden events for some PCRs (4, 8, 9 from `axl measure
  // --image`), which take the reference's place for those PCRs.
  std::string golden_log;
};

// PCRs 0-9 of a firmware-measured boot: each must equal the replay of the
// guest's event log (else the log lies) and the replay of the reference
// boot's log; a difference names the PCR and the first event that differs.
// `reference` null: nothing recorded yet (every PCR row fails, saying so).
// `golden`: the PCRs it has events for are checked against it instead.
std::vector<Row> check_firmware_boot(const std::vector<Event>& log,
                                     const std::map<uint32_t, Sha256>& quoted,
                                     const std::vector<Event>* reference,
                                     const std::vector<Event>* golden = nullptr);
// An event as people read it: its type, and for EV_IPL its text.
std::string describe_event(const Event& e);
struct AttestReport {
  std::vector<Row> rows;
  bool pass = false;
};
// Runs the whole check.  An error (vTPM unreachable, a file unreadable, a
// TPM command refused) is one line; anything that fails verification is a
// FAIL row.
Result<AttestReport> attest(const AttestInputs& in);

}  // namespace axl::policy
