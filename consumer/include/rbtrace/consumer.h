// rbtrace/consumer.h - the consumer thread: drains a RingBuffer's pages to
// disk and publishes them as trace-cmd trace.dat files (rbtrace::consumer).
//
// One drain thread takes full pages from every CPU with the zero-copy
// read_page, trading pages from its own pool (allocated once); writes them
// with io_uring (batched submissions, a bounded number in flight,
// IORING_OP_WRITE_FIXED for registered pages) or pwritev into one spool file
// per CPU at page-aligned offsets; a page returns to the pool only when its
// write has completed. No lock is held across I/O. A second thread turns
// finished segments into trace.dat files and publishes them atomically.
// See docs/DESIGN.md, "Consumer".
//
// Writers are never blocked. Whether one makes a system call for the
// consumer depends on how the consumer wakes up (watermark_pages): by timer
// (period_us, the default), never; with watermark_pages = N > 0, the writer
// that fills the N-th page on one CPU while the consumer sleeps makes one
// futex(FUTEX_WAKE).
//
// Who may call: create/flush/stop/stats/published from any thread except
// the drain thread and signal handlers. One Consumer per RingBuffer (a
// second create fails with EBUSY until the first stopped); it
// must be stopped (or destroyed) before the RingBuffer is destroyed, and no
// other reader may use read_page on the same RingBuffer meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/ring_buffer.h"

