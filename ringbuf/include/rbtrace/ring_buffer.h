// rbtrace/ring_buffer.h - the lockless per-CPU ring buffer.
//
// Writers on one CPU nest like a stack: the owner thread, interrupted by its
// signal handlers, interrupted by theirs. See docs/DESIGN.md for the
// protocol; the code points W1..W6 (writer) and R1..R4 (reader) named in the
// comments below are defined there.
//
// Who may call what:
//   writer API (reserve/commit/discard/write, typed emit): any thread and
//     any signal handler; the calling thread owns a CPU slot (bound or
//     claimed on first use). Never blocks, never allocates, never makes a
//     system call (except the very first event of a thread, which claims a
//     slot: one gettid).
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
// Record-disable counts stay as they were. Exception: fork() called
// from a signal handler that interrupted a write of the forking thread
// leaves that CPU buffer as it is (the interrupted write completes when the
// handler returns).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sched.h>
#include <string>

#include "rbtrace/clock.h"
#include "rbtrace/detail/local.h"
#include "rbtrace/format.h"

namespace rbtrace {

class RingBuffer;

enum class Mode : uint8_t {
  kOverwrite,         // the newest event pushes out the oldest page
  kProducerConsumer,  // a full buffer drops the newest event
};

struct Options {
  uint32_t ncpus = 4;           // writer slots, 1..kMaxCpus
  uint32_t page_size = 4096;    // power of two, kMinPageSize..kMaxPageSize
  uint32_t pages_per_cpu = 16;  // ring pages per CPU (>= 2), plus one
                                // reader page
  Mode mode = Mode::kOverwrite;
  ClockKind clock = ClockKind::kCounter;
};

inline constexpr uint32_t kMaxCpus = 4096;
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
};

// Points where a test policy can run code in the middle of the real writer
// (docs/DESIGN.md, "Test hooks"). With NoHooks they compile to nothing.
enum class HookPoint : uint8_t {
  kAfterW0,        // the CPU buffer loaded (W0), W1 not yet run
  kAfterW1,        // record_disabled checked, nothing entered yet
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

// ---------------------------------------------------------------------------
// List pointer bits (BufferPage::next). The pointer of the page *before* the
// head page carries the flag:
//   bits 0..1  kPageNormal 0, kPageHead 1 (the pointed-to page is the head),
//              kPageUpdate 2 (a writer is pushing the head forward)
//   bits 2..   BufferPage* (pages are 64-byte aligned)
// Invariant: outside a writer's W5, exactly one pointer in the ring has
// kPageHead and none has kPageUpdate.
// ---------------------------------------------------------------------------
inline constexpr uintptr_t kPageNormal = 0;
inline constexpr uintptr_t kPageHead = 1;
inline constexpr uintptr_t kPageUpdate = 2;
inline constexpr uintptr_t kFlagMask = 3;
// BufferPage::push_seq of a page no push has marked (a tail sequence number
// is at most 2^32 - 1).
inline constexpr uint64_t kNoPushSeq = ~0ULL;

struct BufferPage;
inline BufferPage* page_of(uintptr_t v) { return reinterpret_cast<BufferPage*>(v & ~kFlagMask); }
inline uintptr_t flags_of(uintptr_t v) { return v & kFlagMask; }
inline uintptr_t link(BufferPage* p, uintptr_t f) { return reinterpret_cast<uintptr_t>(p) | f; }

// One sub-buffer's descriptor (the kernel's buffer_page).
struct alignas(64) BufferPage {
  // Ring links. `next` is changed by the writer (flag bits, in W5) and by the
  // reader (R2 splice); `prev` only by the reader (the writer loads it in
  // is_reader_page).
  std::atomic<uintptr_t> next{0};
  std::atomic<BufferPage*> prev{nullptr};
  // Write index: (tail_seq << 32) | byte index into data[]. Owner-written.
  // The upper half changes every time the page becomes the tail page, so a
  // value identifies a position in the CPU's history (W4 uses that).
  Local64 write;
  // Events reserved on this page (minus discards). Owner-written; the
  // reader loads it once the commit has left the page.
  Local64 entries;
  // End of the events when a writer closed the page with padding in W5,
  // else the page capacity. Owner-written before the commit passes it.
  Local32 real_end;
  // The data page. Swapped by read_page while this is the reader page and
  // no writer can reach it (see read_page).
  DataPage* page = nullptr;
  uint32_t index = 0;  // position in the pages array, for debugging
  // Loss marks (docs/DESIGN.md section 5, "How R2 knows what was lost").
  // Owner-written in W5; the reader loads them after its R2 CAS took the
  // page (acquire), when no writer can write them any more.
  //   refused_mark: CpuBuffer::refused_total() when the tail entered the
  //     page (W5b), i.e. the refusals before the page's first event.
  //   push_mark/push_seq: CpuBuffer::overrun just after a writer made this
  //     page the head by pushing out the one before it, and the page's
  //     tail sequence number (write >> 32) at that moment. The mark is
  //     valid while push_seq still equals the page's sequence number.
  Local64 refused_mark;
  Local64 push_mark;
  Local64 push_seq;

