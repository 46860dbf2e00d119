// The TAP backend of the net driver: the host side of the switch.
//
// The supervisor opens the TAP with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and a
// 12-byte vnet header (TUNSETVNETHDRSZ), so every frame read or written
// carries the same virtio_net_hdr_v1 the channel frames carry and passes
// through unchanged.
#pragma once
#include <cstdint>
#include <optional>
#include <span>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::driverdom::net {

// virtio 1.2 §5.1.6: virtio_net_hdr_v1 (with num_buffers) is 12 bytes.
constexpr size_t kVnetHdrBytes = 12;

class Tap {
 public:
  enum class WriteResult { kSent, kBusy, kFailed };

  explicit Tap(UniqueFd fd) : fd_(std::move(fd)) {}

  // Checks the fd really is a TAP with the expected vnet header and makes it
  // nonblocking (the loop reads until EAGAIN).
  Status prepare();

  int fd() const { return fd_.get(); }
  // One frame (header included) into `buf`; nullopt when none is queued.
  Result<std::optional<size_t>> read_frame(std::span<uint8_t> buf);
  WriteResult write_frame(std::span<const uint8_t> frame);

 private:
  UniqueFd fd_;
};

}  // namespace axl::driverdom::net
