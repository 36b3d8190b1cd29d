// An exhaustive interrupt explorer over the real writer (issue 13, part 3).
//
// A signal handler on the owner thread runs to completion on top of the
// code it interrupted: on one thread that is a nested call. The writer's
// hook points (HookPoint, the Hooks policy of reserve<Hooks>/commit<Hooks>)
// sit in the real code, so a policy that calls a "handler" at the k-th hook
// point reached is exactly a signal delivered there, without a signal.
//
// What is enumerated (a DFS over schedules, each replayed from scratch):
//   - a schedule is a chain of at most kMaxDepth steps (k_d, action_d):
//     "at the k_d-th hook point reached by the code of depth d-1 (the outer
//     write for d = 1, else the handler of step d-1), run action_d as the
//     handler of depth d". Each depth is interrupted at most once, and the
//     handler's own writes pass the same hook points, so they may be
//     interrupted in turn, to depth 3 (outer write + 3 nested handlers);
//   - every schedule is a leaf: the ring is made anew, the starting state
//     is rebuilt by the same writes, the outer write runs with the
//     schedule, and the run tells how many hook points the innermost depth
//     reached, which gives the leaf's children (every k x every action);
//   - actions: a write that fits, a write that crosses a page (after a
//     filler when the page is too empty to cross in one event), a fitting
//     write then a crossing one, a discard (reserve then discard), a
//     record-disable toggle around a write, a swap of the CPU with a spare
//     RingBuffer (as the snapshot's doorbell handler does);
//   - starting states: an empty page, a page with events (the fast path),
//     a page nearly full (the outer write crosses), the ring full in
//     overwrite mode (the outer write pushes the head) and in
//     producer/consumer mode (it is dropped), and the reader holding the
//     commit page (the reader took the page the writer is on), with the
//     outer write fitting and crossing.
//
// Checked at every hook point reached (not only at leaves): exactly one
// HEAD flag and no UPDATE in each ring (no hook point is inside W5's head
// push), the ring links, head <= commit <= tail (invariant 2; the reader
// page counts as before the head), the reader page's next never HEAD
// (invariant 4), and committing of each CPU buffer == the writes inside
// W2..W6 on it (invariant 5: busy covers W2..W6, every W5 retry, W6).
// At every leaf: committing 0 and in_w5 0 (everyone left exactly once),
// commit page == tail page and its commit index == the write position
// (capped by real_end), every page the commit has left has commit ==
// real_end and `entries` events (invariant 3); exact accounting per CPU
// over both rings (the swapped-out buffer is in the spare's slot):
// attempts == entries + discarded + dropped + commit_overrun +
// nested_dropped + disabled (stats() adds the slot's swap refusals to
// disabled), each cause matching what the writers were told; then both
// slots are drained as the consumer's flush does (full pages, then the
// partial one): every tag read was committed and is read once, tags come
// in reservation order and time never goes backwards within a buffer,
// entries == read + overrun, and the tags never read are exactly the
// overrun.
//
// Deterministic: the schedule fixes every decision. The one input that is
// not the schedule is the clock: a delta over 2^27 ticks between two
// writes adds a time extend (8 bytes) and could change which write
// crosses. A leaf that took longer than 2^25 ticks (a preemption) is run
// again, so the count is the same every run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdarg>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EXPLORER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define EXPLORER_SANITIZED 1
#endif
#endif

enum class Action : uint8_t { kFit, kCross, kFitCross, kDiscard, kToggle, kSwap };
constexpr Action kActions[] = {Action::kFit,     Action::kCross,  Action::kFitCross,
                               Action::kDiscard, Action::kToggle, Action::kSwap};
constexpr int kNumActions = 6;

const char* action_name(Action a) {
  switch (a) {
    case Action::kFit: return "fit";
    case Action::kCross: return "cross";
    case Action::kFitCross: return "fit+cross";
    case Action::kDiscard: return "discard";
    case Action::kToggle: return "disable-toggle";
    case Action::kSwap: return "swap";
  }
  return "?";
}

constexpr int kNumHookPoints = 9;
const char* hook_name(HookPoint p) {
  switch (p) {
    case HookPoint::kAfterW0: return "AfterW0";
    case HookPoint::kAfterW1: return "AfterW1";
    case HookPoint::kAfterW2: return "AfterW2";
    case HookPoint::kAfterW3: return "AfterW3";
    case HookPoint::kInW5: return "InW5";
    case HookPoint::kW5Retry: return "W5Retry";
    case HookPoint::kBeforeCommit: return "BeforeCommit";
    case HookPoint::kW6Fast: return "W6Fast";
    case HookPoint::kW6Leave: return "W6Leave";
  }
  return "?";
}