  uint64_t commit_acquire() const {
    // acquire: pairs with the release stores in CpuBuffer::set_commit_to_write;
    // makes the events below the committed index visible.
    return std::atomic_ref<uint64_t>(page->commit).load(std::memory_order_acquire);
  }
};

// The pages of one CPU and its counters (the kernel's ring_buffer_per_cpu).
struct CpuBuffer {
  // ---- owner-hot: written only by the owner thread and its handlers ------
  alignas(64) std::atomic<BufferPage*> tail_page{nullptr};  // relaxed: owner only
  // The kernel's `committing` and `commits` in one word, so that W2 is one
  // add and W6 can ask "did any writer enter since I looked?" with one
  // local cmpxchg:
  //   bits  0..15  committing: writers inside W2..W6 on this CPU. It is
  //                also the nesting depth and the busy state (a swap
  //                refuses a busy CPU): a writer leaves it exactly once,
  //                at the end of W6, never to retry. 16 bits: a thread's
  //                stack overflows long before 65535 nested handlers.
  //   bits 16..63  commits: writers that entered W2 and reserved (or
  //                tried to).
  // The split keeps W2's addend (kEnter) a 32-bit immediate.
  Local64 state;
  Local64 write_stamp;  // time of the event that ends at stamp_pos
  Local64 stamp_pos;    // BufferPage::write value at the end of that event
  Local64 tail_seq;     // times the tail moved (upper half of write)
  Local32 in_w5;        // a writer is inside W5
  // Where W6's fast path stores for a reservation the slow path made (and
  // that nobody reads): the store is then harmless, no branch needed.
  uint64_t commit_sink = 0;
  uint32_t capacity = 0;  // data bytes per page (page_size - 16)
  bool overwrite = true;
  Clock clock;
  // Back-pointer to the RingBuffer holding this CPU buffer (W3). Written by
  // swap_cpu on the owner thread (or with no owner), read by the writer.
  std::atomic<RingBuffer*> buffer{nullptr};
  // record_disabled: bit 31 = OFF (idempotent), bit 30 = a swap is
  // exchanging this buffer (kSwapping), bits 0..29 = nestable disable
  // count. Changed by any thread (RingBuffer::change_cpu_disable, swap_cpu).
  std::atomic<uint32_t> record_disabled{0};

  // Writer-side counters (see CpuStats). Owner-written, loaded by anyone.
  alignas(64) Local64 entries;
  Local64 bytes;
  Local64 overrun;
  Local64 commit_overrun;
  Local64 dropped;
  Local64 nested_dropped;
  Local64 disabled;
  Local64 discarded;

  // ---- written by the owner, read by the reader --------------------------
  alignas(64) std::atomic<BufferPage*> commit_page{nullptr};

  // ---- reader-hot: only the reader holding reader_lock --------------------
  alignas(64) std::atomic<int> reader_lock{0};
  BufferPage* reader_page = nullptr;
  std::atomic<BufferPage*> head_page{nullptr};  // hint; writer and reader
  uint32_t reader_read = 0;     // offset of the next unread byte of the reader page
  uint64_t read_stamp = 0;      // time of the event before reader_read
  // Loss bookkeeping of the pages handed out (R2): the overrun before, and
  // the refused mark of, the last page the reader took.
  uint64_t last_overrun = 0;
  uint64_t last_refused = 0;
  uint64_t lost_events = 0;     // not yet reported to a reader
  std::atomic<uint64_t> read{0};  // relaxed: reader-written counter

  // ---- cold ---------------------------------------------------------------
  alignas(64) uint32_t cpu = 0;
  uint32_t page_size = 0;
  uint32_t npages = 0;
  BufferPage* pages = nullptr;  // npages + 1 descriptors

  bool is_reader_page(BufferPage* p) const {
    // The reader page is the one page outside the ring: its prev's next
    // does not point back to it. The writer calls this in W5 for the commit
    // page, which cannot move while the writer is in flight; the answer can
    // only change from false to true under it (the reader takes the commit
    // page), see docs/DESIGN.md (W5, "commit on the reader page").
    // acquire: pairs with the release store of prev in get_reader_page (R3),
    // so a prev written by a splice comes with the links written before it.
    BufferPage* prev = p->prev.load(std::memory_order_acquire);
    return page_of(prev->next.load(std::memory_order_relaxed)) != p;
  }

  // Events refused at the tail and lost to the reader (not `disabled`,
  // which readers are not told about).
  uint64_t refused_total() const {
    return commit_overrun.load() + dropped.load() + nested_dropped.load();
  }
  // record_disabled bits (bits 0..29 are the nestable disable count).
  static constexpr uint32_t kRecordOff = 1u << 31;  // record_off_cpu
  // Set by swap_cpu (S3) while it exchanges this buffer: W1 refuses, other
  // swaps refuse, and record_disable_cpu & co. wait for it to clear, so a
  // disable lands on the buffer that is in the slot after the swap.
  static constexpr uint32_t kSwapping = 1u << 30;

  static constexpr uint64_t kEnter = (1ULL << 16) | 1;  // W2's add to `state`
  static constexpr uint32_t level_of(uint64_t st) { return static_cast<uint16_t>(st); }
  uint32_t committing() const { return level_of(state.load()); }

