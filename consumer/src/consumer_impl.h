// consumer_impl.h - the consumer's parts, one type per thread role and per
// piece of shared state (private to rbtrace::consumer; see consumer.h and
// docs/DESIGN.md, "Consumer"):
//
//   ConsumerContext  set up by create, read-only afterwards (every thread).
//   ConsumerShared   under mu: the hand-over queue, flush/stop state, stats.
//   Drainer          the drain thread (drainer.cc): the pool (slots), the
//                    I/O backend, the open segment, the closing segments
//                    (waiting for their writes), the tid -> comm map.
//   Publisher        the publish thread (publisher.cc): segments handed
//                    over (ConsumerShared::queue), one at a time.
//   Consumer::Impl   the callers (consumer.cc): flush/stop post a request
//                    (under mu) and wake the drain thread; create.
// mu is never held across I/O or across read_page.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backoff.h"
#include "cmdlines.h"
#include "io_backend.h"
#include "rbtrace/atomic_file.h"
#include "rbtrace/consumer.h"
#include "rbtrace/tracedat.h"
#include "segment.h"
#include "spool.h"
#include "waker.h"

namespace rbtrace::detail {

using SteadyClock = std::chrono::steady_clock;

// CPU time of the calling thread (user + system), ns; 0 if unknown.
uint64_t thread_cpu_ns();

// The one way create and its steps report an error: sets *err (when
// given) to `code` and `msg`; returns `code`.
int set_error(Error* err, int code, std::string msg);

// What create decided; read-only once the threads run.
struct ConsumerContext {
  ConsumerContext(RingBuffer& r, const ConsumerOptions& o) : rb(r), opts(o) {}

  RingBuffer& rb;
  ConsumerOptions opts;
  uint32_t page_size = 0;
  std::string session;
  std::string spool;  // DIR/spool/<session>
  AtomicHow publish_how = AtomicHow::kAuto;
  std::string clock_name;
  bool tsc2nsec = false;
  // The traced process, named in every trace (TraceDatInput::pid): this
  // process, its main thread's comm when the consumer started.
  int32_t pid = 0;
  std::string process;
  // The spool's layout (spool.h): one file per segment, published in place,
  // where the file system collapses ranges; else a file per CPU (version
  // 1), published by copying, so that the CPUs' files are written in
  // parallel (io_uring's workers run the buffered writes of one file one
  // at a time). Decided by create (Consumer::Impl::choose_layout).
  bool per_cpu_files = false;
  // The ring's slot limit (fixed for its life; read by create, so that the
  // drain thread needs no ring_mu for it) and the CPU region of the
  // one-file layout (SegmentLayout::cpu_region).
  uint32_t max_cpus = 1;
  uint64_t cpu_region = 0;

  void message(const std::string& m) const;
  // Set once stop() gave up (Impl::give_up): messages go to stderr, not
  // to a callback the application may have destroyed since.
  mutable std::mutex msg_mu;
  bool msg_off = false;
  std::string seg_path(uint64_t seq, const char* suffix) const;
  // Writes segment `seq`'s sidecar: a temporary, renamed over; with
  // `durable`, fsync'ed before the rename and the directory after. 0, or
  // -errno with the step that failed in *what.
  int write_meta(const SpoolMeta& m, uint64_t seq, std::string* what, bool durable = false) const;
};

// Between the threads and the callers; everything under mu.
struct ConsumerShared {
  mutable std::mutex mu;
  std::condition_variable cv;  // publish thread work; flush completion
  std::deque<std::unique_ptr<Segment>> queue;
  uint64_t flush_req = 0;     // generation asked for
  uint64_t flush_taken = 0;   // generation the drain thread handed over
  uint64_t flush_done = 0;    // generation the publish thread completed
  int flush_err = 0;          // first error since the last flush marker
  int flush_result = 0;       // error of the flush that completed last
  bool drain_stop = false;
  bool pub_stop = false;
  // stop() gave up waiting (stop_timeout_ms): the threads end on their own,
  // the last one to end releases the session's lock (Impl::thread_ended).
  bool abandoned = false;
  int threads_running = 0;
  bool episode_reported = false;  // disk-full message given for this episode
  ConsumerStats st;
  std::vector<std::string> published;

  // Appends a sentence to st.backend_note ("; " between). Takes mu.
  void add_note(const std::string& sentence) {
    std::lock_guard<std::mutex> g(mu);
    if (!st.backend_note.empty()) st.backend_note += "; ";
    st.backend_note += sentence;
  }

  // Set by the publish thread when a trace did not fit (ENOSPC, EFBIG,
  // EDQUOT): the drain thread takes no pages before this time (steady
  // clock, ns since its epoch), so a full disk is not filled with spool
  // that cannot be published. relaxed: a hint between two threads, no data
  // rides on it.
  std::atomic<int64_t> pub_blocked_until{0};

  // The drain thread touches the ring only while it holds ring_mu and
  // ring_gone is false; stop() that gave up sets ring_gone under ring_mu,
  // after which the application may destroy the ring at any time. Never
  // held across a system call that can block on the file system.
  std::mutex ring_mu;
  bool ring_gone = false;
};

// The drain thread: read_page -> io_uring/pwritev -> spool files.
class Drainer {
 public:
  Drainer(ConsumerContext& c, ConsumerShared& s) : ctx(c), sh(s) {}