enum class Start : uint8_t {
  kEmptyPage,            // fresh ring; the outer write is the page's first event
  kMidPage,              // a few events on the page; the outer write is a fast one
  kNearlyFull,           // the outer write crosses into an empty page
  kFullOverwrite,        // the outer write crosses and pushes the head
  kFullProducer,         // producer/consumer: the outer write is dropped
  kReaderOnCommit,       // the reader took the writer's page; the outer write fits
  kReaderOnCommitCross,  // the same, the outer write crosses off the reader page
};
constexpr Start kStarts[] = {Start::kEmptyPage,     Start::kMidPage,
                             Start::kNearlyFull,    Start::kFullOverwrite,
                             Start::kFullProducer,  Start::kReaderOnCommit,
                             Start::kReaderOnCommitCross};

const char* start_name(Start s) {
  switch (s) {
    case Start::kEmptyPage: return "empty-page";
    case Start::kMidPage: return "mid-page";
    case Start::kNearlyFull: return "nearly-full";
    case Start::kFullOverwrite: return "ring-full-overwrite";
    case Start::kFullProducer: return "ring-full-producer";
    case Start::kReaderOnCommit: return "reader-on-commit";
    case Start::kReaderOnCommitCross: return "reader-on-commit-cross";
  }
  return "?";
}

// Every atomic the explorer loads is loaded relaxed: the explorer runs on
// the owner thread alone (handlers are nested calls, no other thread runs
// on these rings), so nothing needs pairing; the writer's own orders are
// the real code's.
constexpr std::memory_order kRelaxed = std::memory_order_relaxed;

constexpr uint32_t kSmall = 16;  // payload of fitting writes (event: 20 bytes)
constexpr uint32_t kPages = 3;
constexpr int kMaxDepthLimit = 3;

struct Step {
  uint16_t k;  // which hook point occurrence of the depth below
  Action a;
};

// A write in flight: the CPU buffer its W0 loaded, and whether it is inside
// W2..W6 (last hook point it reached).
struct WriteRec {
  detail::CpuBuffer* cb;
  bool entered;
};

// Totals over all leaves, to show which paths were reached.
struct Coverage {
  uint64_t fired[kMaxDepthLimit][kNumHookPoints][kNumActions] = {};
  uint64_t swap_ok = 0, swap_busy = 0, swap_again = 0;
  uint64_t eperm = 0, eagain = 0, enospc = 0, eloop = 0;
  uint64_t committed = 0, discarded = 0;
  uint64_t overrun = 0, commit_overrun = 0, dropped = 0, nested_dropped = 0;
  uint64_t reruns = 0;
};

class Explorer;
Explorer* g_ex = nullptr;

struct ExplorerHooks {
  static void at(HookPoint p, RingBuffer& rb, uint32_t cpu);
};

// The rings' clock: the counter (the first test), or another clock, whose
// writes take the second copy of the fast path (reserve_entered<Hooks,
// false>) and read clock_gettime (the second test).
ClockKind g_clock = ClockKind::kCounter;

class Explorer {
 public:
  Explorer(Start s, const std::vector<Step>& sched, Coverage* cov)
      : start_(s), sched_(sched), cov_(cov) {}

  // Runs the leaf. Returns false on a failure (message in failure()).
  bool run() {
    Options o;
    o.ncpus = 1;
    o.max_cpus = 1;
    o.page_size = 4096;
    o.pages_per_cpu = kPages;
    o.mode = start_ == Start::kFullProducer ? Mode::kProducerConsumer : Mode::kOverwrite;
    o.clock = g_clock;
    live_ = RingBuffer::create(o);
    spare_ = RingBuffer::create(o);
    if (!live_ || !spare_) return failf("create failed");
    if (live_->bind_thread(0) != 0) return failf("bind_thread failed");
    g_ex = this;
    setup();
    if (!fail_.empty()) return finish();
    // The outer write, hooked.
    armed_ = true;
    frame_ = 0;
    write<true>(kSmall, false);
    armed_ = false;
    for (size_t d = 0; d < sched_.size(); d++) {
      if (!fired_[d]) failf("step %zu of the schedule was not reached (not deterministic?)", d);
    }
    if (!writes_.empty() || frame_ != 0) failf("writes still in flight at the end");
    check_at_rest("after the outer write");
    check_accounting();
    drain_and_check();
    return finish();
  }

