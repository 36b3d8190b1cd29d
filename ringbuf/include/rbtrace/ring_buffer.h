// rbtrace/ring_buffer.h - the lockless per-CPU ring buffer.
//
// Writers on one CPU nest like a stack: the owner thread, interrupted by its
// signal handlers, interrupted by theirs. See docs/DESIGN.md for the
// protocol; the code points W0..W6 (writer) and R1..R4 (reader) named in the
// comments below are defined there.
//
// This header is the API. The internals are beside it, under
// rbtrace/detail/ (users need not include them: this header does):
//   layout.h  the pages, the CPU buffer and the per-thread bindings
//   writer.h  the inline writer, W0..W6 in the order of docs/DESIGN.md
//   local.h   local operations (atomic against signal handlers only)
//   hints.h   branch hints and inlining attributes
//
// Who may call what:
//   writer API (reserve/commit/discard/write, typed emit): any thread and
//     any signal handler; the calling thread owns a CPU slot (bound or
//     claimed on first use). Never blocks, never allocates, never makes a
//     system call (except the very first event of a thread, which claims a
//     slot: one gettid and one prctl for its name, one mmap when the slot
//     it takes has no memory yet (a slot made for it), and, when the limit is
//     reached and no slot is free, the first and every 64th such claim of
//     a thread, one tgkill(pid, tid, 0) per slot to find slots of exited
//     threads; and the consumer's watermark wake-up, see consumer.h).
//   reader API (read_page/peek/consume/Iterator): any thread, one reader per
//     CPU at a time (readers serialize on a per-CPU reader lock; writers
//     never wait for it). Not from a signal handler of the CPU's owner.
//   control and stats: any thread.
//
// fork(): the child gets a fresh, empty recorder of the same shape. Every
// CPU buffer of every RingBuffer is emptied (its events and counters are
// the parent's, and the parent still has them), every reader lock and
// swap in progress is cleared, and every CPU slot is freed except the
// forking thread's, which it keeps. The child can write, read, swap
// (swap_cpu, swap_cpu_marshalled) and exit; a Consumer, control Server or
// Snapshot object made by the parent must not be used in the child.
// Record-disable counts stay as they were. fork() from a signal handler
// is not supported.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/clock.h"
#include "rbtrace/detail/hints.h"
#include "rbtrace/detail/local.h"
#include "rbtrace/format.h"