  CpuStats stats() const;
  void set_commit_to_write();
  // W6, general: the loop below. Also ends refused and discarded writes.
  RBTRACE_SLOW void end_commit();
};

// Per-thread CPU bindings. Plain data (no destructor), initial-exec TLS, so
// reading it is one load relative to the thread pointer and is safe in a
// signal handler. Cleanup at thread exit goes through a pthread key.
struct ThreadBinding {
  uint32_t rb_id;
  int32_t cpu;
  // buffers_[cpu] of that buffer, cached: it changes only in swap_cpu,
  // which runs on this thread (and updates it) or while nobody owns the
  // slot; a stale value is caught by W3 and refreshed.
  CpuBuffer* cb;
};
inline constexpr int kMaxBindingsPerThread = 8;
struct ThreadState {
  int32_t tid;
  uint8_t count;
  bool key_set;
  // Set when the thread's slots were released at exit (the pthread key's
  // destructor): a signal handler or a later destructor that writes then
  // is refused (-EBUSY, counted in no_cpu_dropped) rather than claiming a
  // slot that nothing would give back.
  bool exiting;
  // The thread is changing its bindings (claim, bind, unbind, exit). A
  // signal handler that would claim a slot meanwhile is refused (-EBUSY,
  // counted in no_cpu_dropped): its binding would go into the entry the
  // interrupted change is filling.
  bool changing;
  // Claims of this thread that found no free slot; every 64th (from the
  // first) takes back the slots of exited threads (claim_cpu).
  uint32_t claim_failures;
  ThreadBinding bindings[kMaxBindingsPerThread];
};
// constinit: the definition is constant-initialized, so the compiler emits
// no TLS wrapper call (or check for one) on the writer's path.
extern constinit thread_local ThreadState tls_state __attribute__((tls_model("initial-exec")));

// Writes the header of a data event of `evlen` bytes (data_event_size) at
// p with time delta d; returns the payload pointer.
RBTRACE_ALWAYS_INLINE unsigned char* write_data_header(unsigned char* p, uint32_t evlen,
                                                       uint32_t d) {
  if (evlen - 4 <= kMaxSmallData) {
    store_u32(p, make_event_word((evlen - 4) / 4, d));
    return p + 4;
  }
  store_u32(p, make_event_word(0, d));
  store_u32(p + 4, evlen - 4);
  return p + 8;
}

inline int32_t thread_cpu(uint32_t rb_id) {
  ThreadState& t = tls_state;
  // Most threads write into one buffer: its binding is the first one.
  if (RBTRACE_LIKELY(t.count != 0 && t.bindings[0].rb_id == rb_id)) return t.bindings[0].cpu;
  for (int i = 0; i < t.count; i++) {
    if (t.bindings[i].rb_id == rb_id) return t.bindings[i].cpu;
  }
  return -1;
}

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
  detail::CpuBuffer* cpu = nullptr;
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
  uint32_t ncpus() const { return opts_.ncpus; }
  uint32_t page_size() const { return opts_.page_size; }
  const Clock& clock() const { return clock_; }
  uint32_t id() const { return id_; }
  // Largest payload one event can carry (the smallest is kMinPayload).
  uint32_t max_payload() const { return max_payload_; }

  // ---- CPU slots -----------------------------------------------------------
  // Binds the calling thread to `cpu`. 0, -EINVAL (no such CPU), -EBUSY
  // (owned by another thread, or the calling thread is exiting), -ENOSPC
  // (thread bound to too many buffers).
  int bind_thread(uint32_t cpu);
  // Gives the calling thread's slot back (also done at thread exit).
  void unbind_thread();
  // The calling thread's CPU, or -1.
  int current_cpu() const { return detail::thread_cpu(id_); }
  // Thread id owning `cpu`, 0 if none (-1 while claimed by claim_cpu_for or
  // an Iterator).
  int32_t cpu_owner(uint32_t cpu) const;
  // Claims the free slot `cpu` on behalf of a thread that will not write to
  // it (the snapshot marshalling runs swap_cpu on an unowned CPU this way):
  // while claimed no thread can bind or claim the slot, so no writer runs on
  // it. Any thread. 0, -EINVAL (no such CPU), -EBUSY (owned or claimed).
  // Every successful claim is followed by one release_cpu_for(cpu).
  int claim_cpu_for(uint32_t cpu) {
    if (cpu >= opts_.ncpus) return -EINVAL;
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
    if (cpu < opts_.ncpus) owners_[cpu].store(0, std::memory_order_release);
  }
  // In a forked child (called by rbtrace's pthread_atfork handler): slots
  // of the forking thread move to its new tid, all others are freed, and
  // the CPU buffers are emptied (see "fork()" at the top of this file).
  void after_fork_in_child(int32_t old_tid, int32_t new_tid);
  // Events refused because no CPU slot was free (or the writing thread was
  // exiting, its slots already given back).
  uint64_t no_cpu_dropped() const { return no_cpu_.load(std::memory_order_relaxed); }