  uint32_t innermost_hooks() const { return occ_[sched_.size()]; }
  const std::string& failure() const { return fail_; }

  void on_hook(HookPoint p) {
    if (!armed_) return;
    if (writes_.empty()) {
      failf("hook %s outside a write", hook_name(p));
      return;
    }
    WriteRec& w = writes_.back();
    if (p == HookPoint::kAfterW0) w.cb = live_->cpu_buffer(0);  // what W0 loaded (the binding)
    w.entered = p != HookPoint::kAfterW0 && p != HookPoint::kAfterW1;
    check_structure(hook_name(p));
    const uint32_t f = frame_;
    const uint32_t idx = occ_[f]++;
    if (f < sched_.size() && !fired_[f] && sched_[f].k == idx) {
      fired_[f] = true;
      cov_->fired[f][static_cast<int>(p)][static_cast<int>(sched_[f].a)]++;
      fired_at_[f] = p;
      frame_ = f + 1;
      act(sched_[f].a);
      frame_ = f;
    }
  }

  std::string describe() const {
    std::string s = start_name(start_);
    char buf[128];
    for (size_t d = 0; d < sched_.size(); d++) {
      std::snprintf(buf, sizeof buf, " -> [handler at depth %zu, at hook #%u (%s): %s]", d + 1,
                    sched_[d].k, fired_[d] ? hook_name(fired_at_[d]) : "not reached",
                    action_name(sched_[d].a));
      s += buf;
    }
    return s;
  }

 private:
  // ---- writes ---------------------------------------------------------------
  // One write attempt of `len` bytes tagged with a fresh id (hooked when
  // Hooked); commits it, or discards it. Returns 0 or the reserve error.
  template <bool Hooked>
  int write(uint32_t len, bool discard) {
    attempts_++;
    writes_.push_back({live_->cpu_buffer(0), false});
    Reservation r = Hooked ? live_->reserve<ExplorerHooks>(len) : live_->reserve(len);
    if (!r) {
      writes_.pop_back();
      switch (r.err) {
        case -EPERM: eperm_++; break;
        case -EAGAIN: eagain_++; break;
        case -ENOSPC: enospc_++; break;
        case -ELOOP: eloop_++; break;
        default: failf("reserve(%u) failed with %d", len, r.err); break;
      }
      return r.err;
    }
    // A write lands in the buffer in the slot: a swap that ran before its
    // W2 (in a handler between W0 and W2) moved the buffer it loaded to
    // the spare, which the requester is dumping (the 2014 race); and no
    // swap can move it now that it is inside W2..W6.
    if (r.cpu_buffer != live_->cpu_buffer(0) || r.cpu_buffer->buffer.load(kRelaxed) != live_.get())
      failf("a write reserved in the buffer that a swap moved to the spare");
    // The tag is taken when reserve returns: no hook point lies between a
    // reservation's final B and its return, so tags follow positions.
    const uint32_t tag = static_cast<uint32_t>(outcome_.size());
    std::memset(r.data, 0, len);
    std::memcpy(r.data, &tag, sizeof tag);
    const uint32_t depth = frame_;
    std::memcpy(static_cast<unsigned char*>(r.data) + 4, &depth, sizeof depth);
    outcome_.push_back(discard ? kDiscarded : kCommitted);
    if (discard) {
      live_->discard(r);
    } else if (Hooked) {
      live_->commit<ExplorerHooks>(r);
    } else {
      live_->commit(r);
    }
    writes_.pop_back();
    return 0;
  }

  // Room left on the tail page of the CPU buffer in the live slot.
  uint32_t room() const {
    const detail::CpuBuffer* cb = live_->cpu_buffer(0);
    const uint32_t idx = static_cast<uint32_t>(cb->tail_page.load(kRelaxed)->write.load());
    return idx >= cb->capacity ? 0 : cb->capacity - idx;
  }

  // A write that does not fit in what is left of the tail page (after a
  // filler when a page is too empty for one event to overflow it).
  void cross() {
    uint32_t r = room();
    if (std::max<uint32_t>(r, kMinPayload) > live_->max_payload()) {
      write<true>((r - 64) & ~3u, false);  // leaves 56..64 bytes
      r = room();
    }
    write<true>(std::min(std::max<uint32_t>(r, kMinPayload), live_->max_payload()), false);
  }