namespace rbtrace {

class RingBuffer;

enum class Mode : uint8_t {
  kOverwrite,         // the newest event pushes out the oldest page
  kProducerConsumer,  // a full buffer drops the newest event
};

// CPU slots come on demand: `ncpus` slots (and their memory) are made by
// create; a thread whose first event finds none of them free makes the
// next one, mapping its memory then, up to the slot limit: the smaller of
// `max_cpus` and what `max_buffer_bytes` pays for (the limit is never
// below `ncpus`). Events refused at the limit are counted
// (no_cpu_dropped) and reported wherever losses are.
struct Options {
  uint32_t ncpus = 4;           // slots made by create, 1..kMaxCpus
  uint32_t page_size = 4096;    // power of two, kMinPageSize..kMaxPageSize
  uint32_t pages_per_cpu = 16;  // ring pages per CPU (>= 2), plus one
                                // reader page
  Mode mode = Mode::kOverwrite;
  ClockKind clock = ClockKind::kCounter;
  uint32_t max_cpus = 0;           // slot limit; 0: kDefaultMaxCpus (or
                                   // ncpus, if larger); else ncpus..kMaxCpus
  uint64_t max_buffer_bytes = 0;   // memory budget of all slots' pages; 0:
                                   // kMaxBytesPerBuffer; at least ncpus
                                   // slots' worth
};

inline constexpr uint32_t kMaxCpus = 4096;
// The default slot limit: a pool of a few hundred threads never reaches it;
// a slot costs nothing until a thread claims it (about 100 bytes of
// bookkeeping), then (pages_per_cpu + 1) pages.
inline constexpr uint32_t kDefaultMaxCpus = 1024;
inline constexpr uint32_t kMaxPagesPerCpu = 1u << 20;
inline constexpr uint64_t kMaxBytesPerBuffer = 1ULL << 36;  // 64 GiB
inline constexpr uint32_t kMaxNesting = 8;  // owner + 7 nested handlers
// The smallest payload: a record begins with the 8-byte common header
// (format.h: common_type, common_flags, common_preempt_count, common_pid),
// which every reader of rbtrace's files (TraceDatReader, trace-cmd) reads
// first. reserve() refuses shorter payloads with -EINVAL.
inline constexpr uint32_t kMinPayload = 8;
// The largest payload every ring accepts (max_payload() of the smallest
// page): reserve() skips its length check for constants up to this.
inline constexpr uint32_t kMinMaxPayload =
    (kMinPageSize - kPageHeaderSize - kTimeEventSize - 8) & ~3u;

// A clear error: an errno-style code and a sentence.
struct Error {
  int code = 0;
  std::string message;
};

// Per-CPU counters, by cause. Every write attempt on a CPU (bad lengths and
// -EBUSY for want of a slot aside) ends in exactly one of: entries
// (written), discarded, dropped, commit_overrun, nested_dropped, disabled.
// Every written event ends read, overrun, or still in the buffer:
//   entries == read + overrun + (events still buffered)
struct CpuStats {
  uint64_t entries = 0;         // events written: counted when reserved,
                                // taken back by a discard
  uint64_t discarded = 0;       // reserved, then discarded by the writer
  uint64_t bytes = 0;           // their payload bytes
  uint64_t overrun = 0;         // committed, then overwritten (overwrite)
  uint64_t commit_overrun = 0;  // refused: the tail lapped the commit page
  uint64_t dropped = 0;         // refused: buffer full (producer/consumer)
  uint64_t nested_dropped = 0;  // refused: nesting too deep, or a handler
                                // had to cross a page while the writer it
                                // interrupted was crossing one
  uint64_t disabled = 0;        // refused: record-disabled, or the buffer
                                // was swapped away between W1 and W2
  uint64_t read = 0;            // events handed to readers
  // Losses that readers are told about in page flags.
  uint64_t lost() const { return overrun + commit_overrun + dropped + nested_dropped; }
  // Adds every counter of `s` (e.g. the generations of a CPU that swaps
  // moved through).
  CpuStats& operator+=(const CpuStats& s) {
    entries += s.entries;
    discarded += s.discarded;
    bytes += s.bytes;
    overrun += s.overrun;
    commit_overrun += s.commit_overrun;
    dropped += s.dropped;
    nested_dropped += s.nested_dropped;
    disabled += s.disabled;
    read += s.read;
    return *this;
  }
};

// Points where a test policy can run code in the middle of the real writer
// (docs/DESIGN.md, "Test hooks"). With NoHooks they compile to nothing.
enum class HookPoint : uint8_t {
  kAfterW0,        // the CPU buffer loaded (W0), W1 not yet run
  kAfterW1,        // record_disabled checked, nothing entered yet
  kAfterW2,        // entered (committing++), back-pointer not yet checked
  kAfterW3,        // entered and back-pointer checked
  kInW5,           // page crossing: tail overflowed, head not yet handled
  kW5Retry,        // page crossing done, about to retry the reservation
  kBeforeCommit,   // W6 about to run
  kW6Fast,         // W6 fast path: commit not yet stored
  kW6Leave,        // W6 fast path: commit stored, not yet left (cmpxchg)
};

struct NoHooks {
  static void at(HookPoint, RingBuffer&, uint32_t) {}
};

// Points where a test can run code in the middle of the reader (R2), of
// the per-CPU disable calls and of a slot claim. These paths are not templates: a test
// installs a function with set_test_hook; unset (the default) it costs one
// relaxed load on the way.
enum class TestHookPoint : uint8_t {
  kR2BeforeSplice,    // R2: head found, reader page prepared, CAS not yet run
  kDisableBeforeCas,  // record_disable_cpu & co.: slot's buffer loaded, its
                      // word not yet changed
  kClaimBinding,      // a claim owns the slot and has stored the binding's
                      // cpu and buffer, not yet its rb_id and the count
  kRemoteMarked,      // swap_cpu_remote: the back-pointer moved (M1), the
                      // barrier not yet run
  kRemoteFenced,      // swap_cpu_remote: the barrier ran (M2), committing
                      // not yet read
  kClaimGrown,        // a claim found every slot owned and tried to make
                      // one (ncpus() grew, by it or by another claimer),
                      // not yet looked again; cpu = the count it saw
};
using TestHook = void (*)(TestHookPoint, RingBuffer&, uint32_t cpu);
void set_test_hook(TestHook h);  // null removes it

// Optional page hook, off by default: the writer that moved a CPU's tail to
// a new page calls fn(arg, cpu) once, at the end of W5 (still busy, after
// in_w5 is cleared). It runs on the writer's path, possibly in a signal
// handler: it must be async-signal-safe, must not write events, and fn/arg
// must stay valid as long as any writer may run (the consumer's watermark
// wake-up makes its hook immortal). One acquire load per page when unset.
struct PageHook {
  void (*fn)(void* arg, uint32_t cpu);
  void* arg;
};

namespace detail {
struct BufferPage;  // rbtrace/detail/layout.h
struct CpuBuffer;
struct NameRecord;  // ring_buffer_internal.h
struct HandBack;    // ring_buffer_internal.h
}  // namespace detail

// A successful reservation: `data` has room for `length` payload bytes.
// Every successful reserve is followed by exactly one commit or discard, on
// the same thread at the same nesting level (before the writer it
// interrupted resumes).
struct Reservation {
  void* data = nullptr;      // payload; null on failure
  uint32_t length = 0;       // payload bytes requested
  int err = 0;               // 0, or -errno: -EINVAL bad length, -EPERM
                             // disabled, -EAGAIN swapped away (W3),
                             // -ELOOP too deep, -ENOSPC full / commit
                             // overrun, -EBUSY no free CPU slot (or
                             // the thread is exiting)
  // The writer's own bookkeeping (commit, discard), laid out to pack into
  // 64 bytes:
  detail::CpuBuffer* cpu_buffer = nullptr;
  detail::BufferPage* page = nullptr;
  uint64_t entered = 0;      // CpuBuffer::state after W2, for W6's fast
                             // path; 0 (never a state in W6) otherwise
  uint64_t* commit_word = nullptr;  // W6's first store: the page's commit
                                    // word (fast path), else a dummy
  uint32_t commit_end = 0;   // the value stored there
  uint32_t event_offset = 0;  // offset of the data event header in data[]
  uint32_t total = 0;         // bytes reserved, time event included
  uint8_t level = 0;         // nesting level: 0 thread, 1.. signal
  explicit operator bool() const { return data != nullptr; }
};
static_assert(sizeof(Reservation) == 64);

class RingBuffer {
 public:
  // Creates a ring buffer, or returns null and fills `err` (EINVAL for bad
  // options, ENOMEM when memory cannot be had). Any thread.
  static std::unique_ptr<RingBuffer> create(const Options& opts, Error* err = nullptr);
  ~RingBuffer();
  RingBuffer(const RingBuffer&) = delete;
  RingBuffer& operator=(const RingBuffer&) = delete;