  // ---- writer --------------------------------------------------------------
  // W1..W5. On failure the Reservation is empty and err says why; the
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
    return (record_disabled_.load(std::memory_order_relaxed) & ~kSlowClock) == 0;
  }
  int record_disable_cpu(uint32_t cpu);
  int record_enable_cpu(uint32_t cpu);
  int record_off_cpu(uint32_t cpu);
  int record_on_cpu(uint32_t cpu);

  // ---- reader ---------------------------------------------------------------
  // A page to trade with read_page; free it with free_read_page. Null on
  // ENOMEM.
  DataPage* alloc_read_page() const;
  static void free_read_page(DataPage* p);

  // R1..R4. Hands back in *page the CPU's oldest committed data. If the
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

  // Event-level reading of the reader page. peek leaves the event in place;
  // consume removes it. 0 or -EAGAIN (nothing to read) / -EINVAL. `lost`
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
  // Returns 0; -EINVAL (no such CPU in both, or geometry differs); -EAGAIN
  // (either buffer record-disabled); -EBUSY (a writer is inside W2..W6 on
  // either buffer, or a reader holds either buffer's reader lock).
  int swap_cpu(RingBuffer& other, uint32_t cpu);
  // The CPU buffer currently in slot `cpu` (for tests and the snapshot
  // engine). Null for a bad CPU.
  detail::CpuBuffer* cpu_buffer(uint32_t cpu) const;
  // Empties CPU `cpu`: pages, counters. Only with no writer and no reader
  // (e.g. a swapped-out buffer). 0 or -EINVAL. Record-disable state stays.
  int reset_cpu(uint32_t cpu);

 private:
  static constexpr uint32_t kRecordOff = 1u << 31;
  // Adds `add` to the disable count of the CPU buffer in slot `cpu`, or sets
  // (`off` > 0) / clears (`off` < 0) its OFF bit, waiting out a swap that
  // is exchanging it (kSwapping); see record_disable_cpu.
  int change_cpu_disable(uint32_t cpu, int add, int off);
  // Not a disable: set for good in record_disabled_ when the clock is not
  // the CPU counter, so that W1's one test also sends those writes to the
  // slow path (the fast path reads the counter without asking which clock).
  static constexpr uint32_t kSlowClock = 1u << 30;
  RingBuffer() = default;

  int32_t claim_cpu();
  // Frees the slots whose owner thread no longer exists (claim_cpu, when
  // no slot is free: the first time and every 64th time per thread).
  // Returns how many.
  RBTRACE_COLD uint32_t reclaim_dead_slots();
  // claim_cpu's search, with the thread marked as changing its bindings.
  int32_t claim_free_cpu(int32_t tid);
  // W0's cold half: the calling thread's binding beyond the first, else a
  // claimed slot (claim_cpu); -1 when none is free.
  RBTRACE_COLD int32_t find_or_claim_cpu();
  // W3's refusals (swapped away, or nesting too deep): undoes W2, counts,
  // returns the failed Reservation.
  RBTRACE_COLD Reservation leave_refused(detail::CpuBuffer* cb);
  // W1's refusal (record disabled): counts it in `disabled` of the buffer
  // in the slot, which is not `cb` when a swap ran in a handler between W0
  // and W1 (cb then belongs to the other RingBuffer), and returns -EPERM.
  RBTRACE_COLD Reservation refuse_disabled(detail::CpuBuffer* cb);
  // A reservation the fast path made at B, handed to reserve_slow.
  struct ReserveState {
    detail::BufferPage* tp;
    uint64_t w, ts, delta, end;
  };
  // W0's cold half, then reserve_on.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_unbound(uint32_t length);
  // W1..W4b on CPU buffer `cb` (the fast path; the cold paths below for
  // the rest).
  template <class Hooks>
  RBTRACE_ALWAYS_INLINE Reservation reserve_on(detail::CpuBuffer* cb, uint32_t length);
  // W1 found a bit set: refuse (disabled), or, for a clock other than the
  // counter, the whole write on the slow path.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_w1_slow(detail::CpuBuffer* cb, uint32_t length);
  // W3's second half on the slow path (a nested writer, or any writer of a
  // ring whose clock is not the counter): the depth check, then
  // reserve_slow. `entered` is the state after W2.
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_entered(detail::CpuBuffer* cb, uint64_t entered,
                                           uint32_t length);
  template <class Hooks>
  RBTRACE_SLOW Reservation reserve_slow(detail::CpuBuffer* cb, uint32_t level,
                                        uint32_t length, const ReserveState* resume);
  template <class Hooks>
  RBTRACE_COLD int move_tail(detail::CpuBuffer* cb, detail::BufferPage* tp, uint32_t tail,
                uint32_t cpu);
  detail::BufferPage* get_reader_page(detail::CpuBuffer* cb);
  detail::BufferPage* find_head(detail::CpuBuffer* cb);
  detail::CpuBuffer* lock_reader(uint32_t cpu);
  static void unlock_reader(detail::CpuBuffer* cb);
  int next_event(uint32_t cpu, PageEvent* ev, uint64_t* lost, bool consume);
  void init_cpu_buffer(detail::CpuBuffer* cb);
  friend class Iterator;

  Options opts_;
  Clock clock_;
  uint32_t id_ = 0;
  uint32_t max_payload_ = 0;
  // Global record_disabled: bit 31 OFF, bits 0..30 nestable count.
  alignas(64) std::atomic<uint32_t> record_disabled_{0};
  std::unique_ptr<std::atomic<detail::CpuBuffer*>[]> buffers_;
  std::unique_ptr<std::atomic<int32_t>[]> owners_;
  // The CPU buffers are owned by the slot they are in, not by the
  // RingBuffer that made them: swap_cpu exchanges them, and each
  // RingBuffer frees the ones in its slots when it is destroyed (as the
  // kernel's ring_buffer_free does). So a live buffer outlives the spare
  // it swapped with.
  uint32_t max_payload_span_ = 0;  // max_payload_ - kMinPayload
  alignas(64) std::atomic<uint64_t> no_cpu_{0};
  std::atomic<const PageHook*> page_hook_{nullptr};  // see set_page_hook
};

