// overwrite_storm_test.cc - the storm of issue 9 ("Show"): overwrite mode,
// 2 and 4 pages of 4 KiB per CPU, writers interrupted by nested timer
// signals whose handlers write too, random discards, a reader, a thread
// swapping CPU buffers with a spare (and draining what it swapped out), a
// thread toggling record-disable and record-off. Every committed event must
// be read exactly once, or be missing with a loss indication given where
// the loss is.
//
// Writers. 2..4 threads, some bound (bind_thread), the others claiming a
// slot with their first write. Each has two per-thread timers
// (SIGEV_THREAD_ID): A ~20 kHz, whose handler writes 1..3 events, and B
// ~7 kHz, one event; neither blocks the other, so writes nest up to depth
// 3. A context is (cpu, stream): stream 0 the thread, 1 and 2 the handlers.
// Every attempt takes the context's next sequence number; a failed reserve
// is logged, and every kDiscardEvery-th number (a fixed rule the checker
// knows) is reserved and discarded. Writes are reserve + commit, so the
// writer knows the CPU buffer each event went to (Reservation::cpu_buffer).
//
// Periods and streams. Period k of a CPU lies between its k-th and
// (k+1)-th successful swap; the CPU buffer in the live slot during period k
// is the one live at the start for even k, the spare's for odd k (a swap
// exchanges the two; CpuBuffer identities are stable). From the buffer and
// the swap count the writer knows the period of each reservation and logs,
// per context, where its numbers move to the next period ("legs"). The
// stream of period k is the pages read_page handed out from that buffer in
// that generation: by the reader while it was live, then by the swapper,
// which drains it from the spare after the swap (as Snapshot::take does)
// and resets it. The reader names the stream of each page it reads from a
// per-CPU word (successful swaps << 1 | swap in flight) that the swapper
// sets around each swap; when that word moved during the read, the
// buffer's `read` counter says which buffer handed the page out (the
// swapper waits for the reader's window to close before it drains).
//
// The check, per context and stream: sequence numbers strictly increase;
// a gap A..B between seq P (read on page i) and seq C (page j) counts N
// numbers written and unread (not failed F, not discarded D); N > 0 needs a
// page in (i, j] of the same stream carrying kMissedEvents, and the counts
// of those pages (when all are kMissedStored) must add up to at least N.
// The same at a stream's ends, from the legs: numbers of period k before
// the first read need an indication on pages up to that read's page, after
// the last read one after it, and a period none of whose numbers were read
// one anywhere in its stream. Read numbers must lie in the period of their
// stream (so none is read twice). Per generation: entries == read +
// overrun after the drain, read == events decoded, entries and discarded ==
// the writers' commits and discards in that period; per CPU the refusals
// match the writers' error codes; every buffer ends with record_disabled 0.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "rbtrace/swap.h"
#include "rbtrace_test/stress_common.h"

using namespace rbtrace;
using namespace stress;
using namespace std::chrono;

