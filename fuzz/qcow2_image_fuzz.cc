// A qcow2 image file is untrusted input to the blk driver domain
// (driverdom/blk/image.h).  Input:
//   byte 0      flags: bit 0 open for writing
//   bytes 1..8  an offset (u64, little endian) for one write and read-back
//   bytes 9..10 its length (u16)
//   the rest    the image file
// Oracle: nothing crashes or reads outside the file; an open that fails says
// why in one line; on an image that opened, a read of the whole disk (capped)
// either works or fails in one line; a write that worked reads back as written.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "driverdom/blk/image.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace axl;

using fuzz::check_error;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool init = (fuzz::quiet_logs(), true);
  (void)init;
  fuzz::Input in(data, size);
  const bool writable = in.byte() & 1;
  const uint64_t woff = in.take<uint64_t>();
  const uint16_t wlen = in.take<uint16_t>();
  auto file = in.rest();
  UniqueFd fd(::memfd_create("image", MFD_CLOEXEC));
  AXL_FUZZ_CHECK(fd.get() >= 0);
  if (!file.empty() && ::write(fd.get(), file.data(), file.size()) != ssize_t(file.size()))
    return 0;
  auto img = driverdom::blk::open_qcow2(std::move(fd), nullptr, !writable);
  if (!img) {
    check_error(img.error());
    return 0;
  }
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>((*img)->size(), 1 << 20)));
  if (auto s = (*img)->read(0, buf); !s) check_error(s.error());
  if (!writable || wlen == 0 || (*img)->size() < wlen) return 0;
  const uint64_t off = woff % ((*img)->size() - wlen + 1);
  std::vector<uint8_t> w(wlen);
  for (size_t i = 0; i < w.size(); ++i) w[i] = uint8_t(i * 7 + 1);
  if (auto s = (*img)->write(off, w); !s) {
    check_error(s.error());
    return 0;
  }
  std::vector<uint8_t> back(wlen);
  auto s = (*img)->read(off, back);
  AXL_FUZZ_CHECK(s.ok());
  AXL_FUZZ_CHECK(back == w);
  return 0;
}