  void act(Action a) {
    switch (a) {
      case Action::kFit:
        write<true>(kSmall, false);
        break;
      case Action::kCross:
        cross();
        break;
      case Action::kFitCross:
        write<true>(kSmall, false);
        cross();
        break;
      case Action::kDiscard:
        write<true>(kSmall, true);
        break;
      case Action::kToggle:
        if (live_->record_disable_cpu(0) != 0) failf("record_disable_cpu failed");
        write<true>(kSmall, false);
        if (live_->record_enable_cpu(0) != 0) failf("record_enable_cpu failed");
        break;
      case Action::kSwap: {
        const int rc = live_->swap_cpu(*spare_, 0);
        if (rc == 0) {
          cov_->swap_ok++;
        } else if (rc == -EBUSY) {
          cov_->swap_busy++;
        } else if (rc == -EAGAIN) {
          cov_->swap_again++;
        } else {
          failf("swap_cpu returned %d", rc);
        }
        // A swap must never take a buffer a writer is inside of.
        if (rc == 0) {
          for (const WriteRec& w : writes_) {
            if (w.entered) failf("swap succeeded while a writer was inside W2..W6");
          }
        }
        break;
      }
    }
  }

  // ---- starting states ------------------------------------------------------
  void fill_page_until_room_below(uint32_t limit) {
    while (room() >= limit && fail_.empty()) write<false>(kSmall, false);
  }

  void setup() {
    detail::CpuBuffer* cb = live_->cpu_buffer(0);
    switch (start_) {
      case Start::kEmptyPage:
        break;
      case Start::kMidPage:
        for (int i = 0; i < 3; i++) write<false>(kSmall, false);
        break;
      case Start::kNearlyFull:
        fill_page_until_room_below(data_event_size(kSmall));
        break;
      case Start::kFullOverwrite:
      case Start::kFullProducer:
        // Until the tail is on the page before the head and nearly full.
        for (int guard = 0; guard < 100000 && fail_.empty(); guard++) {
          detail::BufferPage* tp = cb->tail_page.load(kRelaxed);
          if (detail::flags_of(tp->next.load(kRelaxed)) == detail::kPageHead &&
              room() < data_event_size(kSmall))
            break;
          write<false>(kSmall, false);
        }
        if (live_->stats(0).dropped != 0 || live_->stats(0).overrun != 0)
          failf("setup lost events");
        break;
      case Start::kReaderOnCommit:
      case Start::kReaderOnCommitCross: {
        if (start_ == Start::kReaderOnCommit) {
          for (int i = 0; i < 3; i++) write<false>(kSmall, false);
        } else {
          fill_page_until_room_below(data_event_size(kSmall));
        }
        PageEvent ev;
        if (live_->consume(0, &ev) != 0) {
          failf("setup consume failed");
          break;
        }
        note_read(ev);
        if (cb->reader_page != cb->tail_page.load(kRelaxed) || cb->commit_page.load(kRelaxed) != cb->reader_page)
          failf("setup: the reader does not hold the commit page");
        break;
      }
    }
  }

  // ---- checks ----------------------------------------------------------------
  // The ring of `cb`: exactly one HEAD and no UPDATE, links consistent, the
  // reader page outside the ring and its next not HEAD, head <= commit <=
  // tail. Checked at every hook point (none is inside W5's head push).
  void check_ring(const detail::CpuBuffer* cb, const char* where, const char* which) {
    using namespace detail;
    BufferPage* rp = cb->reader_page;
    if (flags_of(rp->next.load(kRelaxed)) != kPageNormal)
      failf("%s (%s): the reader page's next carries flags", where, which);
    int heads = 0, updates = 0;
    BufferPage* head = nullptr;
    for (uint32_t i = 0; i <= cb->npages; i++) {
      BufferPage* p = &cb->pages[i];
      if (p == rp) continue;
      const uintptr_t nx = p->next.load(kRelaxed);
      if (flags_of(nx) == kPageHead) {
        heads++;
        head = page_of(nx);
      } else if (flags_of(nx) == kPageUpdate) {
        updates++;
      }
      if (page_of(nx)->prev.load(kRelaxed) != p) failf("%s (%s): next/prev links disagree", where, which);
    }
    if (heads != 1 || updates != 0) {
      failf("%s (%s): %d HEAD flags and %d UPDATE flags in the ring", where, which, heads,
            updates);
      return;
    }
    // Positions from the head; the reader page is position 0.
    auto pos = [&](const BufferPage* q) -> int {
      if (q == rp) return 0;
      const BufferPage* p = head;
      for (uint32_t i = 0; i < cb->npages; i++) {
        if (p == q) return static_cast<int>(i) + 1;
        p = page_of(p->next.load(kRelaxed));
      }
      return -1;
    };
    const BufferPage* p = head;
    for (uint32_t i = 0; i < cb->npages; i++) p = page_of(p->next.load(kRelaxed));
    if (p != head) failf("%s (%s): the ring does not close after %u pages", where, which,
                         cb->npages);
    const int pc = pos(cb->commit_page.load(kRelaxed)), pt = pos(cb->tail_page.load(kRelaxed));
    if (pc < 0 || pt < 0 || pc > pt)
      failf("%s (%s): commit page at %d, tail page at %d (head 1, reader page 0)", where, which,
            pc, pt);
  }