// ===========================================================================
// Writer fast path (inline).
// ===========================================================================

template <class Hooks>
Reservation RingBuffer::reserve(uint32_t length) {
  using namespace detail;
  // One compare for both too short and too long (below kMinPayload the
  // subtraction wraps past the span); none
  // for a constant length that fits the smallest page.
  if (!(__builtin_constant_p(length) && length >= kMinPayload && length <= kMinMaxPayload) &&
      RBTRACE_UNLIKELY(length - kMinPayload > max_payload_span_)) {
    Reservation r;
    r.err = -EINVAL;
    return r;
  }
  // W0: the thread's first binding; other bindings and the first event of a
  // thread (which claims a slot) take the cold path. bindings[0].rb_id is 0
  // (no buffer has id 0) whenever the thread has no binding.
  const ThreadBinding& b0 = tls_state.bindings[0];
  if (RBTRACE_UNLIKELY(b0.rb_id != id_)) return reserve_unbound<Hooks>(length);
  return reserve_on<Hooks>(b0.cb, length);
}

template <class Hooks>
Reservation RingBuffer::reserve_unbound(uint32_t length) {
  const int32_t cpu = find_or_claim_cpu();
  if (cpu < 0) {
    Reservation r;
    r.err = -EBUSY;
    return r;
  }
  return reserve_on<Hooks>(buffers_[cpu].load(std::memory_order_relaxed), length);
}

template <class Hooks>
Reservation RingBuffer::reserve_on(detail::CpuBuffer* cb, uint32_t length) {
  using namespace detail;
  Reservation r;
  Hooks::at(HookPoint::kAfterW0, *this, cb->cpu);
  // W1: record_disabled, global then per CPU. relaxed: a disable that is not
  // seen yet is ordered by the swap's own check (S3) or is simply late, as
  // in the kernel. The global word also carries kSlowClock.
  if (RBTRACE_UNLIKELY((record_disabled_.load(std::memory_order_relaxed) |
                        cb->record_disabled.load(std::memory_order_relaxed)) != 0))
    return reserve_w1_slow<Hooks>(cb, length);
  Hooks::at(HookPoint::kAfterW1, *this, cb->cpu);

  // W2: enter: committing++ and commits++ in one add. From here until the
  // end of W6 the CPU buffer is busy (committing != 0), across every W5
  // retry and every turn of W6: a swap (S3) refuses it.
  const uint64_t entered = cb->state.add_return(CpuBuffer::kEnter);
  signal_fence();  // W2 before W3, against a swap run by a handler

  // W3: a swap that ran between W1 and W2 moved cb to the other buffer.
  if (RBTRACE_UNLIKELY(cb->buffer.load(std::memory_order_relaxed) != this))
    return leave_refused(cb);
  // A nested writer (committing was not 0) takes the slow path, which also
  // refuses nesting deeper than kMaxNesting.
  if (!RBTRACE_ALMOST_ALWAYS(CpuBuffer::level_of(entered) == 1))
    return reserve_entered<Hooks>(cb, entered, length);
  Hooks::at(HookPoint::kAfterW3, *this, cb->cpu);

  // W4, fast path: one try, no time event. (A) the position, the clock, the
  // last stamp pair.
  const uint32_t evlen = data_event_size(length);
  BufferPage* tp = cb->tail_page.load(std::memory_order_relaxed);
  const uint64_t w = tp->write.load();
  signal_fence();
  const uint64_t ts = read_cpu_counter();  // kSlowClock sent the others away
  const uint64_t prev_ts = cb->write_stamp.load();
  const uint64_t prev_pos = cb->stamp_pos.load();
  signal_fence();
  const uint64_t delta = ts - prev_ts;
  // The predecessor's stamp is known for sure (stamp_pos == w,
  // docs/DESIGN.md "Time stamps") and the delta fits the header. A clock
  // read older than write_stamp wraps delta past the mask and takes the
  // slow path, which clamps it. stamp_pos == w also means w is not a page
  // start (stamp_pos is an event's end or ~0), so this is never a page's
  // first event.
  if (RBTRACE_ALMOST_ALWAYS(prev_pos == w && delta <= kTsDeltaMask)) {
    const uint64_t end = tp->write.add_return(evlen);  // B
    // Not interrupted between A and B (start == w), and the page has room.
    // The low half cannot wrap: it is at most capacity plus one event per
    // nesting level (refused writers take their bytes back, W5).
    if (RBTRACE_ALMOST_ALWAYS(end - evlen == w && static_cast<uint32_t>(end) <= cb->capacity)) {
      // W4b: count the event (on its page and on the CPU), write its
      // header, publish the stamp pair for the next writer.
      DataPage* const dp = tp->page;
      tp->entries.inc();
      cb->entries.inc();
      cb->bytes.add(length);
      unsigned char* p = dp->data + static_cast<uint32_t>(w);
      r.data = write_data_header(p, evlen, static_cast<uint32_t>(delta));
      cb->write_stamp.store(ts);
      signal_fence();
      cb->stamp_pos.store(end);
      r.length = length;
      r.level = 0;
      r.entered = entered;
      r.commit_word = &dp->commit;
      r.commit_end = static_cast<uint32_t>(end);
      r.cpu = cb;
      r.page = tp;
      r.event_offset = static_cast<uint32_t>(w);
      r.total = evlen;
      return r;
    }
    // Interrupted between A and B, or the page is full: the slow path
    // carries on from this reservation.
    const ReserveState st{tp, w, ts, delta, end};
    return reserve_slow<Hooks>(cb, 1, length, &st);
  }
  return reserve_slow<Hooks>(cb, 1, length, nullptr);
}