namespace {

constexpr uint32_t kStreams = 3;  // 0 the thread, 1 timer A's handler, 2 timer B's
constexpr long kTimerANs = 50000;   // ~20 kHz
constexpr long kTimerBNs = 143000;  // ~7 kHz
constexpr uint64_t kDiscardEvery = 23;
constexpr uint32_t kMaxPageEvents = 512;  // > 4080 / 12
constexpr uint64_t kMinHandlerEvents = 1000;
constexpr uint32_t kMinSwapsPerCpu = 2;
// Swaps per CPU and second at most (the swapper sleeps between swaps; this
// bounds the writers' preallocated logs).
constexpr uint64_t kSwapsPerCpuSecond = 2000;

// Above the swap doorbell (SIGRTMIN+3): Linux delivers the lowest pending
// signal first, and a fast timer below the doorbell can starve it (swap.h).
int g_sig_a = 0, g_sig_b = 0;

// ---------------------------------------------------------------------------
// Discards: a fixed rule per context
// ---------------------------------------------------------------------------
uint64_t discard_salt(uint32_t cpu, uint32_t stream) {
  return 1 + (cpu * kStreams + stream) * 5 % kDiscardEvery;
}
bool is_discard(uint64_t seq, uint64_t salt) { return (seq + salt) % kDiscardEvery == 0; }
// Discard numbers in [a, b].
uint64_t discards_in(uint64_t a, uint64_t b, uint64_t salt) {
  auto multiples_below = [](uint64_t n) { return (n + kDiscardEvery - 1) / kDiscardEvery; };
  return multiples_below(b + 1 + salt) - multiples_below(a + salt);
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------
// From `first` on, a context's reservations went to period `period`.
struct Leg {
  uint64_t first;
  uint64_t period;
  uint64_t commits;
  uint64_t discards;
};

// One sequential writer: the thread or one of its handlers. Touched by that
// writer only (and by others after the thread has joined), except
// `published`.
struct Ctx {
  uint64_t seq = 0;  // next sequence number; every attempt takes one
  // seq + 1 of the latest attempt, stored before its commit: a reader that
  // got the event sees at least that, and widens the 32-bit payload seq.
  std::atomic<uint64_t> published{0};
  Tally tally;
  RangeLog failed;
  std::vector<Leg> legs;  // reserved ahead for handlers, which must not allocate
  bool grow_legs = true;
  bool legs_full = false;
  Rng rng{1};
  uint64_t calls = 0;   // handler invocations
  uint64_t nested = 0;  // attempts made while another stream of the thread was inside a write
  uint64_t depth3 = 0;  // ... while two others were
  volatile sig_atomic_t in_write = 0;
  alignas(8) unsigned char buf[kMaxLen];  // a payload built before its reserve

  // The leg a reservation of `period` counts in; null when a handler's log
  // is full (legs_full).
  Leg* leg_for(uint64_t s, uint64_t period) {
    if (!legs.empty() && legs.back().period == period) return &legs.back();
    if (!grow_legs && legs.size() == legs.capacity()) {
      legs_full = true;
      return nullptr;
    }
    legs.push_back({s, period, 0, 0});
    return &legs.back();
  }
};

struct Storm;
struct Writer {
  Storm* storm = nullptr;
  RingBuffer* rb = nullptr;
  uint32_t index = 0;
  bool bind = false;
  int cpu = -1;
  Ctx ctx[kStreams];
  volatile sig_atomic_t active = 0;     // handlers may write
  volatile sig_atomic_t bad_buffer = 0;  // a reservation in a buffer of neither slot
  std::atomic<uint64_t> handler_ok{0};
  int32_t tid = 0;
  std::string error;
};

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------
// Loss indications handed out so far in a stream.
struct Totals {
  uint64_t flags = 0;    // pages with kMissedEvents
  uint64_t stored = 0;   // sum of their kMissedStored counts
  uint64_t unknown = 0;  // flagged pages without a stored count
  Totals operator-(const Totals& o) const {
    return {flags - o.flags, stored - o.stored, unknown - o.unknown};
  }
};

// A context's reads in one stream: first and last sequence number, and the
// stream's totals right after the page holding each.
struct CtxInStream {
  bool any = false;
  uint64_t first = 0, last = 0;
  Totals at_first, at_last;
};

// The pages handed out from one CPU buffer in one generation (= period).
struct StreamState {
  uint64_t period = 0;
  Totals tot;
  CtxInStream ctx[kStreams];
  uint64_t pages = 0, events = 0;
  CpuStats stats;  // the buffer's counters once drained (finished streams)
  void reset(uint64_t p) {
    *this = StreamState();
    period = p;
  }
};

struct CpuSide {
  // Successful swaps << 1 | 1 while a swap is in flight. Written by the
  // swapper only.
  std::atomic<uint64_t> state{0};
  // The reader is inside a read window on this CPU (see read_once).
  std::atomic<int> reading{0};
  detail::CpuBuffer* buf[2] = {};  // [0] the live slot's at the start, [1] the spare's
  StreamState slot[2];             // the current generation's stream of buf[i]
  std::vector<StreamState> done;   // finished streams, by period
  Writer* writer = nullptr;
};

struct Storm {
  RingBuffer* live = nullptr;
  RingBuffer* spare = nullptr;
  uint32_t ncpus = 0;
  uint32_t capacity = 0;  // data bytes per page
  uint64_t max_swaps = 0;  // per CPU
  std::unique_ptr<CpuSide[]> cpus;
};

// The period of a reservation made in `cb` on CPU side `cs`, between
// reserve and commit. The swap count n is k-1 or k when the write runs in
// period k (swap k happened on this thread before it; the swapper counts a
// swap after its answer; swap k+1 cannot run while the buffer is busy);
// the buffer's parity decides.
uint64_t period_of(const CpuSide& cs, const detail::CpuBuffer* cb, Writer& w) {
  const uint64_t n = cs.state.load(std::memory_order_acquire) >> 1;
  if (cb != cs.buf[0] && cb != cs.buf[1]) w.bad_buffer = 1;
  const uint64_t parity = cb == cs.buf[1] ? 1 : 0;
  return n + ((n & 1) != parity ? 1 : 0);
}

thread_local Writer* tl_writer = nullptr;  // the executable's TLS: fine in a handler

// One attempt by `stream` of `w` (the thread or a handler). Returns the
// reserve's result.
int attempt(Writer& w, uint32_t stream) {
  Ctx& c = w.ctx[stream];
  RingBuffer& rb = *w.rb;
  uint32_t others = 0;
  for (uint32_t i = 0; i < kStreams; i++) others += i != stream && w.ctx[i].in_write;
  if (others >= 1) c.nested++;
  if (others >= 2) c.depth3++;
  const uint64_t seq = c.seq++;
  const uint32_t len = c.rng.below(4) != 0 ? kMinLen + c.rng.below(57)
                                           : kMinLen + c.rng.below(kMaxLen - kMinLen + 1);
  // Mostly built first and copied in (as write() does: busy only for the
  // copy); else built in place, with the nesting level in the tag.
  const bool in_place = w.cpu < 0 || c.rng.below(4) == 0;
  if (!in_place) make_raw(c.buf, len, w.cpu, stream, static_cast<uint32_t>(seq), -1);
  c.published.store(seq + 1, std::memory_order_relaxed);  // before the commit's release
  c.in_write = 1;
  detail::signal_fence();
  Reservation r = rb.reserve(len);
  if (w.cpu < 0) w.cpu = rb.current_cpu();  // a claimer's first write claimed a slot
  if (!r) {
    c.tally.add(r.err);
    c.failed.add(seq);
  } else {
    Leg* leg = c.leg_for(seq, period_of(w.storm->cpus[w.cpu], r.cpu_buffer, w));
    if (is_discard(seq, discard_salt(w.cpu, stream))) {
      rb.discard(r);
      c.tally.discards++;  // not an attempt that ends in a counter (Tally)
      if (leg) leg->discards++;
    } else {
      if (in_place)
        make_raw(static_cast<unsigned char*>(r.data), len, w.cpu, stream,
                 static_cast<uint32_t>(seq), r.level);
      else
        std::memcpy(r.data, c.buf, len);
      rb.commit(r);
      c.tally.add(0);
      if (leg) leg->commits++;
      if (stream != 0) w.handler_ok.fetch_add(1, std::memory_order_relaxed);
    }
  }
  detail::signal_fence();
  c.in_write = 0;
  return r.err;
}

void on_timer(int sig) {
  Writer* w = tl_writer;
  if (w == nullptr || !w->active) return;
  const int saved = errno;
  const uint32_t stream = sig == g_sig_a ? 1 : 2;
  Ctx& c = w->ctx[stream];
  c.calls++;
  const uint32_t n = stream == 1 ? 1 + c.rng.below(3) : 1;
  for (uint32_t i = 0; i < n; i++) attempt(*w, stream);
  errno = saved;
}

void writer_main(Writer& w, std::atomic<uint32_t>& bound, uint32_t nbound,
                 std::atomic<uint32_t>& ready, const std::atomic<bool>& stop) {
  w.tid = static_cast<int32_t>(gettid());
  if (w.bind) {
    const int rc = w.rb->bind_thread(w.index);
    if (rc != 0) w.error = "bind_thread: " + std::to_string(rc);
    w.cpu = static_cast<int>(w.index);
    bound.fetch_add(1);
  } else {
    // Claim after the bound writers took their slots (a claimer takes any
    // free one).
    while (bound.load() < nbound) std::this_thread::yield();
    attempt(w, 0);
    if (w.cpu < 0) w.error = "the first write claimed no CPU slot";
  }
  ThreadTimers timers;
  bool armed = false;
  if (w.error.empty()) {
    tl_writer = &w;
    w.active = 1;
    armed = timers.start({{g_sig_a, kTimerANs}, {g_sig_b, kTimerBNs}});
    if (!armed) w.error = timers.error();
  }
  ready.fetch_add(1);
#ifdef STRESS_TSAN
  // TSan runs handlers deferred, at its interceptors, and can leave a
  // thread with every signal blocked (signal_nesting_test.cc): call one now
  // and then, unblocking ours and the doorbell, or the handlers and the
  // swaps stall. (Not a sleep: a 20 kHz signal interrupts a nanosleep
  // before its timer slack runs out, and sleep_for restarts it, for
  // minutes on end.)
  sigset_t ours;
  sigemptyset(&ours);
  sigaddset(&ours, g_sig_a);
  sigaddset(&ours, g_sig_b);
  sigaddset(&ours, swap_doorbell_signal());
#endif
  uint32_t fails = 0;
  for (uint64_t it = 0; armed && !stop.load(std::memory_order_relaxed); it++) {
    // A refused writer backs off a little (the numbers it burns are logged).
    if (attempt(w, 0) != 0 && ++fails % 16 == 0) std::this_thread::yield();
#ifdef STRESS_TSAN
    if ((it & 63) == 0) pthread_sigmask(SIG_UNBLOCK, &ours, nullptr);
#endif
  }
  timers.stop();  // no handler writes after this
  w.active = 0;
  tl_writer = nullptr;
}

// ---------------------------------------------------------------------------
// The checker: one per checking thread (reader, swapper, main)
// ---------------------------------------------------------------------------
enum GapKind : uint8_t { kWithin, kAtStart, kAtEnd, kWhole };

struct Gap {
  uint32_t cpu;
  uint8_t stream;
  GapKind kind;
  uint64_t period, a, b;  // missing [a, b]
  uint64_t next, prev;    // read after it (kWithin, kAtStart) / before it (kWithin, kAtEnd)
  Totals told;            // indications on the pages where it must be reported
};

// A page's loss flags and its events (stream, widened seq).
struct Parsed {
  bool flagged = false, stored = false;
  uint64_t count = 0;
  uint32_t n = 0;
  uint8_t stream[kMaxPageEvents];
  uint64_t seq[kMaxPageEvents];
};

class Checker {
 public:
  void fail(const std::string& msg) {
    errors++;
    if (messages.size() < 12) messages.push_back(msg);
  }

  // Checks and decodes a page read_page returned (rc) for `cpu`.
  void parse(const Storm& s, uint32_t cpu, const DataPage* pg, int rc, Parsed* out) {
    out->n = 0;
    out->flagged = out->stored = false;
    out->count = 0;
    const uint64_t commit = pg->commit;
    const uint32_t len = static_cast<uint32_t>(commit & kCommitMask);
    const std::string where = "cpu " + std::to_string(cpu) + ": ";
    if (rc <= 0 || static_cast<uint32_t>(rc) != len || len > s.capacity) {
      fail(where + "read_page returned " + std::to_string(rc) + ", page length " +
           std::to_string(len));
      return;
    }
    if (commit & ~(kCommitMask | kMissedEvents | kMissedStored))
      fail(where + "stray bits in a page's commit word");
    out->flagged = commit & kMissedEvents;
    out->stored = commit & kMissedStored;
    if (out->stored && !out->flagged) fail(where + "kMissedStored without kMissedEvents");
    if (out->stored) {
      if (len + 8 > s.capacity) fail(where + "kMissedStored but no room for the count");
      else out->count = load_u64(pg->data + len);
      if (out->count == 0) fail(where + "kMissedStored with a count of 0");
    }
    const Writer& w = *s.cpus[cpu].writer;
    PageWalker walker(pg->data, len, pg->time_stamp);
    PageEvent e;
    while (walker.next(&e)) {
      Decoded d;
      std::string why;
      if (!decode(e.data, e.length, &d, &why)) {
        fail(where + "torn event at offset " + std::to_string(e.offset) + ": " + why);
        continue;
      }
      if (d.typed || d.cpu != cpu || d.stream >= kStreams) {
        fail(where + "event of cpu " + std::to_string(d.cpu) + " stream " +
             std::to_string(d.stream) + " read here");
        continue;
      }
      if (d.stream == 0 && d.level > 0)  // -1: built before its reserve
        fail(where + "the thread wrote at nesting level " + std::to_string(d.level));
      // Widen the 32-bit seq: the largest number below `pub` with those bits.
      const uint64_t pub = w.ctx[d.stream].published.load(std::memory_order_relaxed);
      uint64_t seq = (pub & ~0xffffffffULL) | d.seq;
      if (seq >= pub) {
        if (pub < (1ULL << 32)) {
          fail(where + "stream " + std::to_string(d.stream) + ": seq " + std::to_string(d.seq) +
               " not yet written");
          continue;
        }
        seq -= 1ULL << 32;
      }
      if (out->n == kMaxPageEvents) {
        fail(where + "more events on a page than fit");
        break;
      }
      out->stream[out->n] = static_cast<uint8_t>(d.stream);
      out->seq[out->n] = seq;
      out->n++;
    }
    if (walker.error())
      fail(where + "corrupt page at offset " + std::to_string(walker.offset()));
  }

  // Appends a parsed page to stream `st` of `cpu`.
  void apply(uint32_t cpu, StreamState& st, const Parsed& p) {
    st.pages++;
    pages++;
    if (p.flagged) {
      flagged++;
      st.tot.flags++;
      if (p.stored) st.tot.stored += p.count;
      else st.tot.unknown++;
    }
    for (uint32_t i = 0; i < p.n; i++) event(cpu, st, p.stream[i], p.seq[i]);
    st.events += p.n;
    events += p.n;
  }
  // A page whose stream cannot be told (see read_once): its flag counts in
  // both candidates.
  static void apply_flag_only(StreamState& st, const Parsed& p) {
    if (!p.flagged) return;
    st.tot.flags++;
    if (p.stored) st.tot.stored += p.count;
    else st.tot.unknown++;
  }

  void event(uint32_t cpu, StreamState& st, uint32_t stream, uint64_t seq) {
    CtxInStream& c = st.ctx[stream];
    if (!c.any) {
      c = CtxInStream{true, seq, seq, st.tot, st.tot};
      return;
    }
    if (seq <= c.last) {
      fail("cpu " + std::to_string(cpu) + " stream " + std::to_string(stream) + " (period " +
           std::to_string(st.period) + "): seq " + std::to_string(seq) + " read after " +
           std::to_string(c.last) + " (duplicate or reordered)");
      return;
    }
    if (seq > c.last + 1)
      gap({cpu, static_cast<uint8_t>(stream), kWithin, st.period, c.last + 1, seq - 1, seq,
           c.last, st.tot - c.at_last});
    c.last = seq;
    c.at_last = st.tot;
  }

  // A gap the stored counts cover whatever failed is settled now; the rest
  // waits for the writers' failure logs (final once they have joined).
  void gap(const Gap& g) {
    gaps++;
    const uint64_t size = g.b - g.a + 1;
    const uint64_t upper = size - discards_in(g.a, g.b, discard_salt(g.cpu, g.stream));
    if (upper == 0 || g.told.unknown != 0 || g.told.stored >= upper) return;
    deferred.push_back(g);
  }

  uint64_t errors = 0;
  std::vector<std::string> messages;
  std::vector<Gap> deferred;
  uint64_t pages = 0, events = 0, flagged = 0, gaps = 0;
  uint64_t ambiguous = 0;  // reads during which a swap ran (attributed by `read`)
  uint64_t undecided = 0;  // of which pages without events (flag counted in both)
};

// ---------------------------------------------------------------------------
// Reader, swapper, toggler
// ---------------------------------------------------------------------------
// One read_page on `cpu` of the live buffer, attributed to its stream.
//
// The window (reading = 1, then the state word) pairs with the swapper's
// (state word, then reading) in seq_cst order: the swapper drains a
// swapped-out buffer only after every window that may have taken a page
// from it as the live one has closed. Swaps change the slot only while the
// state word is odd, so an unchanged even word means the page came from the
// buffer of period k; otherwise at most one swap (k -> k+1) completed, and
// the buffer's read counter, which only this reader moves until that drain,
// tells: it grew by the page's events (from the old buffer) or not at all
// (the new one). A page without events then stays undecided.
int read_once(Storm& s, uint32_t cpu, DataPage** page, bool full, Checker& ck, Parsed& pp) {
  CpuSide& cs = s.cpus[cpu];
  cs.reading.store(1, std::memory_order_seq_cst);
  const uint64_t s1 = cs.state.load(std::memory_order_seq_cst);
  int got = 0;
  if ((s1 & 1) == 0) {
    const uint64_t k = s1 >> 1;
    detail::CpuBuffer* x = cs.buf[k & 1];
    const uint64_t rx0 = x->read.load(std::memory_order_relaxed);
    const int rc = s.live->read_page(page, cpu, full);
    if (rc != -EAGAIN) {
      got = 1;
      ck.parse(s, cpu, *page, rc, &pp);
      const uint64_t s2 = cs.state.load(std::memory_order_seq_cst);
      StreamState* st = &cs.slot[k & 1];
      if (s2 != s1) {
        ck.ambiguous++;
        const uint64_t d = x->read.load(std::memory_order_relaxed) - rx0;
        if (pp.n == 0) {
          ck.undecided++;
          Checker::apply_flag_only(cs.slot[(k + 1) & 1], pp);
        } else if (d == 0) {
          st = &cs.slot[(k + 1) & 1];
          if (st->period != k + 1)
            ck.fail("cpu " + std::to_string(cpu) + ": a page of period " +
                    std::to_string(k + 1) + " before its stream began");
        } else if (d != pp.n) {
          ck.fail("cpu " + std::to_string(cpu) + ": a page of " + std::to_string(pp.n) +
                  " events moved the read counter by " + std::to_string(d));
        }
      }
      ck.apply(cpu, *st, pp);
    }
  }
  cs.reading.store(0, std::memory_order_release);
  return got;
}

// Reads every page left in `rb`'s CPU `cpu` into `st` (no writer can reach
// it), then closes the stream with the buffer's counters.
void drain_stream(Storm& s, RingBuffer& rb, uint32_t cpu, StreamState& st, DataPage** page,
                  Checker& ck, Parsed& pp) {
  for (;;) {
    const int rc = rb.read_page(page, cpu, false);
    if (rc == -EAGAIN) break;
    ck.parse(s, cpu, *page, rc, &pp);
    if (rc <= 0) break;
    ck.apply(cpu, st, pp);
  }
  st.stats = rb.stats(cpu);
  CpuSide& cs = s.cpus[cpu];
  if (cs.done.size() != st.period)
    ck.fail("cpu " + std::to_string(cpu) + ": stream of period " + std::to_string(st.period) +
            " closed after " + std::to_string(cs.done.size()) + " others");
  cs.done.push_back(st);
}

struct SwapCounts {
  uint64_t ok = 0, busy = 0, again = 0, timedout = 0, other = 0;
  uint64_t busy_retries = 0;  // -EBUSY answers retried inside swap_cpu_marshalled
  int last_other = 0;
};

void swapper_main(Storm& s, Checker& ck, SwapCounts& sc, std::atomic<uint64_t>& swaps,
                  const std::atomic<bool>& stop) {
  DataPage* page = s.spare->alloc_read_page();
  auto pp = std::make_unique<Parsed>();
  Rng rr(5);
  while (!stop.load(std::memory_order_relaxed)) {
    const uint32_t cpu = rr.below(s.ncpus);
    CpuSide& cs = s.cpus[cpu];
    const uint64_t k = cs.state.load(std::memory_order_relaxed) >> 1;  // ours alone
    if (k < s.max_swaps) {
      cs.state.fetch_or(1, std::memory_order_seq_cst);
      // A generous timeout: sanitizers deliver the doorbell late.
      SwapTrace trace;
      const int rc = swap_cpu_marshalled(*s.live, *s.spare, cpu, milliseconds(2000), &trace);
      sc.busy_retries += trace.busy;
      if (rc != 0) {
        cs.state.store(k << 1, std::memory_order_seq_cst);
        if (rc == -EBUSY) sc.busy++;
        else if (rc == -EAGAIN) sc.again++;
        else if (rc == -ETIMEDOUT) sc.timedout++;
        else {
          sc.other++;
          sc.last_other = rc;
        }
      } else {
        cs.state.store((k + 1) << 1, std::memory_order_seq_cst);
        sc.ok++;
        swaps.fetch_add(1, std::memory_order_relaxed);
        // Wait out a read window that may still count a page as period k's
        // live page (read_once).
        while (cs.reading.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
        StreamState& st = cs.slot[k & 1];
        if (s.spare->cpu_buffer(cpu) != cs.buf[k & 1] || st.period != k)
          ck.fail("cpu " + std::to_string(cpu) + ": swap " + std::to_string(k + 1) +
                  " left an unexpected buffer in the spare");
        drain_stream(s, *s.spare, cpu, st, &page, ck, *pp);
        st.reset(k + 2);  // its next generation, once swapped in again
        s.spare->reset_cpu(cpu);
      }
    }
    std::this_thread::sleep_for(microseconds(100 + rr.below(900)));
  }
  s.spare->free_read_page(page);
}

// Balanced pairs on random CPUs: disable/enable and off/on.
void toggler_main(Storm& s, std::atomic<uint64_t>& toggles, std::string& error,
                  const std::atomic<bool>& stop) {
  Rng rr(11);
  while (!stop.load(std::memory_order_relaxed)) {
    const uint32_t cpu = rr.below(s.ncpus);
    const bool off = rr.below(3) == 0;
    const int a = off ? s.live->record_off_cpu(cpu) : s.live->record_disable_cpu(cpu);
    std::this_thread::sleep_for(microseconds(rr.below(200)));
    const int b = off ? s.live->record_on_cpu(cpu) : s.live->record_enable_cpu(cpu);
    if ((a != 0 || b != 0) && error.empty())
      error = "record toggles returned " + std::to_string(a) + ", " + std::to_string(b);
    toggles.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(microseconds(200 + rr.below(1300)));
  }
}

// ---------------------------------------------------------------------------
// The final judgement
// ---------------------------------------------------------------------------
struct Excuse {
  uint64_t n, f, d;  // written and unread, failed, discarded
};
Excuse excuse(const Ctx& c, uint64_t salt, uint64_t a, uint64_t b) {
  uint64_t f = 0, d_failed = 0;
  const auto& rs = c.failed.ranges();
  auto it = std::upper_bound(rs.begin(), rs.end(), a,
                             [](uint64_t v, const Range& r) { return v < r.end; });
  for (; it != rs.end() && it->begin <= b; ++it) {
    const uint64_t lo = std::max(a, it->begin), hi = std::min(b, it->end - 1);
    f += hi - lo + 1;
    d_failed += discards_in(lo, hi, salt);
  }
  const uint64_t d = discards_in(a, b, salt) - d_failed;
  return {b - a + 1 - f - d, f, d};
}

// Null if the gap is covered; else the violation, in the words.
std::string judge(const Storm& s, const Gap& g) {
  const Ctx& c = s.cpus[g.cpu].writer->ctx[g.stream];
  const Excuse e = excuse(c, discard_salt(g.cpu, g.stream), g.a, g.b);
  if (e.n == 0) return {};
  if (g.told.flags != 0 && (g.told.unknown != 0 || g.told.stored >= e.n)) return {};
  char head[160], counts[160];
  std::snprintf(head, sizeof head, "cpu %u stream %u, period %llu: ", g.cpu, g.stream,
                static_cast<unsigned long long>(g.period));
  std::snprintf(counts, sizeof counts, "(%llu written and unread, %llu failed, %llu discarded)",
                static_cast<unsigned long long>(e.n), static_cast<unsigned long long>(e.f),
                static_cast<unsigned long long>(e.d));
  const std::string range = std::to_string(g.a) + ".." + std::to_string(g.b);
  std::string what;
  switch (g.kind) {
    case kWithin:
      what = "gap " + range + " before seq " + std::to_string(g.next) + " " + counts;
      break;
    case kAtStart:
      what = "gap " + range + " before seq " + std::to_string(g.next) +
             ", the first read in the period's stream, " + counts;
      break;
    case kAtEnd:
      what = "gap " + range + " after seq " + std::to_string(g.prev) +
             ", the last read in the period's stream, " + counts;
      break;
    case kWhole:
      what = "gap " + range + ", all its numbers of the period, none read, " + std::string(counts);
      break;
  }
  const std::string since = g.kind == kWithin || g.kind == kAtEnd
                                ? "since seq " + std::to_string(g.prev) + " was read"
                                : "in the period's stream before it";
  if (g.told.flags == 0) return head + what + " and no MISSED indication " + since;
  return head + what + " and the MISSED indications " + since + " count only " +
         std::to_string(g.told.stored) + " lost events";
}

struct Case {
  const char* name;
  uint32_t pages;
  uint32_t writers;
  uint32_t bound;  // writers 0..bound-1 bind, the rest claim
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class OverwriteStorm : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    g_sig_a = SIGRTMIN + 5;
    g_sig_b = SIGRTMIN + 6;
    ASSERT_EQ(install_swap_doorbell(0), 0);
    // Each may interrupt the other: depth 3.
    ASSERT_TRUE(install_nesting_handler(on_timer, {g_sig_a, g_sig_b}));
  }
};

TEST_P(OverwriteStorm, EveryLossIsReported) {
  const Case& cs = GetParam();
  const double seconds = case_seconds();
  Options opt;
  opt.ncpus = cs.writers;
  opt.page_size = 4096;
  opt.pages_per_cpu = cs.pages;
  opt.mode = Mode::kOverwrite;
  Error err;
  auto live = RingBuffer::create(opt, &err);
  ASSERT_TRUE(live) << err.message;
  auto spare = RingBuffer::create(opt, &err);
  ASSERT_TRUE(spare) << err.message;

  Storm s;
  s.live = live.get();
  s.spare = spare.get();
  s.ncpus = cs.writers;
  s.capacity = opt.page_size - kPageHeaderSize;
  // The run lasts at most 2 * seconds (see below).
  s.max_swaps = static_cast<uint64_t>(2 * seconds * kSwapsPerCpuSecond) + 64;
  s.cpus = std::make_unique<CpuSide[]>(s.ncpus);
  for (uint32_t c = 0; c < s.ncpus; c++) {
    s.cpus[c].buf[0] = live->cpu_buffer(c);
    s.cpus[c].buf[1] = spare->cpu_buffer(c);
    s.cpus[c].slot[0].reset(0);
    s.cpus[c].slot[1].reset(1);
  }
  auto writers = std::make_unique<Writer[]>(cs.writers);
  // Handlers must not allocate: their logs have room for every failure
  // (refusals come in runs: one per disable, swap race or crossing, far
  // fewer than 5000 a second) and a leg per swap.
  const size_t handler_ranges = static_cast<size_t>(2 * seconds * 5000) + 65536;
  for (uint32_t i = 0; i < cs.writers; i++) {
    Writer& w = writers[i];
    w.storm = &s;
    w.rb = live.get();
    w.index = i;
    w.bind = i < cs.bound;
    for (uint32_t st = 0; st < kStreams; st++) {
      Ctx& c = w.ctx[st];
      c.rng = Rng(1000 * i + st + 1);
      if (st != 0) {
        c.failed = RangeLog(handler_ranges, /*grow=*/false);
        c.legs.reserve(s.max_swaps + 2);
        c.grow_legs = false;
      }
    }
  }

  std::atomic<bool> stop_aux{false}, stop_writers{false}, stop_reader{false};
  std::atomic<uint32_t> bound{0}, ready{0};
  std::vector<std::thread> wthreads;
  for (uint32_t i = 0; i < cs.writers; i++)
    wthreads.emplace_back(writer_main, std::ref(writers[i]), std::ref(bound), cs.bound,
                          std::ref(ready), std::cref(stop_writers));
  while (ready.load() < cs.writers) std::this_thread::sleep_for(microseconds(100));
  bool setup_ok = true;
  for (uint32_t i = 0; i < cs.writers; i++) {
    Writer& w = writers[i];
    if (!w.error.empty() || w.cpu < 0 || static_cast<uint32_t>(w.cpu) >= s.ncpus ||
        s.cpus[w.cpu].writer != nullptr) {
      ADD_FAILURE() << "writer " << i << ": cpu " << w.cpu << " " << w.error;
      setup_ok = false;
      continue;
    }
    s.cpus[w.cpu].writer = &w;
  }

  Checker reader_ck, swapper_ck, main_ck;
  SwapCounts sc;
  std::atomic<uint64_t> swaps{0}, toggles{0};
  std::string toggle_error;
  std::thread reader, swapper, toggler;
  if (setup_ok) {
    reader = std::thread([&] {
      DataPage* page = live->alloc_read_page();
      auto pp = std::make_unique<Parsed>();
      Rng rr(77);
      for (uint64_t round = 0; !stop_reader.load(std::memory_order_relaxed); round++) {
        int got = 0;
        for (uint32_t c = 0; c < s.ncpus; c++)
          got += read_once(s, c, &page, rr.below(4) == 0, reader_ck, *pp);
        // Now and then a stall, so that the writers lap the ring.
        if (round % 128 == 127) std::this_thread::sleep_for(microseconds(rr.below(1500)));
        else if (got == 0) std::this_thread::yield();
      }
      live->free_read_page(page);
    });
    swapper = std::thread(swapper_main, std::ref(s), std::ref(swapper_ck), std::ref(sc),
                          std::ref(swaps), std::cref(stop_aux));
    toggler = std::thread(toggler_main, std::ref(s), std::ref(toggles), std::ref(toggle_error),
                          std::cref(stop_aux));
  }

  // At least `seconds`; longer (up to 2x) while the storm has not yet shown
  // its parts (a loaded machine, sanitizers).
  auto handler_events = [&] {
    uint64_t n = 0;
    for (uint32_t i = 0; i < cs.writers; i++)
      n += writers[i].handler_ok.load(std::memory_order_relaxed);
    return n;
  };
  const auto t0 = steady_clock::now();
  for (;;) {
    std::this_thread::sleep_for(milliseconds(10));
    const auto now = steady_clock::now();
    if (!setup_ok || now >= t0 + duration<double>(2 * seconds)) break;
    if (now >= t0 + duration<double>(seconds) && handler_events() >= kMinHandlerEvents &&
        swaps.load() >= kMinSwapsPerCpu * s.ncpus && toggles.load() >= 10)
      break;
  }
  const double elapsed = duration<double>(steady_clock::now() - t0).count();
  // Stopping, timed: a phase that takes long is a finding too.
  double stop_s[3];
  auto t_stop = steady_clock::now();
  auto lap = [&t_stop] {
    const auto now = steady_clock::now();
    const double d = duration<double>(now - t_stop).count();
    t_stop = now;
    return d;
  };
  stop_aux.store(true);
  if (swapper.joinable()) swapper.join();
  if (toggler.joinable()) toggler.join();
  stop_s[0] = lap();
  stop_writers.store(true);
  for (auto& t : wthreads) t.join();
  stop_s[1] = lap();
  stop_reader.store(true);
  if (reader.joinable()) reader.join();
  stop_s[2] = lap();
  ASSERT_TRUE(setup_ok);

  // The last period of each CPU: drain the live buffer.
  {
    DataPage* page = live->alloc_read_page();
    auto pp = std::make_unique<Parsed>();
    for (uint32_t c = 0; c < s.ncpus; c++) {
      const uint64_t k = s.cpus[c].state.load() >> 1;
      drain_stream(s, *live, c, s.cpus[c].slot[k & 1], &page, main_ck, *pp);
    }
    live->free_read_page(page);
  }

  // Judge: the deferred gaps, then each context's periods from its legs.
  std::vector<std::string> violations;
  uint64_t nviolations = 0;
  auto violation = [&](std::string m) {
    nviolations++;
    if (violations.size() < 12) violations.push_back(std::move(m));
  };
  uint64_t deferred = 0;
  for (const Checker* ck : {&reader_ck, &swapper_ck, &main_ck}) {
    deferred += ck->deferred.size();
    for (const Gap& g : ck->deferred)
      if (std::string m = judge(s, g); !m.empty()) violation(m);
  }
  uint64_t boundary_gaps = 0;
  for (uint32_t cpu = 0; cpu < s.ncpus; cpu++) {
    const CpuSide& side = s.cpus[cpu];
    const Writer& w = *side.writer;
    std::vector<uint8_t> wrote(side.done.size() * kStreams, 0);
    for (uint32_t st = 0; st < kStreams; st++) {
      const Ctx& c = w.ctx[st];
      const std::string who = "cpu " + std::to_string(cpu) + " stream " + std::to_string(st);
      if (c.legs_full || c.failed.overflow()) {
        violation(who + ": the writer's logs overflowed (test limits)");
        continue;
      }
      for (size_t li = 0; li < c.legs.size(); li++) {
        const Leg& leg = c.legs[li];
        const uint64_t next = li + 1 < c.legs.size() ? c.legs[li + 1].first : c.seq;
        if (leg.period >= side.done.size() || (li > 0 && leg.period <= c.legs[li - 1].period)) {
          violation(who + ": wrote in period " + std::to_string(leg.period) + " of " +
                    std::to_string(side.done.size()));
          continue;
        }
        wrote[leg.period * kStreams + st] = 1;
        const StreamState& ss = side.done[leg.period];
        const CtxInStream& r = ss.ctx[st];
        auto boundary = [&](GapKind kind, uint64_t a, uint64_t b, Totals told) {
          if (a > b) return;
          boundary_gaps++;
          const Gap g{cpu, static_cast<uint8_t>(st), kind, leg.period, a, b, r.first, r.last, told};
          if (std::string m = judge(s, g); !m.empty()) violation(m);
        };
        if (!r.any) {
          boundary(kWhole, leg.first, next - 1, ss.tot);
          continue;
        }
        if (r.first < leg.first || r.last >= next) {
          violation(who + ": read " + std::to_string(r.first) + ".." + std::to_string(r.last) +
                    " in period " + std::to_string(leg.period) + "'s stream, written there: " +
                    std::to_string(leg.first) + ".." + std::to_string(next - 1));
          continue;
        }
        if (r.first > leg.first) boundary(kAtStart, leg.first, r.first - 1, r.at_first);
        if (r.last + 1 < next) boundary(kAtEnd, r.last + 1, next - 1, ss.tot - r.at_last);
      }
    }
    for (size_t k = 0; k < side.done.size(); k++)
      for (uint32_t st = 0; st < kStreams; st++)
        if (side.done[k].ctx[st].any && !wrote[k * kStreams + st])
          violation("cpu " + std::to_string(cpu) + " stream " + std::to_string(st) +
                    ": events read in period " + std::to_string(k) +
                    "'s stream, which it never wrote in");
  }

  // Accounting, per generation and per CPU.
  uint64_t events = 0, pages = 0, flagged = 0, gens = 0, overruns = 0, handler_ok = 0;
  uint64_t nested = 0, depth3 = 0;
  for (uint32_t cpu = 0; cpu < s.ncpus; cpu++) {
    SCOPED_TRACE("cpu " + std::to_string(cpu));
    const CpuSide& side = s.cpus[cpu];
    const Writer& w = *side.writer;
    const int bad_buffer = w.bad_buffer;
    EXPECT_EQ(bad_buffer, 0) << "a reservation in a CPU buffer of neither slot";
    Tally t;
    for (uint32_t st = 0; st < kStreams; st++) t.merge(w.ctx[st].tally);
    CpuStats sum = spare->stats(cpu);  // the spare's buffer, reset since its drain
    for (const StreamState& ss : side.done) {
      const CpuStats& g = ss.stats;
      uint64_t commits = 0, discards = 0;
      for (uint32_t st = 0; st < kStreams; st++) {
        const Ctx& c = w.ctx[st];
        for (size_t li = 0; li < c.legs.size(); li++)
          if (c.legs[li].period == ss.period) {
            commits += c.legs[li].commits;
            discards += c.legs[li].discards;
          }
      }
      const std::string info = "period " + std::to_string(ss.period) + ": " + stats_str(g) +
                               " discarded=" + std::to_string(g.discarded);
      EXPECT_EQ(g.entries, g.read + g.overrun) << info;
      EXPECT_EQ(g.read, ss.events) << info;
      EXPECT_EQ(g.entries, commits) << info;
      EXPECT_EQ(g.discarded, discards) << info;
      if (ss.tot.unknown == 0) {
        EXPECT_LE(ss.tot.stored, g.lost()) << info;
      }
      sum += g;
      pages += ss.pages;
      events += ss.events;
      flagged += ss.tot.flags;
    }
    gens += side.done.size();
    overruns += sum.overrun;
    const std::string info = "\n  sum:    " + stats_str(sum) + " discarded=" +
                             std::to_string(sum.discarded) + "\n  writer: " + tally_str(t);
    EXPECT_EQ(t.other, 0u) << "unexpected return code " << t.last_other << info;
    EXPECT_EQ(t.attempts,
              sum.entries + sum.dropped + sum.commit_overrun + sum.nested_dropped + sum.disabled)
        << info;
    EXPECT_EQ(t.ok, sum.entries) << info;
    EXPECT_EQ(t.discards, sum.discarded) << info;
    EXPECT_EQ(t.enospc + t.eloop, sum.dropped + sum.commit_overrun + sum.nested_dropped) << info;
    EXPECT_EQ(t.eperm + t.eagain, sum.disabled) << info;
    // Every disable was matched by an enable, every off by an on.
    for (int b = 0; b < 2; b++)
      EXPECT_EQ(side.buf[b]->record_disabled.load(), 0u) << "buffer " << b << info;
    handler_ok += w.handler_ok.load();
    for (uint32_t st = 0; st < kStreams; st++) {
      nested += w.ctx[st].nested;
      depth3 += w.ctx[st].depth3;
    }
    std::printf("[ %-15s ] cpu %u (%s): %llu periods; %s discarded=%llu\n  writer: %s; "
                "handler calls %llu/%llu\n",
                cs.name, cpu, w.bind ? "bound" : "claimed",
                static_cast<unsigned long long>(side.done.size()), stats_str(sum).c_str(),
                static_cast<unsigned long long>(sum.discarded), tally_str(t).c_str(),
                static_cast<unsigned long long>(w.ctx[1].calls),
                static_cast<unsigned long long>(w.ctx[2].calls));
  }
  uint64_t errors = 0, ambiguous = 0, undecided = 0, gaps = boundary_gaps;
  std::string messages;
  for (const Checker* ck : {&reader_ck, &swapper_ck, &main_ck}) {
    errors += ck->errors;
    ambiguous += ck->ambiguous;
    undecided += ck->undecided;
    gaps += ck->gaps;
    for (const auto& m : ck->messages) messages += "\n  " + m;
  }
  std::printf("[ %-15s ] %.2f s: %llu events verified on %llu pages (%llu with MISSED), "
              "%llu generations; gaps %llu (%llu waited for the failure logs), violations "
              "%llu; swaps %llu (busy %llu after %llu retries, disabled %llu, timed out %llu), "
              "toggles %llu; "
              "handler events %llu, nested attempts %llu (%llu at depth 3); reads beside a "
              "swap %llu (%llu without events)\n",
              cs.name, elapsed, static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(pages), static_cast<unsigned long long>(flagged),
              static_cast<unsigned long long>(gens), static_cast<unsigned long long>(gaps),
              static_cast<unsigned long long>(deferred),
              static_cast<unsigned long long>(nviolations), static_cast<unsigned long long>(sc.ok),
              static_cast<unsigned long long>(sc.busy),
              static_cast<unsigned long long>(sc.busy_retries),
              static_cast<unsigned long long>(sc.again),
              static_cast<unsigned long long>(sc.timedout),
              static_cast<unsigned long long>(toggles.load()),
              static_cast<unsigned long long>(handler_ok), static_cast<unsigned long long>(nested),
              static_cast<unsigned long long>(depth3), static_cast<unsigned long long>(ambiguous),
              static_cast<unsigned long long>(undecided));
  std::printf("  stopping took %.3f s (swapper and toggler), %.3f s (writers), %.3f s (reader)\n",
              stop_s[0], stop_s[1], stop_s[2]);
  for (const auto& v : violations) std::printf("  VIOLATION %s\n", v.c_str());
  std::fflush(stdout);

  EXPECT_EQ(errors, 0u) << messages;
  EXPECT_EQ(nviolations, 0u) << "first ones above";
  EXPECT_EQ(toggle_error, "");
  EXPECT_EQ(sc.other, 0u) << "swap returned " << sc.last_other;
  // The storm was a storm.
  EXPECT_GE(handler_ok, kMinHandlerEvents) << "the handlers hardly wrote";
  EXPECT_GE(sc.ok, kMinSwapsPerCpu * s.ncpus) << "hardly any swap";
  EXPECT_GT(overruns, 0u) << "the rings never wrapped";
  EXPECT_GT(flagged, 0u) << "no page carried a loss indication";
}

INSTANTIATE_TEST_SUITE_P(Stress, OverwriteStorm,
                         ::testing::Values(Case{"pages2_writers4", 2, 4, 2},
                                           Case{"pages4_writers3", 4, 3, 2},
                                           Case{"pages4_writers2", 4, 2, 1}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