namespace rbtrace {

enum class IoBackendKind : uint8_t {
  kAuto,     // $RBTRACE_IO_BACKEND ("io_uring" or "pwritev"), else io_uring,
             // else (ENOSYS, EPERM, kernel.io_uring_disabled) pwritev
  kIoUring,  // io_uring, falling back to pwritev when it cannot be set up
  kPwritev,
};

enum class PublishKind : uint8_t {
  kAuto,     // $RBTRACE_PUBLISH ("tmpfile" or "private"), else O_TMPFILE
             // when the file system has it, else a private name
  kTmpFile,  // O_TMPFILE + linkat only
  kPrivate,  // DIR/tmp/<private name> + link(2) + unlink
};

struct ConsumerOptions {
  std::string dir;                 // output directory (created if missing,
                                   // 0700, or 0750/0755 when file_mode
                                   // lets the group/others read)
  // The published traces' mode (the umask applies too). 0600 by default: a
  // trace holds what the application did, the owner's to read. 0640 or 0644
  // to share them.
  unsigned file_mode = 0600;
  std::string prefix = "trace";    // public names: <prefix>-<session>-<seg>.dat
  IoBackendKind backend = IoBackendKind::kAuto;
  // io_uring only: register no fixed buffers. Whatever this says, the
  // pages a pass takes from one CPU, consecutive in the spool, go out as
  // one IORING_OP_WRITEV, and a lone page as one IORING_OP_WRITE_FIXED when
  // its buffer is registered. See docs/DESIGN.md, "Drain thread".
  bool io_uring_vectored = false;
  // Write the spool with O_DIRECT (no page cache: the pages go from the
  // pool to the device). Where the file system refuses O_DIRECT (tmpfs) or
  // needs an alignment the pages do not have, the spool is written through
  // the page cache and stats().backend_note says why.
  bool direct_io = false;
  PublishKind publish = PublishKind::kAuto;
  uint32_t period_us = 10000;      // timer wake-up period
  // How the drain thread wakes up when it found nothing to take:
  //  0 (the default): by timer only (period_us). Writers make no system
  //    call for the consumer.
  //  N > 0: by timer, and by the writers: the writer that fills the N-th
  //    page on one CPU since the drain thread fell asleep (that moves the
  //    CPU's tail into a new page for the N-th time; it may be a signal
  //    handler) makes one futex(FUTEX_WAKE) system call, at most one per
  //    sleep. That is the only system call on the writer path after a
  //    thread's first event (which makes one gettid to claim a CPU slot).
  //    Other page crossings make none (a load of a `sleeping` flag, and an
  //    atomic add while the drain thread sleeps).
  // tests/stress/no_syscall_test.cc (ConsumerWake) checks both under seccomp.
  uint32_t watermark_pages = 0;
  uint32_t pool_pages = 0;         // trade pool (0: 8 MiB worth, 16..4096);
                                   // also the bound on writes in flight
  uint32_t batch_pages = 64;       // pages taken from one CPU per pass
  uint64_t segment_bytes = 64ULL << 20;  // rotate by size (0: never)
  uint32_t segment_seconds = 0;    // rotate by time (0: never)
  bool fsync = true;               // fsync a trace before naming it
  uint32_t slow_us_per_page = 0;   // testing: sleep this long per page read
  // How long stop() waits for the last flush and the threads' end without
  // progress (no page taken, written or failed, no segment published): a
  // slow disk that keeps writing is waited for. A file system that stops
  // answering (a hung NFS server, a stalled device) blocks the consumer's
  // threads in the kernel, where nothing can cut them short. After this
  // long without progress stop() gives up on them: it returns -ETIMEDOUT,
  // the ring is no longer touched (it may be destroyed), the threads end
  // when their system calls return, and the session stays in the spool,
  // whole, for `rbtrace recover` (its lock is released when both threads
  // have ended, or at exit). 0: wait as long as it takes.
  uint32_t stop_timeout_ms = 60000;
  // Called (from a consumer thread) with a clear sentence when something
  // goes wrong: once per episode of write failures (disk full), once per
  // failed publication, and once for the io_uring fallback. Default: stderr.
  std::function<void(const std::string&)> on_message;
};

// Totals since create. Per-CPU vectors are indexed by CPU.
struct ConsumerStats {
  const char* backend = "";           // "io_uring" or "pwritev"
  std::string backend_note;           // why io_uring was not used, if so
  uint32_t registered_buffers = 0;    // io_uring fixed buffers
  uint64_t fixed_writes = 0;          // writes that used a fixed buffer
  uint64_t pages_read = 0;            // pages taken from the ring
  uint64_t pages_written = 0;         // page writes that completed in full
  uint64_t bytes_written = 0;
  uint64_t pages_failed = 0;          // page writes that failed (disk full..)
  uint64_t pages_published = 0;       // pages now in published files
  uint64_t segments_published = 0;
  uint64_t segments_failed = 0;       // segments that could not be published
  uint64_t segments_in_place = 0;     // ... published without copying a page:
                                      // the spool file compacted in place
                                      // (docs/DESIGN.md, "Every byte written
                                      // once"); the others were copied
  uint64_t write_errors = 0;          // failed write completions
  int last_error = 0;                 // errno of the last failure
  uint64_t drain_cpu_ns = 0;          // CPU time of the drain thread
  uint64_t publish_cpu_ns = 0;        // CPU time of the publish thread
                                      // (getrusage RUSAGE_THREAD, refreshed
                                      // after every pass / segment)
  // Per CPU, as many as the drain thread has seen: they grow with the
  // ring's slots made on demand (ring_buffer.h, ncpus()); a CPU beyond
  // them has had nothing read yet.
  std::vector<uint64_t> events_read;       // events in pages taken
  std::vector<uint64_t> events_published;  // events in published files
  std::vector<uint64_t> events_lost;       // read, then lost by the consumer
                                           // (write failed, segment failed)
  std::vector<uint64_t> pages_lost;
};

// For tests: called by the drain thread before each page write (a stand-in
// for a write that hangs). Null (the default): nothing.
void set_consumer_write_hook(void (*hook)());
// For tests: called by the drain thread each time it would wait for write
// completions, with whether it is inside a flush (flush() or stop()'s last
// one); true makes that wait end as if it had timed out with nothing
// completed (a stand-in for a disk slower than the wait), false lets it
// wait. Null (the default): nothing.
void set_consumer_reap_hook(bool (*hook)(bool in_flush));

class Consumer {
 public:
  // Starts the consumer on `rb`. Null on failure, with `err` filled.
  static std::unique_ptr<Consumer> create(RingBuffer& rb, const ConsumerOptions& opts,
                                          Error* err = nullptr);
  ~Consumer();  // stop()
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Drains everything committed so far (partial pages included), waits for
  // the writes, closes the current segment and publishes it. Blocks until
  // done, or until stop_timeout_ms passed without progress (-ETIMEDOUT: the
  // file system hangs; the flush goes on, stop() waits for it again). 0,
  // or -errno of a failure in that segment (details: on_message).
  int flush();
  // flush(), then ends both threads. Idempotent. -ETIMEDOUT when that made
  // no progress for options().stop_timeout_ms (the file system hangs): the
  // recording is over, the ring is not touched again, and what did not
  // reach a published file is left in the spool for `rbtrace recover`.
  int stop();