template <class Hooks>
Reservation RingBuffer::reserve_entered(detail::CpuBuffer* cb, uint64_t entered,
                                        uint32_t length) {
  using namespace detail;
  const uint32_t level = CpuBuffer::level_of(entered);
  if (level > kMaxNesting) return leave_refused(cb);
  Hooks::at(HookPoint::kAfterW3, *this, cb->cpu);
  return reserve_slow<Hooks>(cb, level, length, nullptr);
}

template <class Hooks>
Reservation RingBuffer::reserve_w1_slow(detail::CpuBuffer* cb, uint32_t length) {
  using namespace detail;
  if (((record_disabled_.load(std::memory_order_relaxed) & ~kSlowClock) |
       cb->record_disabled.load(std::memory_order_relaxed)) != 0)
    return refuse_disabled(cb);
  // A clock other than the counter: every write takes the slow path. W2
  // and W3 as in reserve_on.
  Hooks::at(HookPoint::kAfterW1, *this, cb->cpu);
  const uint64_t entered = cb->state.add_return(CpuBuffer::kEnter);
  signal_fence();
  if (cb->buffer.load(std::memory_order_relaxed) != this) return leave_refused(cb);
  return reserve_entered<Hooks>(cb, entered, length);
}

// W4/W5 in full: time extends and absolute stamps, nested writers, page
// crossings, interruptions between A and B. `resume`, when set, is a
// reservation the fast path already made (B done, no time event).
template <class Hooks>
Reservation RingBuffer::reserve_slow(detail::CpuBuffer* cb, uint32_t level,
                                     uint32_t length, const ReserveState* resume) {
  using namespace detail;
  Reservation r;
  const uint32_t cpu = cb->cpu;
  const uint32_t evlen = data_event_size(length);
  for (uint32_t tries = 0;;) {
    // W4: read the position (A), the clock, the last stamp; reserve (B).
    BufferPage* tp;
    uint64_t w, ts, delta = 0, end;
    uint32_t kind;  // 0 = delta in the header, 1 = time extend, 2 = absolute stamp
    if (resume) {
      tp = resume->tp;
      w = resume->w;
      ts = resume->ts;
      delta = resume->delta;
      end = resume->end;
      kind = 0;
      resume = nullptr;
    } else {
      tp = cb->tail_page.load(std::memory_order_relaxed);
      w = tp->write.load();
      signal_fence();
      ts = cb->clock.now();
      const uint64_t prev_ts = cb->write_stamp.load();
      const uint64_t prev_pos = cb->stamp_pos.load();
      signal_fence();
      if (ts < prev_ts) ts = prev_ts;  // never backwards
      // A nested writer, or one whose predecessor's stamp is not known for
      // sure (stamp_pos != our start), writes an absolute stamp.
      if (level > 1) {
        kind = 2;
      } else if (static_cast<uint32_t>(w) == 0) {
        kind = 0;  // first event of the page: the page's time stamp
      } else if (prev_pos != w) {
        kind = 2;
      } else {
        delta = ts - prev_ts;
        kind = delta > kTsDeltaMask ? 1 : 0;
      }
      end = tp->write.add_return(evlen + (kind ? kTimeEventSize : 0));  // B
    }
    const uint32_t total = evlen + (kind ? kTimeEventSize : 0);
    const uint64_t start = end - total;
    const uint32_t tail = static_cast<uint32_t>(start);
    if (static_cast<uint32_t>(end) > cb->capacity) {
      // W5: the page is full. Pad, move the tail, retry.
      int rc = move_tail<Hooks>(cb, tp, tail, cpu);
      if (RBTRACE_LIKELY(rc == 0 && ++tries < 1000)) {
        Hooks::at(HookPoint::kW5Retry, *this, cpu);
        continue;
      }
      if (rc == 0) {
        cb->nested_dropped.inc();
        rc = -ENOSPC;
      } else if (tail >= cb->capacity) {
        // Refused, and we were not the writer that crossed the page end:
        // take our bytes back off the write index, as the kernel's
        // rb_reset_tail does. Otherwise every refusal on a full buffer
        // (producer/consumer with a stalled reader) grows it until its low
        // half wraps and a later reservation lands inside the full page.
        // Handlers that interrupt us do the same, so the index stays put.
        tp->write.sub(total);
      }
      cb->end_commit();
      r.err = rc;
      return r;
    }
    tp->entries.inc();
    unsigned char* p = tp->page->data + tail;
    const bool interrupted = start != w;
    if (interrupted) {
      // Handlers reserved between A and B: our predecessor is theirs and
      // our clock read is older than theirs. With a time slot, write a
      // fresh absolute stamp; without one, delta 0 (the predecessor's time).
      ts = cb->clock.now();
      const uint64_t last = cb->write_stamp.load();
      if (ts < last) ts = last;
      if (kind) kind = 2;
      delta = 0;
      signal_fence();
      if (kind && tp->write.load() != end) {
        // And a handler reserved after us before that clock read: it
        // follows us in the buffer with an older time than `ts`. Take the
        // predecessor's time instead (a time extend of 0), as the kernel
        // does when interrupted between C and E.
        kind = 1;
      }
    }
    if (tail == 0) {
      // First event of the page: its time is the page's time stamp.
      tp->page->time_stamp = ts;
      delta = 0;
    }
    if (kind) {
      const uint64_t v = kind == 2 ? ts : delta;
      store_u32(p, make_event_word(kind == 2 ? kTypeTimeStamp : kTypeTimeExtend,
                                   static_cast<uint32_t>(v & kTsDeltaMask)));
      store_u32(p + 4, static_cast<uint32_t>(v >> kTsShift));
      p += kTimeEventSize;
      delta = 0;
    }
    r.data = write_data_header(p, evlen, static_cast<uint32_t>(delta));
    if (!interrupted || kind == 2 || tail == 0) {
      // Our time is known (ts): publish it for the next writer. The pair is
      // valid only if stamp_pos equals that writer's start (docs/DESIGN.md,
      // W4 "time stamps"); a handler that interleaves here leaves a pair
      // that no later start matches, which forces an absolute stamp.
      cb->write_stamp.store(ts);
      signal_fence();
      cb->stamp_pos.store(end);
    }
    cb->entries.inc();
    cb->bytes.add(length);
    r.length = length;
    r.level = static_cast<uint8_t>(level - 1);
    r.commit_word = &cb->commit_sink;  // W6 takes the general loop (entered 0)
    r.cpu = cb;
    r.page = tp;
    r.event_offset = static_cast<uint32_t>(p - tp->page->data);
    r.total = total;
    return r;
  }
}