  void check_structure(const char* where) {
    detail::CpuBuffer* a = live_->cpu_buffer(0);
    detail::CpuBuffer* b = spare_->cpu_buffer(0);
    check_ring(a, where, "live");
    check_ring(b, where, "spare");
    for (detail::CpuBuffer* x : {a, b}) {
      uint32_t in = 0;
      for (const WriteRec& w : writes_) in += w.cb == x && w.entered ? 1 : 0;
      if (x->committing() != in)
        failf("%s: committing %u on the %s buffer, %u writers inside W2..W6", where,
              x->committing(), x == a ? "live" : "spare", in);
    }
  }

  void check_at_rest(const char* where) {
    check_structure(where);
    for (detail::CpuBuffer* cb : {live_->cpu_buffer(0), spare_->cpu_buffer(0)}) {
      using namespace detail;
      if (cb->committing() != 0) failf("%s: committing %u", where, cb->committing());
      if (cb->in_w5.load() != 0) failf("%s: in_w5 set", where);
      BufferPage* tp = cb->tail_page.load(kRelaxed);
      if (cb->commit_page.load(kRelaxed) != tp)
        failf("%s: the commit page is not the tail page", where);
      const uint32_t idx = static_cast<uint32_t>(tp->write.load());
      const uint32_t want = std::min(idx, static_cast<uint32_t>(tp->real_end.load()));
      const uint64_t commit = std::atomic_ref<uint64_t>(tp->page->commit).load(kRelaxed);
      if (commit != want)
        failf("%s: tail page commit %llu, write position %u (real_end %u)", where,
              static_cast<unsigned long long>(commit), idx,
              static_cast<uint32_t>(tp->real_end.load()));
      // Pages the commit has left (head up to the commit page): final.
      BufferPage* head = nullptr;
      for (uint32_t i = 0; i <= cb->npages; i++) {
        BufferPage* p = &cb->pages[i];
        if (p != cb->reader_page && flags_of(p->next.load(kRelaxed)) == kPageHead) head = page_of(p->next.load(kRelaxed));
      }
      if (!head || cb->commit_page.load(kRelaxed) == cb->reader_page) continue;
      for (BufferPage* p = head; p != cb->commit_page.load(kRelaxed); p = page_of(p->next.load(kRelaxed))) {
        const uint64_t c = std::atomic_ref<uint64_t>(p->page->commit).load(kRelaxed);
        if (c != p->real_end.load())
          failf("%s: a page the commit left has commit %llu, real_end %u", where,
                static_cast<unsigned long long>(c), static_cast<uint32_t>(p->real_end.load()));
        PageWalker wk(p->page->data, static_cast<uint32_t>(c & kCommitMask), p->page->time_stamp);
        PageEvent e;
        uint64_t n = 0;
        while (wk.next(&e)) n++;
        if (wk.error()) failf("%s: a committed page does not walk", where);
        if (n != p->entries.load())
          failf("%s: a left page holds %llu events, entries says %llu", where,
                static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(p->entries.load()));
      }
    }
  }

  CpuStats both() const {
    CpuStats s = live_->stats(0);
    s += spare_->stats(0);
    return s;
  }

