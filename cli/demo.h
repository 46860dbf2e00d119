#pragma once
#include <cstdint>

namespace axl::cli {

struct DemoOptions {
  uint32_t stream_mib = 64;
};

// `axl demo`: on embedded defaults, in a network namespace of its own, brings
// a host up (a blk and a net driver domain), boots a guest whose disk and NIC
// they serve, checks the disk's bytes and a TCP stream end to end, and tears
// everything down again.
int run_demo(const DemoOptions& o);

}  // namespace axl::cli
