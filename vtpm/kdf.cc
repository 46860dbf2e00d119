#include "vtpm/kdf.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <cstdlib>

namespace axl::vtpm {

std::array<uint8_t, 32> derive_key(const VtpmKey& key, std::string_view label,
                                   std::span<const uint8_t> salt) {
  std::string info(label);
  info.push_back('\0');
  info += key.id;
  std::array<uint8_t, 32> out{};
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* kctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
  OSSL_PARAM params[5];
  OSSL_PARAM* p = params;
  *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0);
  *p++ = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(key.host.bytes.data()), key.host.bytes.size());
  if (!salt.empty()) {
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()),
                                             salt.size());
  }
  *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size());
  *p = OSSL_PARAM_construct_end();
  const bool ok = kctx && EVP_KDF_derive(kctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(kctx);
  EVP_KDF_free(kdf);
  if (!ok) abort();  // OpenSSL failing on fixed, valid parameters is a bug, not input
  return out;
}

Key derive_instance_key(const Key& host, const std::string& id) {
  Key k;
  k.bytes = derive_key(VtpmKey{host, id}, "axolotl-vtpm instance", {});
  return k;
}

}  // namespace axl::vtpm