  void check_accounting() {
    const CpuStats s = both();
    const uint64_t sum =
        s.entries + s.discarded + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled;
    uint64_t committed = 0, discarded = 0;
    for (uint8_t o : outcome_) (o == kDiscarded ? discarded : committed)++;
    if (attempts_ != sum)
      failf("accounting: %llu attempts, entries %llu + discarded %llu + dropped %llu + "
            "commit_overrun %llu + nested_dropped %llu + disabled %llu = %llu",
            ull(attempts_), ull(s.entries), ull(s.discarded), ull(s.dropped),
            ull(s.commit_overrun), ull(s.nested_dropped), ull(s.disabled), ull(sum));
    if (s.entries != committed || s.discarded != discarded)
      failf("accounting: %llu committed / %llu discarded, stats say %llu / %llu", ull(committed),
            ull(discarded), ull(s.entries), ull(s.discarded));
    if (s.disabled != eperm_ + eagain_)
      failf("accounting: %llu writers told -EPERM/-EAGAIN, disabled %llu", ull(eperm_ + eagain_),
            ull(s.disabled));
    if (s.dropped + s.commit_overrun + s.nested_dropped != enospc_ + eloop_)
      failf("accounting: %llu writers told -ENOSPC/-ELOOP, refusals counted %llu",
            ull(enospc_ + eloop_), ull(s.dropped + s.commit_overrun + s.nested_dropped));
    cov_->eperm += eperm_;
    cov_->eagain += eagain_;
    cov_->enospc += enospc_;
    cov_->eloop += eloop_;
    cov_->committed += committed;
    cov_->discarded += discarded;
    cov_->overrun += s.overrun;
    cov_->commit_overrun += s.commit_overrun;
    cov_->dropped += s.dropped;
    cov_->nested_dropped += s.nested_dropped;
  }

  void note_read(const PageEvent& e) {
    uint32_t tag;
    std::memcpy(&tag, e.data, sizeof tag);
    if (tag >= outcome_.size()) {
      failf("read a tag %u that was never reserved", tag);
      return;
    }
    if (outcome_[tag] != kCommitted) {
      failf("read tag %u, which was %s", tag, outcome_[tag] == kRead ? "read before" : "discarded");
      return;
    }
    outcome_[tag] = kRead;
  }

  // Drains a ring's slot as the consumer's flush does: full pages, then
  // the partial one. Tags in reservation order, time never backwards.
  void drain(RingBuffer& rb, const char* which) {
    DataPage* page = rb.alloc_read_page();
    int64_t last_tag = -1;
    uint64_t last_ts = 0;
    for (bool full : {true, false}) {
      for (int guard = 0; guard < 64; guard++) {
        const int n = rb.read_page(&page, 0, full);
        if (n < 0) break;
        PageWalker wk(page->data, static_cast<uint32_t>(page->commit & kCommitMask),
                      page->time_stamp);
        PageEvent e;
        while (wk.next(&e)) {
          uint32_t tag;
          std::memcpy(&tag, e.data, sizeof tag);
          if (static_cast<int64_t>(tag) <= last_tag)
            failf("%s: tag %u read after tag %lld", which, tag, static_cast<long long>(last_tag));
          if (e.ts < last_ts)
            failf("%s: time went backwards: tag %u at %llu after %llu", which, tag, ull(e.ts),
                  ull(last_ts));
          last_tag = tag;
          last_ts = e.ts;
          note_read(e);
        }
        if (wk.error()) failf("%s: a page handed out does not walk", which);
      }
    }
    rb.free_read_page(page);
  }

  void drain_and_check() {
    // The reader of a recorded ring reads from another thread; here the
    // owner reads, outside any write (allowed: not from a handler).
    drain(*live_, "live");
    drain(*spare_, "spare");
    const CpuStats s = both();
    uint64_t unread = 0, read = 0;
    for (uint8_t o : outcome_) {
      unread += o == kCommitted ? 1 : 0;
      read += o == kRead ? 1 : 0;
    }
    if (s.read != read) failf("drain: read %llu events, stats say %llu", ull(read), ull(s.read));
    if (s.entries != s.read + s.overrun)
      failf("drain: entries %llu != read %llu + overrun %llu", ull(s.entries), ull(s.read),
            ull(s.overrun));
    if (unread != s.overrun)
      failf("drain: %llu committed events never read, overrun %llu", ull(unread), ull(s.overrun));
    check_at_rest("after the drain");
  }

  bool finish() {
    g_ex = nullptr;
    if (live_) live_->unbind_thread();
    live_.reset();
    spare_.reset();
    return fail_.empty();
  }

  static unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

  __attribute__((format(printf, 2, 3))) bool failf(const char* fmt, ...) {
    if (fail_.empty()) {
      char buf[512];
      va_list ap;
      va_start(ap, fmt);
      std::vsnprintf(buf, sizeof buf, fmt, ap);
      va_end(ap);
      fail_ = buf;
    }
    return false;
  }

  static constexpr uint8_t kCommitted = 0, kDiscarded = 1, kRead = 2;