  ConsumerStats stats() const;
  // Paths of the files published so far, oldest first.
  std::vector<std::string> published() const;
  // This consumer's spool directory (DIR/spool/<session>).
  const std::string& spool_dir() const;
  // Options after defaults were applied.
  const ConsumerOptions& options() const;

  struct Impl;

 private:
  explicit Consumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- recording the process ring from the environment ---------------------
// (rbtrace/tracer.h.) RBTRACE_RECORD=DIR records the process ring into DIR
// with no code in the host: link rbtrace::autostart (its constructor calls
// record_from_env before main) or call record_from_env yourself. Variables:
//   RBTRACE_RECORD=DIR           ConsumerOptions::dir (unset or empty: off)
//   RBTRACE_SEGMENT_MB=N         segment_bytes in MiB (0: never rotate)
//   RBTRACE_SEGMENT_SECONDS=N    segment_seconds
//   RBTRACE_FILE_MODE=0640       file_mode (octal)
//   RBTRACE_PREFIX=NAME          prefix
// plus the ring's (tracer.h: RBTRACE_CPUS, RBTRACE_PAGES, ...).
//
// The ConsumerOptions of those variables over *opts: 0, or -EINVAL with
// *why naming the variable.
int consumer_options_from_env(ConsumerOptions* opts, std::string* why);
// Starts the recording: makes the process ring (tracer::init_from_env over
// a recording's defaults: producer/consumer mode, 256 pages per CPU; an
// existing one is used as it is) and a Consumer on it into $RBTRACE_RECORD,
// stopped at exit (atexit: flushed and published; a forked child does not
// stop its parent's). 1 started, 0 RBTRACE_RECORD unset or empty (nothing
// done), or -errno with *why: a bad variable (-EINVAL), the ring or the
// consumer could not be made, -EALREADY (one runs already). Not from a
// signal handler.
int record_from_env(std::string* why);

// `rbtrace recover DIR`: for every spool session under DIR/spool whose
// process is gone (its lock can be taken), turns each segment into a
// trace.dat published under the segment's public name, using only what the
// spool holds (sidecar meta, cmdlines, pages), then removes the session and
// its private temp files. Every page is checked with the trace.dat
// reader's own page check (check_trace_page, rbtrace/tracedat_page.h)
// against the segment's event formats: holes and torn pages (writes the
// crash cut) and pages that fail the check (corrupt) are skipped and
// counted, so every file recover publishes is one the reader (and
// `rbtrace report`) reads to the end; each trace is also read back to its
// end before it is published. Segments already published (killed between
// link and cleanup) are only cleaned up. Sessions of live processes are
// left alone. A `.new-*` directory (a session being made) that a crash
// left is removed when it is ours, old, holds only its lock and that lock
// is free (DESIGN.md, "A session directory appears locked").
struct RecoverResult {
  std::vector<std::string> published;  // paths written
  std::vector<std::string> messages;   // one sentence per notable thing
  uint64_t sessions = 0;               // dead sessions handled
  uint64_t sessions_live = 0;          // skipped: still recording
  uint64_t segments = 0;               // segments turned into traces
  uint64_t pages = 0;                  // valid pages kept
  uint64_t pages_rejected = 0;         // all skipped: holes, torn and corrupt pages
  uint64_t pages_corrupt = 0;          // ... of which failed the reader's page check
  std::vector<uint64_t> corrupt_per_cpu;  // pages_corrupt by CPU number (all segments)
  uint64_t events = 0;                 // events in the traces written
  uint64_t stale_new_dirs_removed = 0; // `.new-*` directories left by a crash, removed
};
// 0 when every dead session was handled (or there was none), else -errno of
// the first failure (details in messages / err).
int recover_spool(const std::string& dir, RecoverResult* out, std::string* err);

}  // namespace rbtrace
