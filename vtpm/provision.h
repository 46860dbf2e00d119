// First-creation provisioning of a vTPM, as a TPM manufacturer would do it
// (TCG EK Credential Profile 2.0, Provisioning Guidance):
//  - the endorsement key from the default ECC NIST P-256 template (L-2),
//    persisted at kEkHandle;
//  - an X.509 certificate for it, signed by the per-host vTPM CA, stored in
//    the TPM's NV at kEkCertIndex (the ECC EK certificate index) and copied
//    to STATE/ek.crt;
//  - an attestation key: a restricted ECDSA P-256/SHA-256 signing key,
//    primary in the endorsement hierarchy, persisted at kAkHandle.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "vtpm/tpm_engine.h"

namespace axl::vtpm {

inline constexpr uint32_t kEkHandle = 0x81010002;     // ECC P-256 EK (TCG handle registry)
inline constexpr uint32_t kEkCertIndex = 0x01C0000A;  // ECC EK certificate NV index
inline constexpr uint32_t kAkHandle = 0x81000002;  // owner range, beside the usual SRK 0x81000001

// The per-host CA: DIR/ca.key (0600) and DIR/ca.crt, created when missing.
struct HostCa {
  std::string key_pem;
  std::string cert_pem;
};
Result<HostCa> ensure_host_ca(const std::string& dir);

// Runs on a fresh, powered-on engine; leaves it powered off with the
// permanent state saved.
Status provision(TpmEngine& engine, const HostCa& ca, const std::string& ek_cert_path);

// Certifies an EC P-256 public point (x, y, 32 bytes each) as an EK: DER.
Result<std::vector<uint8_t>> make_ek_cert(const HostCa& ca, const std::vector<uint8_t>& x,
                                          const std::vector<uint8_t>& y);

}  // namespace axl::vtpm