  const Options& options() const { return opts_; }
  // Slots made so far: CPUs 0..ncpus()-1 exist. It only grows (a thread's
  // first event, bind_thread, reserve_cpus), up to max_cpus(). A slot made
  // but not yet mapped (its claimer is mapping it, or bind_thread made it
  // on the way to a higher one) reads as an empty CPU. Any thread; readers
  // that keep per-CPU state look again now and then.
  uint32_t ncpus() const {
    // acquire: pairs with the release CAS that made a slot (claim_free_cpu,
    // reserve_cpus); the slot's bookkeeping is ready for the caller.
    return nslots_.load(std::memory_order_acquire);
  }
  // The slot limit (Options::max_cpus and max_buffer_bytes).
  uint32_t max_cpus() const { return limit_; }
  // Makes slots 0..n-1, with their memory, now (e.g. a snapshot's spare
  // before it swaps with a slot the live ring made on demand). 0, -EINVAL
  // (n above max_cpus()), -ENOMEM. Any thread but a signal handler.
  int reserve_cpus(uint32_t n);
  uint32_t page_size() const { return opts_.page_size; }
  const Clock& clock() const { return clock_; }
  uint32_t id() const { return id_; }
  // Largest payload one event can carry (the smallest is kMinPayload).
  uint32_t max_payload() const { return max_payload_; }