  // ---- create's steps (before the thread starts) ----
  void init_backend();
  int init_pool(Error* err);
  void register_fixed();
  void init_waker();
  // ---- stop (after the thread ended) ----
  void release();

  void run();
  void wake();

  std::unique_ptr<IoBackend> io;
  Cmdlines cmdlines;
  Waker* waker = nullptr;
  // Registered event ids are [kFirstEventId, type_hi): records of those
  // carry a common header with the writer's tid.
  static constexpr uint32_t kFirstEventId = 1000;
  uint32_t type_hi = kFirstEventId;
  // CPUs of the ring known to the drain thread (set by create, then grown
  // by grow() as the ring makes slots); a segment has as many as were
  // known while it was open (Segment::cpus).
  uint32_t ncpus = 0;

 private:
  struct Slot {
    DataPage* page = nullptr;
    Segment* seg = nullptr;
    uint32_t cpu = 0;
    uint64_t off = 0;  // in its CPU's region of the segment file
    uint64_t events = 0;
  };

  int open_segment();
  int write_meta(const SpoolMeta& m, uint64_t seq);
  void grow();
  void grow_events();
  SegmentLayout segment_layout(const std::vector<EventFormat>& events) const;
  int open_spool_file(const std::string& path, mode_t mode);
  int cpu_fd(Segment* s, uint32_t cpu);
  int write_failed(Segment* s, uint32_t cpu, int e, const std::string& what);
  void close_current();
  void hand_over_finished();
  void finish(std::unique_ptr<Segment> s, uint64_t gen);
  void take_page(uint32_t i, uint32_t cpu);
  void page_lost(uint32_t cpu, uint64_t events);
  int64_t finish_short_write(const Slot& sl, int64_t res);
  void complete(const IoCompletion& c);
  size_t reap(int64_t wait_ns);
  uint64_t pass(bool full, uint32_t per_cpu, bool flushing = false);
  uint32_t per_pass() const;
  void check_swap();
  void wait_all_io();
  void do_flush(uint64_t gen);
  void sleep();

  ConsumerContext& ctx;
  ConsumerShared& sh;

  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
  std::unique_ptr<Segment> cur;
  std::vector<std::unique_ptr<Segment>> closing;
  uint64_t next_seq = 1;
  std::vector<int32_t> page_tids;
  std::vector<IoCompletion> comps;
  SteadyClock::time_point blocked_until{};
  Backoff backoff;
  uint32_t rr = 0;  // round-robin start CPU

  // The ring's swap count when its pages were registered as fixed
  // buffers. A snapshot swap puts another CPU buffer in a slot; from then
  // on pages leave our circle (a dumper may free one, and a later mapping
  // at the same address would not be the registered physical page), so
  // fixed writes stop for good at the first swap seen, on any CPU
  // (docs/DESIGN.md).
  uint64_t swaps_at_register = 0;
  bool fixed_active = false;
  bool in_flush = false;  // inside do_flush (told to the reap test hook)
  bool direct_refused = false;  // direct_io asked for, O_DIRECT refused

  std::atomic<uint32_t> own_sleep{0};  // relaxed: a flag; see Waker::sleeping
  std::atomic<uint32_t>* sleep_word = &own_sleep;
};

// The publish thread: segment -> trace.dat -> atomic publish.
class Publisher {
 public:
  Publisher(ConsumerContext& c, ConsumerShared& s) : ctx(c), sh(s) {}

  void run();
  // Assembles and publishes one segment. 0 or -errno (message given).
  int publish(Segment& s);

 private:
  void remove_segment_files(Segment& s);
  TraceDatInput trace_input(const Segment& s) const;
  int write_segment(Segment& s, std::string* err);
  int compact(Segment& s, const SegmentLayout::Plan& plan, size_t* done, std::string* err);
  int finish_in_place(Segment& s, TraceDatInput& in, const SegmentLayout::Plan& plan,
                      std::string* err);
  int write_and_link(Segment& s, const TraceDatInput& in, std::string* err);
  void failed(const Segment& s, uint64_t pages, int rc, const std::string& err);

  ConsumerContext& ctx;
  ConsumerShared& sh;
  Backoff backoff;
  bool compact_ok = true;  // false once the file system refused a collapse
};

}  // namespace rbtrace::detail

namespace rbtrace {

struct Consumer::Impl {
  Impl(RingBuffer& r, const ConsumerOptions& o) : ctx(r, o), drain(ctx, sh), pub(ctx, sh) {}

  // ---- create's steps ----
  void configure();
  void choose_layout();
  int open_session(Error* err);
  void start();
  // ---- control ----
  int flush();
  int stop();
  void thread_ended();
  int give_up();
  void close_lock();
  template <class Done>
  bool wait_progressing(std::unique_lock<std::mutex>& lk, Done done);

  detail::ConsumerContext ctx;
  detail::ConsumerShared sh;
  detail::Drainer drain;
  detail::Publisher pub;
  int lock_fd = -1;
  // The process that made it. In a forked child (another pid) the threads
  // do not exist and the spool, the lock and the ring's recording are the
  // parent's: flush/stop answer -ECHILD and touch nothing, and the
  // destructor forgets the object (in_child).
  pid_t owner_pid = getpid();
  bool in_child() const { return getpid() != owner_pid; }
  std::thread drain_thread;
  std::thread pub_thread;
  bool stopped = false;
  bool abandoned = false;  // stop() timed out: never deleted (see ~Consumer)
};

}  // namespace rbtrace
