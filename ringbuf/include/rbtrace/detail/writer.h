// rbtrace/detail/writer.h - the writer, inline: W0..W6 of docs/DESIGN.md
// section 4, top to bottom in the order it tells them. The fast path
// (reserve, reserve_fast, commit) is inlined into the caller; the paths it
// leaves for (reserve_first, reserve_flagged, reserve_nested, reserve_full,
// move_tail) are out of line. Refusals that need no template (W1, W3), the
// general W6 (end_commit) and discard are in ringbuf/src/writer.cc.
//
// Part of rbtrace/ring_buffer.h, which includes it at its end (include that).
#pragma once

#include <sched.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "rbtrace/detail/hints.h"
#include "rbtrace/detail/layout.h"
#include "rbtrace/detail/local.h"
#include "rbtrace/format.h"
#include "rbtrace/ring_buffer.h"

namespace rbtrace {

// ===========================================================================
// W0: find the CPU.
// ===========================================================================

namespace detail {

// The calling thread's CPU in ring buffer `rb_id`, or -1: W0 for any of the
// thread's bindings (current_cpu, find_or_claim_cpu).
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
  if (RBTRACE_UNLIKELY(b0.rb_id != id_)) return reserve_first<Hooks>(length);
  return reserve_fast<Hooks>(b0.cb, length);
}

inline int RingBuffer::current_cpu() const { return detail::thread_cpu(id_); }

template <class Hooks>
Reservation RingBuffer::reserve_first(uint32_t length) {
  const int32_t cpu = find_or_claim_cpu();
  if (cpu < 0) {
    Reservation r;
    r.err = -EBUSY;
    return r;
  }
  return reserve_fast<Hooks>(buffers_[cpu].load(std::memory_order_relaxed), length);
}

// ===========================================================================
// W1..W4b: the fast path (inline).
// ===========================================================================

namespace detail {

// W4b's header: writes the header of a data event of `evlen` bytes
// (data_event_size) at p with time delta d; returns the payload pointer.
// The fast path and reserve_full share it.
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

}  // namespace detail

template <class Hooks>
Reservation RingBuffer::reserve_fast(detail::CpuBuffer* cb, uint32_t length) {
  using namespace detail;
  Hooks::at(HookPoint::kAfterW0, *this, cb->cpu);
  // W1: record_disabled, global then per CPU. relaxed: a disable that is not
  // seen yet is ordered by the swap's own check (S3) or is simply late, as
  // in the kernel. The global word also carries kOtherClock: a ring whose
  // clock is not the counter (and nothing else set) takes the same fast
  // path with its own clock read (reserve_entered<Hooks, false>), inlined
  // here behind the taken branch: the counter's path is unchanged.
  const uint32_t flags = record_disabled_.load(std::memory_order_relaxed) |
                         cb->record_disabled.load(std::memory_order_relaxed);
  if (RBTRACE_UNLIKELY(flags != 0)) {
    // kOtherClock alone: the global word holds nothing else and the CPU's
    // word nothing at all (it never has kOtherClock's bit; static_assert
    // in ring_buffer.cc).
    if (flags != kOtherClock) return reserve_flagged<Hooks>(cb, length);
    Hooks::at(HookPoint::kAfterW1, *this, cb->cpu);
    return reserve_entered<Hooks, false>(cb, length);
  }
  Hooks::at(HookPoint::kAfterW1, *this, cb->cpu);
  return reserve_entered<Hooks, true>(cb, length);
}

// W2..W4b. kCounterClock: the ring's clock is the CPU counter (read inline);
// otherwise cb->clock.now_posix() (a vDSO clock_gettime on the clock id the
// ring cached), the protocol the same.
template <class Hooks, bool kCounterClock>
Reservation RingBuffer::reserve_entered(detail::CpuBuffer* cb, uint32_t length) {
  using namespace detail;
  Reservation r;
  // W2: enter: committing++ and commits++ in one add. From here until the
  // end of W6 the CPU buffer is busy (committing != 0), across every W5
  // retry and every turn of W6: a swap (S3) refuses it.
  const uint64_t entered = cb->state.add_return(CpuBuffer::kEnter);
  signal_fence();  // W2 before W3, against a swap run by a handler
  Hooks::at(HookPoint::kAfterW2, *this, cb->cpu);

  // W3: a swap that ran between W1 and W2 moved cb to the other buffer.
  if (RBTRACE_UNLIKELY(cb->buffer.load(kW3Order) != this))  // kW3Order: see local.h
    return refuse_moved(cb, entered);
  // A nested writer (committing was not 0) takes the slow path, which also
  // refuses nesting deeper than kMaxNesting.
  if (!RBTRACE_ALMOST_ALWAYS(CpuBuffer::level_of(entered) == 1))
    return reserve_nested<Hooks>(cb, entered, length);
  Hooks::at(HookPoint::kAfterW3, *this, cb->cpu);

  // W4, fast path: one try, no time event. (A) the position, the clock, the
  // last stamp pair.
  const uint32_t evlen = data_event_size(length);
  BufferPage* tp = cb->tail_page.load(std::memory_order_relaxed);
  const uint64_t w = tp->write.load();
  signal_fence();
  const uint64_t ts = kCounterClock ? read_cpu_counter() : cb->clock.now_posix();
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
      r.cpu_buffer = cb;
      r.page = tp;
      r.event_offset = static_cast<uint32_t>(w);
      r.total = evlen;
      return r;
    }
    // Interrupted between A and B, or the page is full: the slow path
    // carries on from this reservation.
    const ReserveState st{tp, w, ts, delta, end};
    return reserve_full<Hooks>(cb, 1, length, &st);
  }
  return reserve_full<Hooks>(cb, 1, length, nullptr);
}

