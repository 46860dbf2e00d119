#include "hypervisor/io/virtio/inflight.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "hypervisor/io/virtio/virtio.h"

namespace axl::virtio {

size_t inflight_queue_bytes(uint16_t queue_size) {
  size_t raw = sizeof(InflightQueue) + sizeof(InflightDesc) * size_t(queue_size);
  return (raw + 63) & ~size_t(63);
}

namespace {

// The geometry comes from the front-end (GET_INFLIGHT_FD / SET_INFLIGHT_FD
// carry num_queues and queue_size).
Status check_geometry(uint16_t queues, uint16_t queue_size) {
  if (queues == 0 || queues > kInflightMaxQueues)
    return make_error("inflight region: " + std::to_string(queues) + " queues (1.." +
                      std::to_string(kInflightMaxQueues) + " allowed)");
  // virtio 1.2 §2.7: a split queue's size is a power of two, at most 32768.
  if (queue_size == 0 || queue_size > kMaxQueueSize || (queue_size & (queue_size - 1)) != 0)
    return make_error("inflight region: queue size " + std::to_string(queue_size) +
                      " is not a power of two up to " + std::to_string(kMaxQueueSize));
  return {};
}

}  // namespace

Result<InflightMemory> InflightMemory::create(uint16_t queues, uint16_t queue_size) {
  if (Status s = check_geometry(queues, queue_size); !s) return s.error();
  uint64_t size = uint64_t(queues) * inflight_queue_bytes(queue_size);
  UniqueFd fd(::memfd_create("axl-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return make_error(std::string("inflight memfd_create: ") + strerror(errno));
  // A fresh file reads as zeroes: every queue starts at version 0 (fresh).
  if (::ftruncate(fd.get(), off_t(size)) < 0)
    return make_error(std::string("inflight ftruncate: ") + strerror(errno));
  // The front-end gets this fd; it must not be able to shrink the file under
  // the hypervisor's mapping (a SIGBUS in the trusted core) or grow it.
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    return make_error(std::string("inflight memfd seal: ") + strerror(errno));
  return map(std::move(fd), size, 0, queues, queue_size);
}

Result<InflightMemory> InflightMemory::map(UniqueFd fd, uint64_t mmap_size, uint64_t mmap_offset,
                                           uint16_t queues, uint16_t queue_size) {
  if (!fd) return make_error("inflight region: no fd");
  if (Status s = check_geometry(queues, queue_size); !s) return s.error();
  uint64_t want = uint64_t(queues) * inflight_queue_bytes(queue_size);
  if (mmap_size != want)
    return make_error("inflight region: mmap_size " + std::to_string(mmap_size) + " but " +
                      std::to_string(queues) + " queues of " + std::to_string(queue_size) +
                      " need " + std::to_string(want));
  uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  if (mmap_offset % page != 0)
    return make_error("inflight region: mmap_offset " + std::to_string(mmap_offset) +
                      " is not page aligned");
  struct stat st;
  if (::fstat(fd.get(), &st) < 0)
    return make_error(std::string("inflight region fstat: ") + strerror(errno));
  // Mapping past EOF would turn an access into SIGBUS in the trusted core.
  uint64_t file_size = st.st_size < 0 ? 0 : uint64_t(st.st_size);
  if (mmap_offset > file_size || mmap_size > file_size - mmap_offset)
    return make_error("inflight region: file of " + std::to_string(file_size) +
                      " bytes is smaller than offset " + std::to_string(mmap_offset) + " + size " +
                      std::to_string(mmap_size));
  void* p =
      ::mmap(nullptr, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), off_t(mmap_offset));
  if (p == MAP_FAILED) return make_error(std::string("inflight region mmap: ") + strerror(errno));
  InflightMemory m;
  m.fd_ = std::move(fd);
  m.base_ = static_cast<uint8_t*>(p);
  m.size_ = mmap_size;
  m.offset_ = mmap_offset;
  m.queues_ = queues;
  m.queue_size_ = queue_size;
  return m;
}

InflightMemory::InflightMemory(InflightMemory&& o) noexcept
    : fd_(std::move(o.fd_)),
      base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      offset_(std::exchange(o.offset_, 0)),
      queues_(std::exchange(o.queues_, 0)),
      queue_size_(std::exchange(o.queue_size_, 0)) {}

InflightMemory& InflightMemory::operator=(InflightMemory&& o) noexcept {
  if (this != &o) {
    unmap();
    fd_ = std::move(o.fd_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    offset_ = std::exchange(o.offset_, 0);
    queues_ = std::exchange(o.queues_, 0);
    queue_size_ = std::exchange(o.queue_size_, 0);
  }
  return *this;
}

InflightMemory::~InflightMemory() { unmap(); }

void InflightMemory::unmap() {
  if (base_) ::munmap(base_, size_);
  base_ = nullptr;
}

InflightQueue* InflightMemory::queue(uint16_t i) {
  if (!base_ || i >= queues_) return nullptr;
  return reinterpret_cast<InflightQueue*>(base_ + size_t(i) * inflight_queue_bytes(queue_size_));
}

void InflightMemory::reset_queue(uint16_t i) {
  if (InflightQueue* q = queue(i)) memset(q, 0, inflight_queue_bytes(queue_size_));
}

}  // namespace axl::virtio
