// The keys a vTPM's state is sealed under (vtpm/state_store.h,
// vtpm/checkpoint.h), and their derivation.  Only OpenSSL: the supervisor
// links this to derive each vTPM's own key from the host key, so that a vTPM
// never holds the host key (docs/architecture.md, "Least privilege").
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace axl::vtpm {

struct Key {
  std::array<uint8_t, 32> bytes{};
};

// What one vTPM's state is sealed under: the key it was given and its id
// (its domain's name).  No state is ever sealed under that key itself;
// every AEAD key is derive_key()'d from both.  Under the supervisor `host`
// is the vTPM's instance key (derive_instance_key), not the host key.
struct VtpmKey {
  Key host;
  std::string id;
};

// HKDF-SHA256(IKM = host key, salt, info = label || 0x00 || id): a key for
// one purpose (`label`) of one vTPM.  The label is fixed and NUL-free, so
// no two (label, id) pairs share an info.  An empty salt is HKDF's default.
std::array<uint8_t, 32> derive_key(const VtpmKey& key, std::string_view label,
                                   std::span<const uint8_t> salt);

// The key one vTPM is given (--key-fd): HKDF of the host key with the
// vTPM's id, label "axolotl-vtpm instance".  Its state is then sealed under
// keys derived from this one and its id again (VtpmKey{instance, id}).
Key derive_instance_key(const Key& host, const std::string& id);

}  // namespace axl::vtpm