  // ---- CPU slots -----------------------------------------------------------
  // Binds the calling thread to `cpu` (any below max_cpus(): the slots up
  // to it are made, its memory mapped). 0, -EINVAL (beyond the limit),
  // -EBUSY (owned by another thread, or the calling thread is exiting),
  // -ENOSPC (thread bound to too many buffers), -ENOMEM.
  int bind_thread(uint32_t cpu);
  // Gives the calling thread's slot back (also done at thread exit).
  void unbind_thread();
  // The calling thread's CPU, or -1.
  int current_cpu() const;
  // Thread id owning `cpu`, 0 if none (-1 while claimed by claim_cpu_for or
  // an Iterator).
  int32_t cpu_owner(uint32_t cpu) const;
  // Claims the free slot `cpu` on behalf of a thread that will not write to
  // it (the snapshot marshalling runs swap_cpu on an unowned CPU this way):
  // while claimed no thread can bind or claim the slot, so no writer runs on
  // it. Any thread. 0, -EINVAL (no such CPU), -EBUSY (owned or claimed).
  // Every successful claim is followed by one release_cpu_for(cpu).
  int claim_cpu_for(uint32_t cpu) {
    if (cpu >= ncpus()) return -EINVAL;
    int32_t expected = 0;
    // acquire: pairs with the release store in unbind_thread, so the claimer
    // sees the last owner's writer-side state (as claim_cpu does).
    return owners_[cpu].compare_exchange_strong(expected, -1, std::memory_order_acquire,
                                                std::memory_order_relaxed)
               ? 0
               : -EBUSY;
  }
  void release_cpu_for(uint32_t cpu) {
    // release: publishes what the claimer did (the swap) to the next owner;
    // pairs with the acquire CAS in claim_cpu/bind_thread.
    if (cpu < limit_) owners_[cpu].store(0, std::memory_order_release);
  }
  // In a forked child (called by rbtrace's pthread_atfork handler): slots
  // of the forking thread move to its new tid, all others are freed, and
  // the CPU buffers are emptied (see "fork()" at the top of this file).
  void after_fork_in_child(int32_t old_tid, int32_t new_tid);
  // Events refused because no CPU slot could be had: every slot up to the
  // limit owned, no memory for a new one, or the writing thread exiting
  // (its slots already given back).
  uint64_t no_cpu_dropped() const { return no_cpu_.load(std::memory_order_relaxed); }

  // ---- thread names --------------------------------------------------------
  // A thread's name (its comm, as prctl(PR_GET_NAME) reads it) is recorded
  // when it claims or binds a slot, on that cold path, so that a reader
  // names even a thread that lived for a millisecond. The newest
  // kThreadNames records are kept; a thread renamed after its claim is
  // seen by readers that also look at /proc (the consumer does).
  struct ThreadName {
    int32_t tid = 0;
    char comm[16] = {};  // NUL-terminated
  };
  static constexpr uint32_t kThreadNames = 1024;
  // Appends to *out the records from *cursor on (0: the oldest kept),
  // oldest first, and moves *cursor past them. A record still being written
  // ends the call (a later call gets it). Returns how many records were
  // overwritten before this reader got them. Any thread; one cursor per
  // reader.
  uint64_t read_thread_names(uint64_t* cursor, std::vector<ThreadName>* out) const;

  // ---- writer --------------------------------------------------------------
  // W0..W5. On failure the Reservation is empty and err says why; the
  // refusal is counted (except -EINVAL).
  template <class Hooks = NoHooks>
  RBTRACE_ALWAYS_INLINE Reservation reserve(uint32_t length);
  // W6. Makes the event visible to readers once no writer it interrupted is
  // still inside W2..W6.
  template <class Hooks = NoHooks>
  RBTRACE_ALWAYS_INLINE void commit(const Reservation& r);
  // Withdraws a reservation: the space is given back if nothing was reserved
  // after it, else it becomes padding. Not counted as an entry.
  void discard(const Reservation& r);
  // reserve + copy + commit. 0 or the reserve error.
  int write(const void* data, uint32_t length);

  // Installs (or with null removes) the page hook. Any thread.
  void set_page_hook(const PageHook* h) {
    // release: pairs with the acquire load in move_tail; the hook's fn/arg
    // are written before it is published.
    page_hook_.store(h, std::memory_order_release);
  }

