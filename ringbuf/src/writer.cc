// writer.cc - the writer's out-of-line half: the refusals of W1 and W3, the
// general W6 (end_commit, set_commit_to_write) and discard. The rest of the
// writer (W0..W6: the fast path, the reserve paths, W5) is inline, in
// rbtrace/detail/writer.h; docs/DESIGN.md section 4 has the protocol.
#include "rbtrace/ring_buffer.h"
#include "ring_buffer_internal.h"

namespace rbtrace {

using namespace detail;

// ===========================================================================
// Refusals (W1, W3)
// ===========================================================================

// A refusal at W1 or W3: counted in the slot (slot_refused_), never in a
// buffer, since the buffer we looked at may be the requester's now, being
// dumped or reset (a buffer counter is a local op of the owner: a reset
// racing it could lose or double the count). stats() adds the slot's count
// to `disabled`; a snapshot moves it into the generation it swaps out
// (take_slot_refused). The binding is refreshed from the slot for the next
// write. acquire: pairs with swap_cpu's release store of buffers_[cpu]
// (S4/M4), so a buffer swapped in is seen whole before the binding caches
// it. The count is a local add on the slot's own cache line (only the
// slot's owner thread and its handlers refuse on it).
void RingBuffer::count_slot_refusal(CpuBuffer* cb) {
  refresh_binding(id_, cb->cpu, buffers_[cb->cpu].load(std::memory_order_acquire));
  slot_refused_[cb->cpu].count.inc();
}

// W1 refused: the ring or the CPU is record-disabled, or a swap holds
// kSwapping (or held it when W1 looked). Every such refusal is counted in
// the slot: even a disable's. Between W1 and a count in cb, a handler may
// enable the CPU and a doorbell swap take cb out of the slot (the Spin
// model found it: DESIGN.md section 11), and cb's counters are then the
// requester's, read and reset by the snapshot.
Reservation RingBuffer::refuse_disabled(CpuBuffer* cb) {
  Reservation r;
  count_slot_refusal(cb);
  r.err = -EPERM;
  return r;
}

// W3 saw cb moved (the value it loaded decides: a swap without a signal may
// put the back-pointer back at any time, so it is not loaded again). A
// swap moved cb to the other buffer after our W1 (or is moving it: the
// mark, M1, is stored). Leave without reserving. If nobody entered since
// our W2 (the state still equals `entered`), undo W2: only `state` of cb
// was touched (W2's add and this sub, netting 0), which nobody else writes
// after the swap (reset_cpu does not store it). Otherwise a handler passed
// its W3 on cb after our W2 (seeing `this`): only W3's refusals restore the
// state word exactly (its W2's add and its own sub); every other exit (W6,
// a W5 refusal, a discard, this function's own end_commit) follows a W3
// that saw `this`, and leaves commits moved. Such a handler may have
// reserved, or padded and moved the tail in W5, leaving the commit to us.
// That happens with a swap without a signal: our binding (which handlers
// load too) still names cb, and the handler's W3 ran before the mark (M1)
// or after a put-back, while the swap cannot have completed: we have been
// in flight since, and M3 refuses a busy buffer. So cb is still the live
// buffer or its swap's M3 is yet to look; leave as W6 does (end_commit):
// move the commit past the handler's event, then committing--. M3 then
// sees cb busy and puts the mark back, or sees us gone (after M2's barrier
// made our stores visible) and the dump has the event, committed. Found by
// the Spin model (DESIGN.md section 11); remote_swap_test.cc forces it.
Reservation RingBuffer::refuse_moved(CpuBuffer* cb, uint64_t entered) {
  Reservation r;
  if (!cb->state.cmpxchg_ok(entered, entered - CpuBuffer::kEnter)) cb->end_commit();
  count_slot_refusal(cb);
  r.err = -EAGAIN;
  return r;
}

// Nesting deeper than kMaxNesting.
Reservation RingBuffer::refuse_too_deep(CpuBuffer* cb) {
  Reservation r;
  cb->nested_dropped.inc();
  signal_fence();
  cb->state.sub(CpuBuffer::kEnter);
  r.err = -ELOOP;
  return r;
}

// ===========================================================================
// W6, general
// ===========================================================================

// W6, general. Only the outermost writer (committing == 1) moves the
// commit; writers it interrupted never run this concurrently with it: a
// handler sees committing >= 2 while we are in flight and leaves the
// commit to us. We leave (committing--) with a local cmpxchg that fails if
// any writer entered since we loaded the state, i.e. since our
// set_commit_to_write looked at the write position; then we look again.
// Unlike the kernel's loop there is no window with committing == 0 before
// a retry, so committing alone is the busy state (docs/DESIGN.md W6).
void detail::CpuBuffer::end_commit() {
  for (;;) {
    const uint64_t c = state.load();
    signal_fence();
    if (CpuBuffer::level_of(c) == 1) set_commit_to_write();
    signal_fence();
    if (RBTRACE_LIKELY(state.cmpxchg(c, c - 1) == c)) return;
  }
}

void detail::CpuBuffer::set_commit_to_write() {
  BufferPage* cp = commit_page.load(std::memory_order_relaxed);
  for (;;) {
    BufferPage* tp = tail_page.load(std::memory_order_relaxed);
    if (cp == tp) break;
    // The commit leaves cp: its events end at real_end (padding excluded).
    // release: publishes cp's events and header; pairs with the acquire in
    // BufferPage::commit_acquire (read_page, peek, Iterator).
    std::atomic_ref<uint64_t>(cp->page->commit).store(cp->real_end.load(),
                                                      std::memory_order_release);
    cp = page_of(cp->next.load(std::memory_order_relaxed));
    // release: the reader, seeing commit_page move, may take the old page
    // whole; pairs with the acquire loads of commit_page in
    // RingBuffer::get_reader_page and read_page.
    commit_page.store(cp, std::memory_order_release);
  }
  uint32_t idx = static_cast<uint32_t>(cp->write.load());
  uint32_t end = cp->real_end.load();
  if (idx > end) idx = end;
  // release: publishes the events below idx; pairs with
  // BufferPage::commit_acquire.
  std::atomic_ref<uint64_t>(cp->page->commit).store(idx, std::memory_order_release);
}

// ===========================================================================
// Discard
// ===========================================================================

void RingBuffer::discard(const Reservation& r) {
  if (!r) return;
  CpuBuffer* cb = r.cpu_buffer;
  BufferPage* bp = r.page;
  const uint32_t ev = r.event_offset;
  // The reservation began at the time event, if it had one.
  const uint32_t begin = ev - (r.total - data_event_size(r.length));
  const uint64_t w = bp->write.load();
  const uint64_t end = (w & ~0xffffffffULL) | (begin + r.total);
  bp->entries.dec();
  cb->entries.dec();
  cb->bytes.sub(r.length);
  cb->discarded.inc();
  // If nothing was reserved after us, give the space back (local cmpxchg:
  // a handler reserving meanwhile makes it fail).
  if (cb->tail_page.load(std::memory_order_relaxed) != bp || bp->write.cmpxchg(end, end - r.total) != end) {
    // Otherwise the data event becomes padding; a time event in front of it
    // keeps its meaning.
    unsigned char* p = bp->page->data + ev;
    const uint32_t word = load_u32(p);
    const uint32_t size = data_event_size(r.length);
    store_u32(p, make_event_word(kTypePadding, event_time_delta(word)));
    store_u32(p + 4, size - 4);
  }
  cb->end_commit();
}

}  // namespace rbtrace