template <class Hooks>
void RingBuffer::commit(const Reservation& r) {
  using namespace detail;
  CpuBuffer* cb = r.cpu;
  Hooks::at(HookPoint::kBeforeCommit, *this, cb->cpu);
  // W6, fast path. r.entered is our state after W2 if the fast path made
  // the reservation (else 0, which no state in W6 equals). If the state
  // still equals it, no writer has entered since our W2: we are the
  // outermost writer (W3 checked) and nothing moved since. Before our W2 no
  // writer was in flight, so the last one to leave had set the commit to
  // the write position (end_commit), leaving the commit page equal to the
  // tail page; since then only we reserved, on that page, without
  // crossing. So the commit belongs at our end (r.commit_end), which is
  // within real_end (the page was not closed: end <= capacity held).
  //
  // The store comes first, the check after, in the cmpxchg that leaves
  // (committing--) only if the state is still r.entered. If a handler
  // entered meanwhile, the store was still safe: handlers that find us in
  // flight never move the commit, so the commit page is still our page,
  // its commit was at most our start, and our end is at most its write
  // index and real_end. The cmpxchg then fails, we are still in flight and
  // take the general loop, which moves the commit past the handlers'
  // events. For a slow-path reservation the store goes to a dummy word and
  // the cmpxchg fails (entered 0).
  Hooks::at(HookPoint::kW6Fast, *this, cb->cpu);
  // release: publishes our event; pairs with BufferPage::commit_acquire.
  std::atomic_ref<uint64_t>(*r.commit_word).store(r.commit_end, std::memory_order_release);
  signal_fence();
  Hooks::at(HookPoint::kW6Leave, *this, cb->cpu);
  if (RBTRACE_ALMOST_ALWAYS(cb->state.cmpxchg_ok(r.entered, r.entered - 1))) return;
  cb->end_commit();
}

inline int RingBuffer::write(const void* data, uint32_t length) {
  Reservation r = reserve(length);
  if (!r) return r.err;
  std::memcpy(r.data, data, length);
  commit(r);
  return 0;
}

// ===========================================================================
// W5: page crossing (slow path; a template so test hook policies reach it)
// ===========================================================================