  Start start_;
  std::vector<Step> sched_;
  Coverage* cov_;
  std::unique_ptr<RingBuffer> live_, spare_;
  bool armed_ = false;
  uint32_t frame_ = 0;
  uint32_t occ_[kMaxDepthLimit + 1] = {};
  bool fired_[kMaxDepthLimit] = {};
  HookPoint fired_at_[kMaxDepthLimit] = {};
  std::vector<WriteRec> writes_;
  std::vector<uint8_t> outcome_;  // by tag
  uint64_t attempts_ = 0, eperm_ = 0, eagain_ = 0, enospc_ = 0, eloop_ = 0;
  std::string fail_;
};

void ExplorerHooks::at(HookPoint p, RingBuffer&, uint32_t) {
  if (g_ex) g_ex->on_hook(p);
}

// One leaf, run again when a preemption could have changed its sizes (see
// the top of the file). Returns the innermost depth's hook count.
struct LeafResult {
  bool ok;
  uint32_t hooks;
  std::string what;
};

LeafResult run_leaf(Start s, const std::vector<Step>& sched, Coverage* cov) {
  constexpr uint64_t kTooLong = 1ull << 25;  // ticks; a time extend needs 2^27
  for (int attempt = 0;; attempt++) {
    Coverage local;
    const uint64_t t0 = read_cpu_counter();
    Explorer ex(s, sched, &local);
    const bool ok = ex.run();
    const uint64_t t1 = read_cpu_counter();
    if (t1 - t0 > kTooLong && attempt < 5) {
      cov->reruns++;
      continue;
    }
    // Merge this run's coverage.
    for (int d = 0; d < kMaxDepthLimit; d++)
      for (int p = 0; p < kNumHookPoints; p++)
        for (int a = 0; a < kNumActions; a++) cov->fired[d][p][a] += local.fired[d][p][a];
    cov->swap_ok += local.swap_ok;
    cov->swap_busy += local.swap_busy;
    cov->swap_again += local.swap_again;
    cov->eperm += local.eperm;
    cov->eagain += local.eagain;
    cov->enospc += local.enospc;
    cov->eloop += local.eloop;
    cov->committed += local.committed;
    cov->discarded += local.discarded;
    cov->overrun += local.overrun;
    cov->commit_overrun += local.commit_overrun;
    cov->dropped += local.dropped;
    cov->nested_dropped += local.nested_dropped;
    return {ok, ex.innermost_hooks(), ok ? std::string() : ex.describe() + ": " + ex.failure()};
  }
}

// DFS over schedules: every leaf's children are every (k, action) at the
// innermost depth's hook points, down to max_depth.
struct Explored {
  uint64_t leaves = 0;
  std::string first_failure;
};

void explore(Start s, std::vector<Step>* sched, int max_depth, Coverage* cov, Explored* out) {
  if (!out->first_failure.empty()) return;
  const LeafResult r = run_leaf(s, *sched, cov);
  out->leaves++;
  if (!r.ok) {
    out->first_failure = r.what;
    return;
  }
  if (static_cast<int>(sched->size()) >= max_depth) return;
  for (uint32_t k = 0; k < r.hooks; k++) {
    for (Action a : kActions) {
      sched->push_back({static_cast<uint16_t>(k), a});
      explore(s, sched, max_depth, cov, out);
      sched->pop_back();
      if (!out->first_failure.empty()) return;
    }
  }
}

}  // namespace

// Every hook point of the writer was interrupted by every action at depth
// 1 somewhere (kInW5/kW5Retry: in the starting states that cross), a swap
// went through, and a write was refused at W3 after one.
static void expect_every_pair_and_a_swap(const Coverage& cov) {
  for (int p = 0; p < kNumHookPoints; p++)
    for (int a = 0; a < kNumActions; a++)
      EXPECT_GT(cov.fired[0][p][a], 0u)
          << hook_name(static_cast<HookPoint>(p)) << " x " << action_name(kActions[a]);
  EXPECT_GT(cov.swap_ok, 0u);
  EXPECT_GT(cov.eagain, 0u) << "no write was refused at W3 after a swap";
}