  // ---- record enable/disable (any thread) -----------------------------------
  // The per-CPU calls act on the CPU slot: a disable and its matching
  // enable meet the same buffer whatever swaps run (a swap refuses a
  // disabled CPU with -EAGAIN, and a disable waits for a swap that is
  // exchanging the buffer). Once every disable is matched by an enable
  // (and every off by an on), the CPU records and swaps again. An enable
  // without a disable is ignored (0).
  void record_disable() { record_disabled_.fetch_add(1, std::memory_order_relaxed); }
  void record_enable() { record_disabled_.fetch_sub(1, std::memory_order_relaxed); }
  void record_off() { record_disabled_.fetch_or(kRecordOff, std::memory_order_relaxed); }
  void record_on() { record_disabled_.fetch_and(~kRecordOff, std::memory_order_relaxed); }
  bool record_is_on() const {
    return (record_disabled_.load(std::memory_order_relaxed) & ~kOtherClock) == 0;
  }
  // The per-CPU calls: 0, -EINVAL (no such CPU), -ENOMEM (a disable or
  // OFF of a slot not mapped yet maps it, and memory could not be had).
  // Not from a signal handler (they may wait for a swap). The per-CPU
  // disable count saturates at 2^29 - 1 nested disables (more stay
  // counted as that many; the CPU stays disabled).
  int record_disable_cpu(uint32_t cpu);
  int record_enable_cpu(uint32_t cpu);
  int record_off_cpu(uint32_t cpu);
  int record_on_cpu(uint32_t cpu);

  // ---- reader ---------------------------------------------------------------
  // A page to trade with read_page; free it with free_read_page of a ring
  // of the same page size (pages are mapped memory, not malloc's). Null on
  // ENOMEM.
  DataPage* alloc_read_page() const;
  void free_read_page(DataPage* p) const;

  // R1..R4. Hands back in *page the CPU's oldest committed data. *page
  // must come from alloc_read_page of a ring of the same page size (the
  // ring keeps it and frees it as its own: mapped memory, not malloc's). If the
  // reader page is full and no writer can reach it, the pages are swapped
  // (no copy) and *page now holds the buffer's page; otherwise the committed
  // unread part is copied into *page, unless `full` is set and a writer can
  // still add to the page (the unread rest of a partly read page the writer
  // has left is copied even with `full`, as the kernel does). Returns the bytes
  // of event data in the page (>0); -EAGAIN when there is nothing (or, with
  // `full`, no full page) to read; -EINVAL for a bad CPU or null page.
  // Lost events since the last read set kMissedEvents (and kMissedStored
  // with the count after the data when it fits) in (*page)->commit.
  int read_page(DataPage** page, uint32_t cpu, bool full);

  // ---- pages handed back (a snapshot of a recorded ring) ---------------------
  // A ring whose reader records every event (a Consumer marks it recorded)
  // must not lose to a snapshot the events the snapshot swaps out. The
  // snapshot holds the CPU's reads (hold_reads) before its swap, reads the
  // swapped-out buffer into its own spool, hands those pages back
  // (hand_back: `npages` whole DataPages of page_size bytes at `offset` in
  // `fd`, as read_page produced them; fd is dup'ed) and lets go
  // (release_reads). While held, read_page of the CPU returns -EAGAIN (so
  // nothing newer is read first); then it returns the pages handed back,
  // oldest first, before anything of the live buffer. A reader that stops
  // for good calls set_recorded(false), which drops what is still queued.
  // Any thread but the CPU's owner's signal handlers; hand_back: 0 or
  // -errno (dup).
  void set_recorded(bool on);
  bool recorded() const { return recorded_.load(std::memory_order_acquire); }  // pairs with set_recorded
  // One Consumer per ring (rbtrace/consumer.h): Consumer::create takes this
  // claim (false: another one holds it) and gives it back when it stops.
  // Any thread.
  bool claim_consumer() {
    bool held = false;
    // acq_rel: pairs with release_consumer's store; the new consumer sees
    // everything the previous one did to the ring's read side.
    return consumer_claimed_.compare_exchange_strong(held, true, std::memory_order_acq_rel,
                                                     std::memory_order_relaxed);
  }
  void release_consumer() {
    // release: pairs with the acquire of the next claim_consumer.
    consumer_claimed_.store(false, std::memory_order_release);
  }
  void hold_reads(uint32_t cpu);
  int hand_back(uint32_t cpu, int fd, uint64_t offset, uint32_t npages);
  void release_reads(uint32_t cpu);
  // Pages handed back for `cpu` and not read yet (a reader that must read
  // everything, e.g. a flush, reads this many more than the ring holds).
  uint32_t handed_back_pages(uint32_t cpu) const;

