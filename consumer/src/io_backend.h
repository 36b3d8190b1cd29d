// io_backend.h - the consumer's write path: io_uring (liburing) or pwritev.
//
// Internal to rbtrace::consumer. One backend belongs to one thread (the
// consumer's drain thread); nothing here is thread-safe and nothing here
// takes a lock.
//
// Model: the caller queues page writes (prep_write), submits them in one
// batch (submit), and later harvests completions (reap). A write's buffer
// belongs to the backend from prep_write until its completion is reaped.
// Completions are per page (tag), also for pages written by one request.
//   io_uring: pages of one file at consecutive offsets, queued one after
//     the other, make a run; a page that does not extend the run ends it.
//     A run is one IORING_OP_WRITEV (up to max_run pages); a lone page is
//     one IORING_OP_WRITE_FIXED when it lies in a registered buffer, else
//     IORING_OP_WRITE. Everything goes to the kernel in one io_uring_submit
//     at submit(). With `async` (the default) every request carries
//     IOSQE_ASYNC: it goes straight to an io-wq worker and the submitting
//     thread goes on; without it the kernel first tries each request inline
//     (IOCB_NOWAIT) in io_uring_submit. io-wq runs the buffered writes of
//     one inode one at a time (the inode lock serialises them anyway) and
//     those of different files in parallel; O_DIRECT writes on a file
//     system with parallel direct writes (ext4, XFS) are not serialised.
//     A WRITEV that writes less than asked reports, per page in order: the
//     page's length for pages fully written, the bytes written for the
//     page cut short, 0 for the pages after it; an error (res < 0) goes to
//     every page of the request.
//   pwritev:  the batch is written at submit time; writes to the same file
//     at consecutive offsets go out as one pwritev (up to IOV_MAX pages,
//     short writes resumed); their completions are ready at once.
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
  // Submits everything queued. 0, or -errno from io_uring_submit: the
  // writes stay queued and the next submit() (or a reap that needs an SQE)
  // tries again; a write that can get no SQE at all completes with the
  // error. pwritev: always 0 (each write's result is its completion).
  virtual int submit() = 0;
  // Appends completions to *out. With wait_ns > 0 and nothing ready, waits
  // up to wait_ns for one. Returns the number appended.
  virtual size_t reap(std::vector<IoCompletion>* out, int64_t wait_ns) = 0;
  // Writes queued or submitted and not yet reaped.
  virtual uint32_t in_flight() const = 0;
  // Writes that went out as fixed-buffer writes (io_uring only).
  virtual uint64_t fixed_writes() const { return 0; }
  // Requests issued: io_uring SQEs, pwritev calls (a group of pages is one).
  virtual uint64_t requests() const { return 0; }
};

// How the io_uring backend runs (pwritev has no settings). The defaults
// are the measured best on tmpfs, ext4 and ext4 with O_DIRECT (bench/README.md,
// "Consumer drain"); no per-file-system setting was needed.
struct IoBackendOptions {
  uint32_t depth = 64;  // writes (pages) in flight at most: sizes the SQ
  bool async = true;    // IOSQE_ASYNC on every request
  uint32_t max_run = 0;  // pages per WRITEV at most (0: IOV_MAX)
};

// Creates the backend. `want`: kIoUring tries io_uring and, when it cannot
// be set up (ENOSYS, EPERM, kernel.io_uring_disabled, ...), falls back to
// pwritev with the reason in *why; kPwritev gives pwritev.
std::unique_ptr<IoBackend> make_io_backend(IoKind want, const IoBackendOptions& opts,
                                           std::string* why);

}  // namespace rbtrace::detail
