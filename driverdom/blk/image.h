// The disk image a blk driver domain serves: raw, or qcow2 (versions 2 and 3,
// its backing chain included), the way crosvm and Cloud Hypervisor carry
// their own qcow2 code rather than QEMU's block layer.  The format is QEMU's
// docs/interop/qcow2.txt.
//
// Everything in an image is untrusted: every offset and size read from it is
// checked against the file and the format's limits before use, and what this
// code does not implement is refused with one line naming it (compressed or
// encrypted clusters, external data files, extended L2 entries, internal
// snapshots when writing, an image marked dirty or corrupt).
//
// Files are given as fds: a confined driver reaches no path.  The chain is
// walked (and checked for loops and missing files) by whoever opens the files.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace axl::driverdom::blk {

class Image {
 public:
  virtual ~Image() = default;
  virtual uint64_t size() const = 0;  // the virtual disk's size in bytes
  // Whole transfers within size(); an Error names what failed.
  virtual Status read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Status write(uint64_t offset, std::span<const uint8_t> in) = 0;
  virtual Status flush() = 0;
  // A raw image's file, which an I/O engine may read and write directly at
  // the same offsets (within size()); -1 for a format with metadata.
  virtual int raw_fd() const { return -1; }
};

// What the first bytes of an image file say.
struct ImageInfo {
  std::string format;        // "raw" or "qcow2"
  uint64_t size = 0;         // virtual size (raw: the file's)
  std::string backing_file;  // qcow2: as written in the image ("" for none)
  std::string backing_format;
};
Result<ImageInfo> probe(int fd);

std::unique_ptr<Image> open_raw(UniqueFd fd, bool read_only);
// `backing`: the image this one's unallocated clusters read from (null for
// none), only ever read.  The header, every table's place, every L2 entry
// and every feature bit are checked here, before anything is served.
Result<std::unique_ptr<Image>> open_qcow2(UniqueFd fd, std::unique_ptr<Image> backing,
                                          bool read_only);

// Host side (the hypervisor at create): opens `path` and the chain of
// backing files it names (relative names from the naming image's directory;
// the format from the image's backing format, else probed), at most 16
// deep.  A loop, a missing file or a bad image anywhere in the chain is an
// Error naming the file.  Only the top image is opened for writing.
Result<std::unique_ptr<Image>> open_chain(const std::string& path, bool read_only);

// The same walk for a driver domain that reaches no path: the chain checked
// as open_chain does, and each file's fd (the top one first, then its
// backing chain) with its format, to be handed over and reopened with
// open_fds().  `format` is the top image's, as its config states it (never
// probed: a guest could write a qcow2 header into a raw disk).
struct ChainFds {
  std::vector<UniqueFd> fds;
  std::vector<std::string> formats;
  uint64_t size = 0;  // the top image's virtual size
};
Result<ChainFds> open_chain_fds(const std::string& path, const std::string& format, bool read_only);

// cache = "none" (docs/architecture.md, "Disk cache modes"): sets O_DIRECT on
// a raw image's open file description, which travels to the driver domain, so
// its reads and writes bypass the host's page cache.  Returns the alignment
// the file system asks of offsets and lengths (statx STATX_DIOALIGN, at least
// 512): the guest is told it as its logical block size.  An Error, naming the
// reason, where the file system has no direct I/O or asks for an alignment
// above 4096 or a buffer alignment above a page (the I/O pool's slots are
// page-aligned).
Result<uint32_t> use_direct_io(int fd);
// Builds the image from fds and formats as open_chain_fds gives them (the
// top one writable unless `read_only`, the rest read-only).
Result<std::unique_ptr<Image>> open_fds(std::vector<UniqueFd> fds,
                                        const std::vector<std::string>& formats, bool read_only);

}  // namespace axl::driverdom::blk
