// io_backend.h - the consumer's write path: io_uring (liburing) or pwritev.
//
// Internal to rbtrace::consumer. One backend belongs to one thread (the
// consumer's drain thread); nothing here is thread-safe and nothing here
// takes a lock.
//
// Model: the caller queues page writes (prep_write), submits them in one
// batch (submit), and later harvests completions (reap). A write's buffer
// belongs to the backend from prep_write until its completion is reaped.
//   io_uring: one SQE per page; IORING_OP_WRITE_FIXED when the buffer lies
//     in a registered buffer, else IORING_OP_WRITE; one io_uring_submit per
//     batch. Vectored mode: consecutive pages of one file in a batch as one
//     IORING_OP_WRITEV (up to 64 pages).
//   pwritev:  the batch is written at submit time; writes to the same file
//     at consecutive offsets go out as one pwritev (up to IOV_MAX pages);
//     their completions are ready at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rbtrace::detail {

enum class IoKind : uint8_t { kIoUring, kPwritev };

struct IoCompletion {
  uint64_t tag;
  int64_t res;  // bytes written, or -errno
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;
  virtual IoKind kind() const = 0;
  const char* name() const { return kind() == IoKind::kIoUring ? "io_uring" : "pwritev"; }

  // Registers `bufs` (each `len` bytes) as fixed buffers. Returns the number
  // registered (0 when the backend has no such notion or registration was
  // refused; *why says why). Call once, before any write.
  virtual uint32_t register_buffers(const std::vector<void*>& bufs, uint32_t len,
                                    std::string* why) = 0;
  // Stops using the registered buffers (every later write is non-fixed);
  // writes already queued keep their mode.
  virtual void disable_fixed() {}
  // Queues a write of `len` bytes at `buf` to `fd` at `off`.
  virtual void prep_write(int fd, const void* buf, uint32_t len, uint64_t off, uint64_t tag) = 0;
  // Submits everything queued. 0 or -errno (the queued writes then complete
  // with that error).
  virtual int submit() = 0;
  // Appends completions to *out. With wait_ns > 0 and nothing ready, waits
  // up to wait_ns for one. Returns the number appended.
  virtual size_t reap(std::vector<IoCompletion>* out, int64_t wait_ns) = 0;
  // Writes queued or submitted and not yet reaped.
  virtual uint32_t in_flight() const = 0;
  // Writes that went out as fixed-buffer writes (io_uring only).
  virtual uint64_t fixed_writes() const { return 0; }
};

// Creates the backend. `want`: kIoUring tries io_uring and, when it cannot
// be set up (ENOSYS, EPERM, kernel.io_uring_disabled, ...), falls back to
// pwritev with the reason in *why; kPwritev gives pwritev. `depth` bounds
// the writes in flight. `vectored` (io_uring): consecutive pages of one
// file in a batch go out as one IORING_OP_WRITEV instead of one
// WRITE_FIXED each (fewer requests for io-wq to run; no fixed buffers).
std::unique_ptr<IoBackend> make_io_backend(IoKind want, uint32_t depth, bool vectored,
                                           std::string* why);

}  // namespace rbtrace::detail