// ===========================================================================
// The paths the fast one leaves for, in W order (slow path; templates so
// that test hook policies reach them).
// ===========================================================================

// W1 found a disable or a swap's mark (beside kOtherClock, if the clock is
// not the counter): a refusal, unless it was cleared since (then the fast
// path, with the ring's clock).
template <class Hooks>
Reservation RingBuffer::reserve_flagged(detail::CpuBuffer* cb, uint32_t length) {
  using namespace detail;
  const uint32_t global = record_disabled_.load(std::memory_order_relaxed);
  if (((global & ~kOtherClock) | cb->record_disabled.load(std::memory_order_relaxed)) != 0)
    return refuse_disabled(cb);
  Hooks::at(HookPoint::kAfterW1, *this, cb->cpu);
  if (global & kOtherClock) return reserve_entered<Hooks, false>(cb, length);
  return reserve_entered<Hooks, true>(cb, length);
}

// W3 for a nested writer: refused beyond
// kMaxNesting, else reserve_full.
template <class Hooks>
Reservation RingBuffer::reserve_nested(detail::CpuBuffer* cb, uint64_t entered,
                                        uint32_t length) {
  using namespace detail;
  const uint32_t level = CpuBuffer::level_of(entered);
  if (level > kMaxNesting) return refuse_too_deep(cb);
  Hooks::at(HookPoint::kAfterW3, *this, cb->cpu);
  return reserve_full<Hooks>(cb, level, length, nullptr);
}

// W4/W5 in full: time extends and absolute stamps, nested writers, page
// crossings, interruptions between A and B. `resume`, when set, is a
// reservation the fast path already made (B done, no time event).
template <class Hooks>
Reservation RingBuffer::reserve_full(detail::CpuBuffer* cb, uint32_t level,
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
    r.cpu_buffer = cb;
    r.page = tp;
    r.event_offset = static_cast<uint32_t>(p - tp->page->data);
    r.total = total;
    return r;
  }
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
    // New content: a push mark from before is no longer this page's (a
    // page that becomes the head by the reader's splice keeps no mark; the
    // 32-bit sequence number in `write` could otherwise match an old one
    // after 2^32 crossings).
    next->push_seq.store(kNoPushSeq);
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

// ===========================================================================
// W6: commit (the fast path inline; the general loop, end_commit, is in
// ringbuf/src/writer.cc).
// ===========================================================================

template <class Hooks>
void RingBuffer::commit(const Reservation& r) {
  using namespace detail;
  CpuBuffer* cb = r.cpu_buffer;
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
  // entered meanwhile, the store was still safe. Handlers that find us in
  // flight never move the commit. So either the commit page is still our
  // page (its commit was at most our start, our end is at most its write
  // index and real_end), or a handler entered between our W2 and our A
  // and crossed a page, leaving the commit page behind ours: then we store
  // the index of a page ahead of the commit page, which no reader reaches
  // before the commit does (the Spin model found this case; see
  // tests/model/ring.pml). The cmpxchg then fails, we are still in flight
  // and take the general loop, which moves the commit past the handlers'
  // events and onto our page. For a slow-path reservation the store goes to a dummy word and
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

}  // namespace rbtrace