  // Event-level reading of the reader page. peek leaves the event in place;
  // consume removes it. 0 or -EAGAIN (nothing to read) / -EINVAL / -ENOMEM
  // (no memory for the calling thread's copy buffer). `lost`
  // (optional) receives the events lost before this one. ev->data points at
  // a copy of the record in a buffer of the calling thread: it stays valid,
  // whatever writers, swaps, resets or other readers do, until this thread
  // calls peek or consume again (on any CPU of any RingBuffer) or exits.
  int peek(uint32_t cpu, PageEvent* ev, uint64_t* lost = nullptr);
  int consume(uint32_t cpu, PageEvent* ev, uint64_t* lost = nullptr);

  // Non-consuming iteration over everything committed on one CPU, oldest
  // first. Holds the CPU's reader lock while alive. Safe beside running
  // writers in producer/consumer mode; in overwrite mode the pages it walks
  // could be overwritten, so there it claims the CPU slot for its lifetime
  // (no writer can run) or fails with -EBUSY if a thread owns the slot.
  class Iterator {
   public:
    Iterator(RingBuffer& rb, uint32_t cpu);
    ~Iterator();
    Iterator(const Iterator&) = delete;
    Iterator& operator=(const Iterator&) = delete;
    int status() const { return status_; }  // 0, -EINVAL, -EBUSY
    // Next event; false at the end. Payload valid until the iterator moves.
    bool next(PageEvent* ev);

   private:
    bool load_page(detail::BufferPage* bp, uint32_t from, uint64_t ts);
    RingBuffer& rb_;
    detail::CpuBuffer* cb_ = nullptr;
    uint32_t cpu_;
    int status_ = 0;
    bool claimed_ = false;
    bool locked_ = false;
    detail::BufferPage* page_ = nullptr;  // current page
    detail::BufferPage* stop_ = nullptr;  // commit page: last page to walk
    bool on_reader_page_ = false;
    PageWalker walker_{nullptr, 0, 0};
  };

  // ---- stats ----------------------------------------------------------------
  // Counters of `cpu` (zeros for a bad CPU). Any thread.
  CpuStats stats(uint32_t cpu) const;

  // ---- swap (the writer's half of the snapshot protocol) ----------------------
  // S2..S4: exchanges CPU `cpu`'s buffer between this and `other`. Must run
  // on the CPU's owner thread with every signal blocked (or in a handler
  // installed with a full sa_mask), or while nobody owns the slot.
  // Returns 0; -EINVAL (no such CPU in both, a slot not mapped in either,
  // or geometry differs); -EAGAIN
  // (either buffer record-disabled); -EBUSY (a writer is inside W2..W6 on
  // either buffer, or a reader holds either buffer's reader lock).
  int swap_cpu(RingBuffer& other, uint32_t cpu);
  // The same from any thread, for an owner that cannot take the doorbell
  // signal (it blocks or ignores it): an asymmetric Dekker pair with the
  // owner's W2/W3 through membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
  // (docs/DESIGN.md section 7, "Without a signal"). The owner's first
  // event after the swap is refused (-EAGAIN, counted in `disabled`) and
  // moves its binding to the new buffer. Returns what swap_cpu returns, or
  // the error of membarrier_status() (-ENOSYS, -EPERM, ...) when the
  // barrier is not available.
  int swap_cpu_remote(RingBuffer& other, uint32_t cpu);
  // Swaps that moved a CPU buffer into or out of this ring, ever (a
  // reader that keeps pages of the ring registered somewhere learns that
  // pages left its circle). Any thread.
  uint64_t swaps() const {
    // acquire: pairs with the release increment after S4 in swap_cpu.
    return swaps_.load(std::memory_order_acquire);
  }
  // W1 and W3 refusals on `cpu` since the last call (a disable's or a
  // swap's; counted in the slot, not in a buffer; stats() includes them
  // until taken). The snapshot adds them to the generation it swapped out.
  // Any thread.
  uint64_t take_slot_refused(uint32_t cpu);
  // 0 when swap_cpu_remote can run: the process registered for private
  // expedited membarrier (done once, by the first create). Else -errno:
  // -ENOSYS/-EINVAL (kernel before 4.14 or the command not supported),
  // -EPERM (seccomp), -ECANCELED (RBTRACE_MEMBARRIER=0 in the environment
  // at the first create).
  static int membarrier_status();
  // The CPU buffer currently in slot `cpu` (for tests and the snapshot
  // engine). Null for a bad CPU or a slot not mapped yet.
  detail::CpuBuffer* cpu_buffer(uint32_t cpu) const;
  // Empties CPU `cpu`: pages, the buffer's counters (not the slot's
  // refusals: take_slot_refused). Only with no writer and no reader (e.g. a
  // swapped-out buffer). 0 or -EINVAL. Record-disable state stays.
  int reset_cpu(uint32_t cpu);

