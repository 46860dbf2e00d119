#include "driverdom/blk/io_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/uio.h>

namespace axl::driverdom::blk {

namespace {

std::string step_error(const char* step, int err) {
  return std::string("io_uring ") + step + ": " + strerror(err);
}

std::string errno_line(const char* what, int res) {
  std::string s = std::string("escape uring-escape: ") + what;
  if (res < 0) {
    const char* name = strerrorname_np(-res);
    return s + " denied: " + (name ? name : std::to_string(-res)) + " (" + strerror(-res) + ")";
  }
  return s + " SUCCEEDED: the ring let it through (result " + std::to_string(res) + ")";
}

}  // namespace

Result<std::unique_ptr<IoRing>> IoRing::create() {
  std::unique_ptr<IoRing> r(new IoRing());
  io_uring_params p{};
  // SUBMIT_ALL: an entry refused at submission (-EACCES from the
  // restrictions) must not hold back the ones queued after it.
  p.flags = IORING_SETUP_R_DISABLED | IORING_SETUP_SUBMIT_ALL;
  if (int e = io_uring_queue_init_params(kEntries, &r->ring_, &p); e < 0)
    return make_error(step_error("setup", -e));
  r->inited_ = true;
  unsigned workers[2] = {kWorkers, kWorkers};
  if (int e = io_uring_register_iowq_max_workers(&r->ring_, workers); e < 0)
    return make_error(step_error("worker cap", -e));
  if (int e = io_uring_register_files_sparse(&r->ring_, kFiles); e < 0)
    return make_error(step_error("file table", -e));
  io_uring_restriction res[5]{};
  res[0].opcode = IORING_RESTRICTION_SQE_OP;
  res[0].sqe_op = IORING_OP_READ;
  res[1].opcode = IORING_RESTRICTION_SQE_OP;
  res[1].sqe_op = IORING_OP_WRITE;
  res[2].opcode = IORING_RESTRICTION_SQE_OP;
  res[2].sqe_op = IORING_OP_FSYNC;
  // Every operation on a registered file; IO_DRAIN is the only other flag.
  res[3].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
  res[3].sqe_flags = IOSQE_FIXED_FILE;
  res[4].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
  res[4].sqe_flags = IOSQE_IO_DRAIN;
  io_uring_restriction reg{};
  reg.opcode = IORING_RESTRICTION_REGISTER_OP;
  reg.register_op = IORING_REGISTER_FILES_UPDATE;
  io_uring_restriction all[6] = {res[0], res[1], res[2], res[3], res[4], reg};
  if (int e = io_uring_register_restrictions(&r->ring_, all, 6); e < 0)
    return make_error(step_error("restrictions", -e));
  if (int e = io_uring_enable_rings(&r->ring_); e < 0) return make_error(step_error("enable", -e));
  r->used_.assign(kFiles, false);
  return r;
}

IoRing::~IoRing() {
  if (inited_) io_uring_queue_exit(&ring_);
}

Result<unsigned> IoRing::add_file(int fd) {
  for (unsigned i = 0; i < kFiles; ++i) {
    if (used_[i]) continue;
    if (int e = io_uring_register_files_update(&ring_, i, &fd, 1); e < 0)
      return make_error(step_error("file registration", -e));
    used_[i] = true;
    return i;
  }
  return make_error("io_uring: every fixed file slot is in use");
}

void IoRing::remove_file(unsigned index) {
  if (index >= kFiles || !used_[index]) return;
  int none = -1;
  io_uring_register_files_update(&ring_, index, &none, 1);
  used_[index] = false;
}

io_uring_sqe* IoRing::next_sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {  // the queue is full: hand it to the kernel and take a fresh one
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void IoRing::read(unsigned file, uint64_t offset, void* buf, uint32_t len, uint64_t tag) {
  io_uring_sqe* s = next_sqe();
  io_uring_prep_read(s, int(file), buf, len, offset);
  s->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(s, tag);
}

void IoRing::write(unsigned file, uint64_t offset, const void* buf, uint32_t len, uint64_t tag) {
  io_uring_sqe* s = next_sqe();
  io_uring_prep_write(s, int(file), buf, len, offset);
  s->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(s, tag);
}

void IoRing::fsync(unsigned file, uint64_t tag) {
  io_uring_sqe* s = next_sqe();
  io_uring_prep_fsync(s, int(file), IORING_FSYNC_DATASYNC);
  s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_DRAIN;
  io_uring_sqe_set_data64(s, tag);
}

void IoRing::submit() {
  if (io_uring_sq_ready(&ring_)) io_uring_submit(&ring_);
}

std::vector<IoRing::Completion> IoRing::reap(bool wait) {
  std::vector<Completion> out;
  io_uring_cqe* c = nullptr;
  if (wait) {
    int e;
    do e = io_uring_wait_cqe(&ring_, &c);
    while (e == -EINTR);
  }
  unsigned head, n = 0;
  io_uring_for_each_cqe(&ring_, head, c) {
    out.push_back({io_uring_cqe_get_data64(c), c->res});
    ++n;
  }
  io_uring_cq_advance(&ring_, n);
  return out;
}

std::string IoRing::try_forbidden(const std::string& path, int unregistered_fd) {
  escape_path_ = path;
  io_uring_sqe* s = next_sqe();
  io_uring_prep_openat(s, AT_FDCWD, escape_path_.c_str(), O_RDWR, 0);
  s->flags |= IOSQE_FIXED_FILE;  // even with the required flag, openat is not allowed
  io_uring_sqe_set_data64(s, kEscapeTag);
  s = next_sqe();
  io_uring_prep_read(s, unregistered_fd, escape_buf_, sizeof escape_buf_, 0);
  io_uring_sqe_set_data64(s, kEscapeTag + 1);
  io_uring_submit(&ring_);
  // Registering buffers: a registration the restrictions leave out.
  iovec iov{escape_buf_, sizeof escape_buf_};
  int e = io_uring_register_buffers(&ring_, &iov, 1);
  if (e == 0) io_uring_unregister_buffers(&ring_);
  return errno_line("io_uring_register(REGISTER_BUFFERS)", e);
}

std::string IoRing::escape_result(const Completion& c) {
  return errno_line(c.tag == kEscapeTag ? "io_uring openat of a host file"
                                        : "io_uring read of an unregistered fd",
                    c.res);
}

}  // namespace axl::driverdom::blk
