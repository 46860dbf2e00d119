// Small records a daemon persists in its state dir so that a successor can
// adopt what it left running (docs/architecture.md, "No single point of
// failure"): one KEY=VALUE per line, written to a temporary file and renamed
// (a reader sees the old record or the new one, never half), mode 0600.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "common/result.h"

namespace axl {

using KvRecord = std::map<std::string, std::string>;

// Keys are [a-z0-9_.]+, values one line each (no '\n').
Status write_kv_record(const std::string& path, const KvRecord& r);
// At most 1 MiB; not following a symlink; a line without '=' or a key out of
// the alphabet is an Error naming the file and line.
Result<KvRecord> read_kv_record(const std::string& path);
// r[key] as a decimal number <= max; an Error names the record's key.
Result<uint64_t> kv_number(const KvRecord& r, const std::string& key, uint64_t max);

std::string hex_encode(const void* data, size_t size);
// An Error for odd length or a non-hex digit.
Result<std::string> hex_decode(const std::string& hex);

}  // namespace axl