 private:
  static constexpr uint32_t kRecordOff = 1u << 31;
  // Adds `add` to the disable count of the CPU buffer in slot `cpu`, or sets
  // (`off` > 0) / clears (`off` < 0) its OFF bit, waiting out a swap that
  // is exchanging it (kSwapping); see record_disable_cpu.
  int change_cpu_disable(uint32_t cpu, int add, int off);
  // Not a disable: set for good in record_disabled_ when the clock is not
  // the CPU counter, so that W1's one test also catches those writes, which
  // then take a second copy of the fast path with the ring's clock (the
  // counter's fast path reads the counter without asking which clock). W1
  // ORs the global word with the CPU's, whose bits never include this one
  // (checked in ring_buffer.cc), so `flags == kOtherClock` means: this and
  // nothing else, in either word.
  static constexpr uint32_t kOtherClock = 1u << 30;
  RingBuffer() = default;

  // CPU slots (ringbuf/src/slots.cc).
  int32_t claim_cpu();
  // Frees the slots whose owner thread no longer exists (claim_cpu, when
  // no slot is free: the first time and every 64th time per thread).
  // Returns how many.
  RBTRACE_COLD uint32_t reclaim_dead_slots();
  // claim_cpu's search, with the thread marked as changing its bindings.
  int32_t claim_free_cpu(int32_t tid);
  // C2: the buffer of slot `c`: the one there, else a new one mapped now
  // and published with a CAS from null (a loser unmaps its own and takes
  // the winner's). Null when memory cannot be had. Any thread, any signal
  // handler (mmap, munmap: system calls, no allocator).
  detail::CpuBuffer* slot_buffer(uint32_t c);
  // A new, empty CPU buffer of this ring's geometry for slot `c` (mmap, no
  // allocator: a claim may run in a signal handler); null on ENOMEM.
  detail::CpuBuffer* make_cpu_buffer(uint32_t c);
  // Makes the slot count at least n (no mapping). n <= limit_.
  void grow_slots_to(uint32_t n);

