// rbtrace/detail/layout.h - the state of a ring buffer: the page ring's
// pointer bits and pages (BufferPage), the CPU buffer (CpuBuffer) and the
// per-thread CPU bindings (ThreadState), with who writes and who reads each
// field. rbtrace/ring_buffer.h includes it (through detail/writer.h); the
// words and the protocol are in docs/DESIGN.md sections 1, 2 and 4..6.
#pragma once

#include <atomic>
#include <cstdint>

#include "rbtrace/clock.h"
#include "rbtrace/detail/hints.h"
#include "rbtrace/detail/local.h"
#include "rbtrace/format.h"

namespace rbtrace {

class RingBuffer;
struct CpuStats;

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
  // record_disabled: bit 31 = OFF (idempotent), bit 29 = a swap is
  // exchanging this buffer (kSwapping), bits 0..28 = nestable disable
  // count (it saturates); bit 30 is never set (it is the ring's kOtherClock
  // in the global word, which W1 ORs with this one). Changed by any thread
  // (RingBuffer::change_cpu_disable, swap_cpu).
  std::atomic<uint32_t> record_disabled{0};

  // Writer-side counters (see CpuStats). Owner-written, loaded by anyone.
  alignas(64) Local64 entries;
  Local64 bytes;
  Local64 overrun;
  Local64 commit_overrun;
  Local64 dropped;
  Local64 nested_dropped;
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
    // page), see docs/DESIGN.md section 6 (the W5 race "with the commit on
    // the reader page") and invariant 4.
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
  // record_disabled bits (bits 0..28 are the nestable disable count).
  static constexpr uint32_t kRecordOff = 1u << 31;  // record_off_cpu
  // Set by swap_cpu (S3) while it exchanges this buffer: W1 refuses, other
  // swaps refuse, and record_disable_cpu & co. wait for it to clear, so a
  // disable lands on the buffer that is in the slot after the swap.
  static constexpr uint32_t kSwapping = 1u << 29;

  static constexpr uint64_t kEnter = (1ULL << 16) | 1;  // W2's add to `state`
  static constexpr uint32_t level_of(uint64_t st) { return static_cast<uint16_t>(st); }
  uint32_t committing() const { return level_of(state.load()); }

  CpuStats stats() const;
  void set_commit_to_write();
  // W6, general: the loop (ringbuf/src/writer.cc). Also ends refused and
  // discarded writes.
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
  // The first 8 bytes are the upper part of the common header word of
  // this thread's typed records (event.h, fill_common: one load): bytes 0-1
  // and 3 zero (the type and the nesting level go there), byte 2 the
  // flags a SignalHandlerScope sets (kFlagSignal), bytes 4-7 the tid.
  uint16_t common_zero;
  uint8_t common_flags;
  uint8_t common_zero2;
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
  // A thread of rbtrace's own (start_library_thread): it never claims a
  // slot (refused -EBUSY, counted in no_cpu_dropped).
  bool library;
  // Claims of this thread that found no free slot; every 64th (from the
  // first) takes back the slots of exited threads (claim_cpu).
  uint32_t claim_failures;
  ThreadBinding bindings[kMaxBindingsPerThread];
  // The thread's copy of the last record peek/consume handed out
  // (reader_copy_buffer); freed at thread exit with the slots.
  unsigned char* copy;
  uint32_t copy_size;
};
static_assert(offsetof(ThreadState, common_flags) == 2 && offsetof(ThreadState, tid) == 4,
              "fill_common reads the first 8 bytes as the common header's upper part");
// constinit: the definition is constant-initialized, so the compiler emits
// no TLS wrapper call (or check for one) on the writer's path.
extern constinit thread_local ThreadState tls_state __attribute__((tls_model("initial-exec")));

}  // namespace detail
}  // namespace rbtrace
