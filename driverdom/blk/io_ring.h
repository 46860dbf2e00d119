// The blk driver domain's I/O engine (docs/architecture.md, "The blk I/O
// engine"): one io_uring per driver process, shared by its devices, so many
// requests are in flight at once without a thread in the driver.
//
// io_uring performs its operations in the kernel, where the seccomp filter
// never sees them, so the ring is made unable to widen the sandbox:
// - It is created disabled, before the sandbox is entered (io_uring_setup
//   is not in the seccomp allow-list: no other ring can ever be made).
// - Its restrictions (IORING_REGISTER_RESTRICTIONS) admit three operations,
//   READ, WRITE and FSYNC, each only on a registered ("fixed") file, and one
//   registration, FILES_UPDATE, by which the driver installs the image fds
//   it is handed.  Every other operation completes with -EACCES; every other
//   io_uring_register call fails with EACCES.
// - A registered file is one the driver already holds and could pread or
//   pwrite anyway, so the ring reaches nothing seccomp does not allow.
// The kernel runs blocking work (a buffered write, a read that misses the
// page cache) on its own io-wq threads; their number is capped (kWorkers
// bound, kWorkers unbound) and counted in the driver's RLIMIT_NPROC.
#pragma once
#include <liburing.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::driverdom::blk {

class IoRing {
 public:
  static constexpr unsigned kEntries = 256;  // submission queue; completions: twice that
  static constexpr unsigned kFiles = 256;    // fixed file table: every device's image
  static constexpr unsigned kWorkers = 4;    // io-wq threads per kind (bound, unbound)
  // Processes the driver may be: itself and the io-wq threads.
  static constexpr unsigned kProcesses = 1 + 2 * kWorkers;

  // A restricted, enabled ring, or an Error naming the step that failed
  // (a kernel without io_uring, or one where it is disabled by sysctl).
  static Result<std::unique_ptr<IoRing>> create();
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // Readable (for epoll) when completions are waiting.
  int fd() const { return ring_.ring_fd; }

  // Installs `fd` in a free fixed-file slot and returns the slot's index.
  Result<unsigned> add_file(int fd);
  void remove_file(unsigned index);

  // Queue one operation on a fixed file; `tag` comes back with its
  // completion.  The buffer must stay valid until then.  Submitted at the
  // next submit() (or earlier, when the queue fills).
  void read(unsigned file, uint64_t offset, void* buf, uint32_t len, uint64_t tag);
  void write(unsigned file, uint64_t offset, const void* buf, uint32_t len, uint64_t tag);
  // fdatasync, started only once every operation queued before it has
  // completed (IOSQE_IO_DRAIN): a flush covers every write before it.
  void fsync(unsigned file, uint64_t tag);
  void submit();
  // Completions wait (no system call).
  bool ready() const { return io_uring_cq_ready(&ring_) > 0; }

  struct Completion {
    uint64_t tag;
    int32_t res;  // bytes, or -errno
  };
  // Completions waiting now; with `wait`, blocks until there is at least one.
  std::vector<Completion> reap(bool wait = false);

  // The restrictions' test hook (the uring-escape fault): queues an
  // operation outside the allow-list (openat of `path`) and a read on
  // `unregistered_fd`, which the kernel must both complete with -EACCES,
  // and tries a registration outside the allow-list right away.  The two
  // completions come back from reap() with tags at or above kEscapeTag
  // (describe them with escape_result); the registration's line is returned.
  static constexpr uint64_t kEscapeTag = ~uint64_t(0) << 32;
  std::string try_forbidden(const std::string& path, int unregistered_fd);
  // "escape uring-escape: WHAT denied: ERRNO (...)" or "... SUCCEEDED ...".
  static std::string escape_result(const Completion& c);

 private:
  IoRing() = default;
  io_uring_sqe* next_sqe();
  struct io_uring ring_ {};
  bool inited_ = false;
  std::vector<bool> used_;
  std::string escape_path_;
  uint8_t escape_buf_[64] = {};
};

}  // namespace axl::driverdom::blk