  // The writer's paths (rbtrace/detail/writer.h), in W order, each named
  // for the writes it is for.
  // W0's cold half: the calling thread's binding beyond the first, else a
  // claimed slot (claim_cpu); -1 when none is free.
  RBTRACE_COLD int32_t find_or_claim_cpu();
  // The first event of a thread (it claims a slot), or a write to a buffer
  // the thread is bound to in a binding other than the first: W0's cold
  // half, then reserve_fast.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_first(uint32_t length);
  // W1..W4b on CPU buffer `cb`: the fast path, for the common event (the
  // paths below for the rest).
  template <class Hooks>
  RBTRACE_ALWAYS_INLINE Reservation reserve_fast(detail::CpuBuffer* cb, uint32_t length);
  // W2..W4b of the fast path, the clock read inline (the counter) or
  // through cb->clock.now_posix() (any other clock kind).
  template <class Hooks, bool kCounterClock>
  RBTRACE_ALWAYS_INLINE Reservation reserve_entered(detail::CpuBuffer* cb, uint32_t length);
  // W1 found a disable or a swap's mark: refuse, unless it cleared since
  // (then reserve_entered with the ring's clock).
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_flagged(detail::CpuBuffer* cb, uint32_t length);
  // W1's refusal (record disabled, or a swap's mark): counts it in the
  // slot (count_slot_refusal), never in cb, which may belong to the other
  // RingBuffer by now, and returns -EPERM.
  RBTRACE_COLD Reservation refuse_disabled(detail::CpuBuffer* cb);
  // W3's second half on the slow path, for a nested writer: the depth
  // check, then reserve_full. `entered` is the state after W2.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_nested(detail::CpuBuffer* cb, uint64_t entered,
                                          uint32_t length);
  // W3's refusals (swapped away, or nesting too deep), after W2 entered:
  // undoes W2 (refuse_moved: or leaves through W6 when a handler reserved
  // since our W2), counts, returns the failed Reservation.
  RBTRACE_COLD Reservation refuse_moved(detail::CpuBuffer* cb, uint64_t entered);
  RBTRACE_COLD Reservation refuse_too_deep(detail::CpuBuffer* cb);
  // A reservation the fast path made at B, handed to reserve_full.
  struct ReserveState {
    detail::BufferPage* tp;
    uint64_t w, ts, delta, end;
  };
  // W4/W5 in full, for every write the fast path does not take.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_full(detail::CpuBuffer* cb, uint32_t level,
                                        uint32_t length, const ReserveState* resume);
  // W5: the page is full.
  template <class Hooks>
  RBTRACE_COLD int move_tail(detail::CpuBuffer* cb, detail::BufferPage* tp, uint32_t tail,
                uint32_t cpu);

  // The reader (ringbuf/src/reader.cc).
  detail::BufferPage* get_reader_page(detail::CpuBuffer* cb);
  detail::BufferPage* find_head(detail::CpuBuffer* cb);
  detail::CpuBuffer* lock_reader(uint32_t cpu);
  static void unlock_reader(detail::CpuBuffer* cb);
  int next_event(uint32_t cpu, PageEvent* ev, uint64_t* lost, bool consume);
  // Construction and reset (ringbuf/src/ring_buffer.cc).
  void init_cpu_buffer(detail::CpuBuffer* cb);
  friend class Iterator;

  Options opts_;
  uint32_t limit_ = 0;  // max_cpus(): the size of every per-slot array
  alignas(64) std::atomic<uint32_t> nslots_{0};  // ncpus()
  Clock clock_;
  uint32_t id_ = 0;
  uint32_t max_payload_ = 0;
  // Global record_disabled: bit 31 OFF, bits 0..30 nestable count.
  alignas(64) std::atomic<uint32_t> record_disabled_{0};
  std::unique_ptr<std::atomic<detail::CpuBuffer*>[]> buffers_;
  std::unique_ptr<std::atomic<int32_t>[]> owners_;
  // Per slot: record_disable_cpu & co. under way (change_cpu_disable); a
  // swap of the slot refuses while it is not 0.
  std::unique_ptr<std::atomic<uint32_t>[]> ctl_;
  // The CPU buffers are owned by the slot they are in, not by the
  // RingBuffer that made them: swap_cpu exchanges them, and each
  // RingBuffer frees the ones in its slots when it is destroyed (as the
  // kernel's ring_buffer_free does). So a live buffer outlives the spare
  // it swapped with.
  uint32_t max_payload_span_ = 0;  // max_payload_ - kMinPayload
  alignas(64) std::atomic<uint64_t> no_cpu_{0};
  std::atomic<const PageHook*> page_hook_{nullptr};  // see set_page_hook
  // Thread names at claim (slots.cc): kThreadNames seqlocked records and
  // the count of records ever started.
  void record_thread_name(int32_t tid);
  std::unique_ptr<detail::NameRecord[]> names_;
  // Per slot: W1's refusals (disabled, off, or a swap's mark) and W3's (the
  // buffer moved). Counted here, never in a buffer, which the requester may
  // be dumping or resetting; stats() adds them to `disabled`, and a
  // snapshot moves them into the generation it swaps out
  // (take_slot_refused). `count` only grows, by a local add (no lock: only
  // the slot's owner thread and its handlers refuse on it; a new owner
  // follows the old through owners_' release/acquire); `taken` is how much
  // of it take_slot_refused handed out (a CAS: any thread). A cache line
  // each: a writer refusing flat out (a CPU left disabled) touches only
  // its own.
  struct alignas(64) SlotRefused {
    detail::Local64 count;
    std::atomic<uint64_t> taken;
  };
  std::unique_ptr<SlotRefused[]> slot_refused_;
  int swap_cpu_impl(RingBuffer& other, uint32_t cpu, bool remote);
  // Pages handed back and held reads (reader.cc): per slot, under its mutex;
  // handback_on_[cpu] says "look under the mutex" to read_page.
  std::unique_ptr<detail::HandBack[]> handback_;
  std::unique_ptr<std::atomic<uint32_t>[]> handback_on_;
  std::atomic<bool> recorded_{false};
  std::atomic<bool> consumer_claimed_{false};  // claim_consumer
  int read_handed_back(DataPage** pagep, uint32_t cpu);
  void count_slot_refusal(detail::CpuBuffer* cb);
  alignas(64) std::atomic<uint64_t> names_head_{0};
  std::atomic<uint64_t> swaps_{0};  // swaps()
};

}  // namespace rbtrace

// The state layout and the inline writer (W0..W6).
#include "rbtrace/detail/writer.h"