TEST(InterruptExplorer, EveryHandlerAtEveryHookPointToDepth3) {
#ifdef EXPLORER_SANITIZED
  // ~10x slower: depth 2 from every starting state, depth 3 from one.
  const int depth_of[] = {3, 2, 2, 2, 2, 2, 2};
  const char* build = "sanitized";
#else
  const int depth_of[] = {3, 3, 3, 3, 3, 3, 3};
  const char* build = "normal";
#endif
  // RBTRACE_EXPLORER_DEPTH=n caps the depth (a quick look while developing).
  int cap = kMaxDepthLimit;
  if (const char* e = std::getenv("RBTRACE_EXPLORER_DEPTH")) cap = std::clamp(std::atoi(e), 0, kMaxDepthLimit);
  Coverage cov;
  uint64_t total = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::printf("interrupt explorer (%s build): %d actions, hook points of the real writer\n",
              build, kNumActions);
  for (size_t i = 0; i < std::size(kStarts); i++) {
    const Start s = kStarts[i];
    const auto ts = std::chrono::steady_clock::now();
    std::vector<Step> sched;
    Explored out;
    const int depth = std::min(depth_of[i], cap);
    explore(s, &sched, depth, &cov, &out);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    std::printf("  %-24s depth %d: %8llu interleavings, %6.2f s\n", start_name(s), depth,
                static_cast<unsigned long long>(out.leaves), secs);
    std::fflush(stdout);
    total += out.leaves;
    ASSERT_TRUE(out.first_failure.empty())
        << "failing interleaving: " << out.first_failure;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  total: %llu interleavings in %.2f s (%llu leaves run again after a preemption)\n",
              static_cast<unsigned long long>(total), secs,
              static_cast<unsigned long long>(cov.reruns));
  std::printf("  handlers run, by depth and hook point (all actions):\n");
  for (int d = 0; d < kMaxDepthLimit; d++) {
    std::printf("    depth %d:", d + 1);
    for (int p = 0; p < kNumHookPoints; p++) {
      uint64_t n = 0;
      for (int a = 0; a < kNumActions; a++) n += cov.fired[d][p][a];
      std::printf(" %s=%llu", hook_name(static_cast<HookPoint>(p)),
                  static_cast<unsigned long long>(n));
    }
    std::printf("\n");
  }
  std::printf("  outcomes: committed %llu, discarded %llu, -EPERM %llu, -EAGAIN %llu, "
              "-ENOSPC %llu, -ELOOP %llu; overrun %llu, commit_overrun %llu, dropped %llu, "
              "nested_dropped %llu; swaps ok %llu, busy %llu, refused disabled %llu\n",
              static_cast<unsigned long long>(cov.committed),
              static_cast<unsigned long long>(cov.discarded),
              static_cast<unsigned long long>(cov.eperm),
              static_cast<unsigned long long>(cov.eagain),
              static_cast<unsigned long long>(cov.enospc),
              static_cast<unsigned long long>(cov.eloop),
              static_cast<unsigned long long>(cov.overrun),
              static_cast<unsigned long long>(cov.commit_overrun),
              static_cast<unsigned long long>(cov.dropped),
              static_cast<unsigned long long>(cov.nested_dropped),
              static_cast<unsigned long long>(cov.swap_ok),
              static_cast<unsigned long long>(cov.swap_busy),
              static_cast<unsigned long long>(cov.swap_again));
  expect_every_pair_and_a_swap(cov);
  EXPECT_GT(cov.overrun, 0u);
  EXPECT_GT(cov.commit_overrun, 0u);
  EXPECT_GT(cov.dropped, 0u);
  EXPECT_GT(cov.nested_dropped, 0u);
}

// The same exploration on a ring whose clock is CLOCK_MONOTONIC: its writes
// take the second instantiation of the fast path (W2..W4b with the clock
// read through Clock::now_posix), which must keep every invariant and the
// exact accounting as the counter's does. Depth 2 from every starting
// state (depth 3 is the first test's, on the counter's copy of the code).
TEST(InterruptExplorer, EveryHandlerAtEveryHookPointToDepth2OnAnotherClock) {
  g_clock = ClockKind::kMono;
  Coverage cov;
  uint64_t total = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Start s : kStarts) {
    std::vector<Step> sched;
    Explored out;
    explore(s, &sched, 2, &cov, &out);
    total += out.leaves;
    if (!out.first_failure.empty()) g_clock = ClockKind::kCounter;
    ASSERT_TRUE(out.first_failure.empty())
        << start_name(s) << ": failing interleaving: " << out.first_failure;
  }
  g_clock = ClockKind::kCounter;
  std::printf("interrupt explorer, CLOCK_MONOTONIC ring: %llu interleavings to depth 2 in %.2f s\n",
              static_cast<unsigned long long>(total),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  expect_every_pair_and_a_swap(cov);
  EXPECT_GT(cov.committed, 0u);
}
