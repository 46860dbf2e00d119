#include "vtpm/ctrl_protocol.h"

#include <cstdio>

namespace axl::vtpm::ctrl {
namespace {

Rejected reject(uint32_t code, uint32_t result, std::string why) {
  return Rejected{code, result, std::move(why)};
}

// Size of the normal response of a known command, so that a rejection can be
// padded to it (a peer such as QEMU reads exactly this many bytes).
size_t response_size(uint32_t code) {
  switch (static_cast<Cmd>(code)) {
    case Cmd::kGetCapability:
      return 8;
    case Cmd::kGetTpmEstablished:
      return 8;
    case Cmd::kGetStateBlob:
      return 16;
    case Cmd::kGetConfig:
      return 8;
    case Cmd::kSetBufferSize:
      return 16;
    default:
      return 4;
  }
}

bool known(uint32_t code) { return code >= 0x01 && code <= 0x12; }

}  // namespace

const char* name(uint32_t code) {
  switch (static_cast<Cmd>(code)) {
    case Cmd::kGetCapability:
      return "GET_CAPABILITY";
    case Cmd::kInit:
      return "INIT";
    case Cmd::kShutdown:
      return "SHUTDOWN";
    case Cmd::kGetTpmEstablished:
      return "GET_TPMESTABLISHED";
    case Cmd::kSetLocality:
      return "SET_LOCALITY";
    case Cmd::kHashStart:
      return "HASH_START";
    case Cmd::kHashData:
      return "HASH_DATA";
    case Cmd::kHashEnd:
      return "HASH_END";
    case Cmd::kCancelTpmCmd:
      return "CANCEL_TPM_CMD";
    case Cmd::kStoreVolatile:
      return "STORE_VOLATILE";
    case Cmd::kResetTpmEstablished:
      return "RESET_TPMESTABLISHED";
    case Cmd::kGetStateBlob:
      return "GET_STATEBLOB";
    case Cmd::kSetStateBlob:
      return "SET_STATEBLOB";
    case Cmd::kStop:
      return "STOP";
    case Cmd::kGetConfig:
      return "GET_CONFIG";
    case Cmd::kSetDataFd:
      return "SET_DATAFD";
    case Cmd::kSetBufferSize:
      return "SET_BUFFERSIZE";
    case Cmd::kGetInfo:
      return "GET_INFO";
  }
  return "unknown";
}

Parsed parse(std::span<const uint8_t> msg) {
  if (msg.size() < 4) {
    return reject(
        0, kBadParameter,
        "control request of " + std::to_string(msg.size()) + " bytes has no command code");
  }
  const uint32_t code = be32(msg.data());
  const auto in = msg.subspan(4);
  const std::string cmd_name = name(code);
  auto exact = [&](size_t n) -> bool { return in.size() == n; };
  auto wrong_size = [&](const char* want) {
    return reject(code, kBadParameter,
                  "CMD_" + cmd_name + " with " + std::to_string(in.size()) + " input bytes (want " +
                      want + ")");
  };
  if (!known(code)) {
    char hex[16];
    snprintf(hex, sizeof hex, "0x%08x", code);
    return reject(code, kBadOrdinal, std::string("unknown control command ") + hex);
  }
  switch (static_cast<Cmd>(code)) {
    case Cmd::kGetCapability:
    case Cmd::kShutdown:
    case Cmd::kGetTpmEstablished:
    case Cmd::kCancelTpmCmd:
    case Cmd::kStoreVolatile:
    case Cmd::kStop:
    case Cmd::kGetConfig:
    case Cmd::kSetDataFd:
      if (!exact(0)) return wrong_size("0");
      return Request{Simple{static_cast<Cmd>(code)}};
    case Cmd::kInit:
      if (!exact(4)) return wrong_size("4");
      return Request{Init{be32(in.data())}};
    case Cmd::kSetLocality:
    case Cmd::kResetTpmEstablished: {
      // One byte; QEMU sends the C struct, padded to 4.
      if (in.empty() || in.size() > 4) return wrong_size("1 to 4");
      const uint8_t loc = in[0];
      if (loc > 4) {
        return reject(
            code, kBadParameter,
            "CMD_" + cmd_name + " locality " + std::to_string(loc) + " out of range 0..4");
      }
      if (code == static_cast<uint32_t>(Cmd::kSetLocality)) return Request{SetLocality{loc}};
      return Request{ResetEstablished{loc}};
    }
    case Cmd::kGetStateBlob: {
      if (!exact(12)) return wrong_size("12");
      GetStateBlob g{be32(in.data()), be32(in.data() + 4), be32(in.data() + 8)};
      if (g.type < kBlobPermanent || g.type > kBlobSaveState) {
        return reject(code, kBadParameter,
                      "CMD_GET_STATEBLOB unknown blob type " + std::to_string(g.type));
      }
      return Request{g};
    }
    case Cmd::kSetStateBlob: {
      if (in.size() < 12) return wrong_size("at least 12");
      const uint32_t flags = be32(in.data()), type = be32(in.data() + 4), len = be32(in.data() + 8);
      if (type < kBlobPermanent || type > kBlobSaveState) {
        return reject(code, kBadParameter,
                      "CMD_SET_STATEBLOB unknown blob type " + std::to_string(type));
      }
      if (len > kMaxBlob) {
        return reject(code, kBadParameter,
                      "CMD_SET_STATEBLOB blob of " + std::to_string(len) + " bytes exceeds " +
                          std::to_string(kMaxBlob));
      }
      if (flags & kBlobFlagEncrypted) {
        return reject(code, kBadParameter, "CMD_SET_STATEBLOB encrypted blobs are not supported");
      }
      const size_t total = 4 + 12 + size_t{len};
      if (msg.size() < total) return NeedMore{total};
      if (msg.size() > total) {
        return reject(code, kBadParameter,
                      "CMD_SET_STATEBLOB has " + std::to_string(msg.size() - total) +
                          " bytes beyond its declared length");
      }
      return Request{SetStateBlob{flags, type, {in.begin() + 12, in.end()}}};
    }
    case Cmd::kSetBufferSize:
      if (!exact(4)) return wrong_size("4");
      return Request{SetBufferSize{be32(in.data())}};
    case Cmd::kHashStart:
    case Cmd::kHashData:
    case Cmd::kHashEnd:
    case Cmd::kGetInfo:
      return reject(code, kBadOrdinal, "CMD_" + cmd_name + " is not supported");
  }
  return reject(code, kBadOrdinal, "unknown control command");
}

Cmd command_of(const Request& r) {
  struct V {
    Cmd operator()(const Simple& s) const { return s.cmd; }
    Cmd operator()(const Init&) const { return Cmd::kInit; }
    Cmd operator()(const SetLocality&) const { return Cmd::kSetLocality; }
    Cmd operator()(const ResetEstablished&) const { return Cmd::kResetTpmEstablished; }
    Cmd operator()(const GetStateBlob&) const { return Cmd::kGetStateBlob; }
    Cmd operator()(const SetStateBlob&) const { return Cmd::kSetStateBlob; }
    Cmd operator()(const SetBufferSize&) const { return Cmd::kSetBufferSize; }
  };
  return std::visit(V{}, r);
}

std::vector<uint8_t> result_only(uint32_t result) {
  std::vector<uint8_t> v;
  put_be32(v, result);
  return v;
}

std::vector<uint8_t> capability(uint64_t caps) {
  std::vector<uint8_t> v;
  put_be64(v, caps);
  return v;
}

std::vector<uint8_t> established(uint32_t result, bool bit) {
  std::vector<uint8_t> v;
  put_be32(v, result);
  v.push_back(bit ? 1 : 0);
  v.resize(8, 0);  // the C struct's padding, which QEMU reads
  return v;
}

std::vector<uint8_t> state_blob(uint32_t result, uint32_t flags, uint32_t total,
                                std::span<const uint8_t> data) {
  std::vector<uint8_t> v;
  put_be32(v, result);
  put_be32(v, flags);
  put_be32(v, total);
  put_be32(v, static_cast<uint32_t>(data.size()));
  v.insert(v.end(), data.begin(), data.end());
  return v;
}

std::vector<uint8_t> buffer_size(uint32_t result, uint32_t size, uint32_t min, uint32_t max) {
  std::vector<uint8_t> v;
  put_be32(v, result);
  put_be32(v, size);
  put_be32(v, min);
  put_be32(v, max);
  return v;
}

std::vector<uint8_t> config(uint32_t result, uint32_t flags) {
  std::vector<uint8_t> v;
  put_be32(v, result);
  put_be32(v, flags);
  return v;
}

std::vector<uint8_t> rejection(const Rejected& r) {
  std::vector<uint8_t> v = result_only(r.result);
  if (known(r.code)) v.resize(response_size(r.code), 0);
  return v;
}

}  // namespace axl::vtpm::ctrl