template <class Hooks>
int RingBuffer::move_tail(detail::CpuBuffer* cb, detail::BufferPage* tp, uint32_t tail,
                          uint32_t cpu) {
  using namespace detail;
  // W5a: the writer whose reservation straddles the page end owns
  // [tail, capacity): it pads and records where the events end. Every later
  // reservation on this page starts at or past capacity.
  if (tail < cb->capacity) {
    if (cb->capacity - tail >= kEventHeaderSize)
      store_u32(tp->page->data + tail, make_event_word(kTypePadding, 0));
    tp->real_end.store(tail);
  }
  if (cb->in_w5.load() != 0) {
    // A handler interrupted a writer inside W5 and must cross a page too.
    // Forbidding this keeps W5 free of writer-writer races (DESIGN.md).
    cb->nested_dropped.inc();
    return -ENOSPC;
  }
  cb->in_w5.store(1);
  signal_fence();
  Hooks::at(HookPoint::kInW5, *this, cpu);
  if (tp != cb->tail_page.load(std::memory_order_relaxed)) {
    // A handler moved the tail between our A and now: just retry.
    signal_fence();
    cb->in_w5.store(0);
    return 0;
  }
  for (int spins = 0;; spins++) {
    // acquire: pairs with the release CAS in get_reader_page (R2), which
    // publishes the reset state of the page the reader put into the ring.
    const uintptr_t nx = tp->next.load(std::memory_order_acquire);
    BufferPage* next = page_of(nx);
    BufferPage* commit = cb->commit_page.load(std::memory_order_relaxed);  // owner-written
    if (RBTRACE_UNLIKELY(next == commit)) {
      // The tail lapped the commit page: nested writers filled the whole
      // ring while an outer writer is uncommitted.
      cb->commit_overrun.inc();
      signal_fence();
      cb->in_w5.store(0);
      return -ENOSPC;
    }
    if (flags_of(nx) == kPageHead) {
      if (cb->is_reader_page(commit)) {
        if (tp == commit) {
          // tp is the reader page, and a reader page's next never carries
          // HEAD (when the reader takes a page, the flag is on the pointer
          // *to* it). So nx was loaded while tp was still in the ring, and
          // the reader has since taken the head and then tp itself. Acting
          // on the stale nx would move the tail past the real head and let
          // the commit walk over a page the tail never entered. Look again:
          // tp->next is NORMAL now and names the (empty) head.
          if (spins < 1000) continue;
        }
        // The tail went round the ring while the commit is still on the
        // reader page: moving on would overwrite what the commit has not
        // reached.
        cb->commit_overrun.inc();
        signal_fence();
        cb->in_w5.store(0);
        return -ENOSPC;
      } else if (!cb->overwrite) {
        cb->dropped.inc();  // producer/consumer: full, drop the newest
        signal_fence();
        cb->in_w5.store(0);
        return -ENOSPC;
      } else {
        // Overwrite: push the head page forward. HEAD -> UPDATE claims the
        // head page against the reader's R2 CAS on the same word.
        uintptr_t expected = link(next, kPageHead);
        // acq_rel: pairs with the reader's CAS in get_reader_page on this
        // word; on success we own `next` (its counters are final).
        if (!tp->next.compare_exchange_strong(expected, link(next, kPageUpdate),
                                              std::memory_order_acq_rel,
                                              std::memory_order_acquire)) {  // see above
          // The reader swapped the head out first: tp->next is now its
          // spare page. Look again.
          if (spins > 1000) sched_yield();
          continue;
        }
        cb->overrun.add(next->entries.load());
        BufferPage* new_head = page_of(next->next.load(std::memory_order_relaxed));
        // The overrun before new_head's events, for the reader that takes
        // it (R2, DESIGN.md section 5): valid while new_head keeps this
        // content (the tail sequence number it had when the tail entered
        // it). Published by the release store of HEAD below.
        new_head->push_mark.store(cb->overrun.load());
        new_head->push_seq.store(new_head->write.load() >> 32);
        // release: the new HEAD flag and the marks above; pairs with the
        // acquire loads in find_head and the acquire of the reader's R2
        // CAS. Nobody else writes this word while it is NORMAL.
        next->next.store(link(new_head, kPageHead), std::memory_order_release);
        cb->head_page.store(new_head, std::memory_order_relaxed);  // a hint
        // release: UPDATE -> NORMAL after the new head is marked; pairs with
        // the acquire loads in find_head.
        tp->next.store(link(next, kPageNormal), std::memory_order_release);
      }
    }
    // W5b: move the tail into `next`. It is empty for us: either the page
    // we just pushed out, or a page behind the head.
    const uint64_t seq = cb->tail_seq.add_return(1);
    next->write.store(seq << 32);
    next->entries.store(0);
    next->real_end.store(cb->capacity);
    next->page->time_stamp = 0;
    std::atomic_ref<uint64_t>(next->page->commit).store(0, std::memory_order_relaxed);
    signal_fence();  // the page is reset before handlers can reach it
    cb->tail_page.store(next, std::memory_order_relaxed);
    signal_fence();
    // The refusals before the page's first event (DESIGN.md section 5).
    // After the tail store: a handler refused before it would have written
    // on this page; one refused after it (still in W5, so it was crossing
    // this new page) belongs to the next page, and is counted after the
    // mark. The reader loads it after an acquire that follows the release
    // of commit_page past this page (R2), or of the HEAD flag.
    next->refused_mark.store(cb->refused_total());
    signal_fence();
    cb->in_w5.store(0);
    // acquire: pairs with the release store in set_page_hook.
    if (const PageHook* h = page_hook_.load(std::memory_order_acquire); RBTRACE_UNLIKELY(h))
      h->fn(h->arg, cpu);
    return 0;
  }
}

}  // namespace rbtrace
