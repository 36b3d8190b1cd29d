// Unit tests of the reader side (R1..R4) and of what the reader sees of the
// writer's refusals: read_page (copy vs. page trade, `full`, missed-event
// flags), peek/consume, the Iterator, discard, producer/consumer drops and
// record disable/off. Single-threaded and deterministic unless a test says
// otherwise (a few start a second thread to own a CPU, in lock step).
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

// Binds the calling thread for the scope, and gives the slot back after (the
// test thread runs every test: it must not collect bindings).
struct Bound {
  Bound(RingBuffer& r, uint32_t cpu) : rb(r), rc(r.bind_thread(cpu)) {}
  ~Bound() { rb.unbind_thread(); }
  RingBuffer& rb;
  int rc;
};

std::unique_ptr<RingBuffer> make(uint32_t pages, Mode mode, uint32_t ncpus = 1,
                                 ClockKind clock = ClockKind::kCounter, uint32_t max_cpus = 0) {
  Options o;
  o.ncpus = ncpus;
  o.max_cpus = max_cpus;
  o.page_size = 4096;
  o.pages_per_cpu = pages;
  o.mode = mode;
  o.clock = clock;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  EXPECT_TRUE(rb) << err.message;
  return rb;
}

// Payloads: `size` bytes (>= 8, multiple of 4): the sequence number, then
// bytes derived from it, so a torn or misplaced payload is detected.
std::vector<unsigned char> payload(uint64_t seq, uint32_t size) {
  std::vector<unsigned char> v(size);
  store_u64(v.data(), seq);
  for (uint32_t k = 8; k < size; k++) v[k] = static_cast<unsigned char>(seq * 13 + k);
  return v;
}
int write_seq(RingBuffer& rb, uint64_t seq, uint32_t size) {
  const auto v = payload(seq, size);
  return rb.write(v.data(), size);
}
// The sequence number of an event written by write_seq, after checking the
// rest of its payload.
uint64_t seq_of(const PageEvent& e, uint32_t size) {
  EXPECT_EQ(e.length, size);
  if (e.length < 8) return ~0ULL;
  const uint64_t seq = load_u64(e.data);
  const auto want = payload(seq, size);
  EXPECT_EQ(0, std::memcmp(e.data, want.data(), size)) << "payload of seq " << seq;
  return seq;
}

// What a series of read_page calls handed back.
struct Drained {
  std::vector<uint64_t> seqs;
  uint64_t stored_missed = 0;  // sum of the counts stored after the data
  int pages = 0;
  int flagged = 0;       // pages with kMissedEvents
  int traded = 0;        // pages handed back without a copy
  int copied_full = 0;   // full = true reads that copied a page's rest
  uint64_t last_ts = 0;
};

// Walks one page that read_page returned: checks the commit word against the
// return value, the time order, and the missed-event flags: an unflagged page
// continues the sequence, a flagged one skips exactly the stored count.
void walk_returned_page(const DataPage* p, int len, uint32_t size, Drained* d) {
  ASSERT_GT(len, 0);
  ASSERT_EQ(p->commit & kCommitMask, static_cast<uint64_t>(len));
  uint64_t missed = 0;
  if (p->commit & kMissedEvents) {
    d->flagged++;
    if (p->commit & kMissedStored) {
      ASSERT_LE(static_cast<uint32_t>(len) + 8, 4096 - kPageHeaderSize);
      missed = load_u64(p->data + len);
      EXPECT_GT(missed, 0u);
      d->stored_missed += missed;
    }
  } else {
    EXPECT_EQ(p->commit & kMissedStored, 0u);
  }
  PageWalker w(p->data, static_cast<uint32_t>(len), p->time_stamp);
  PageEvent e;
  bool first = true;
  while (w.next(&e)) {
    const uint64_t seq = seq_of(e, size);
    if (!d->seqs.empty()) {
      const uint64_t want = d->seqs.back() + 1 + (first ? missed : 0);
      // (A flagged page without the stored count cannot be checked.)
      if (!(first && (p->commit & kMissedEvents) && !(p->commit & kMissedStored))) {
        EXPECT_EQ(seq, want) << "sequence gap not reported by the page flags";
      }
    }
    EXPECT_GE(e.ts, d->last_ts) << "time went backwards at seq " << seq;
    d->last_ts = e.ts;
    d->seqs.push_back(seq);
    first = false;
  }
  EXPECT_FALSE(w.error());
  d->pages++;
}

// Reads CPU `cpu` page by page: first whole pages (full = true), then the
// partial rest. `spare` is the caller's page (it may come back different).
void drain(RingBuffer& rb, uint32_t cpu, uint32_t size, DataPage** spare, Drained* d) {
  for (;;) {
    DataPage* before = *spare;
    const int n = rb.read_page(spare, cpu, true);
    if (n == -EAGAIN) break;
    ASSERT_GT(n, 0);
    // full = true hands out a whole page by trading (the page came out of
    // the ring), or copies the unread rest of a partly read page that the
    // writer has left.
    if (*spare != before) {
      d->traded++;
    } else {
      d->copied_full++;
    }
    walk_returned_page(*spare, n, size, d);
  }
  for (;;) {
    DataPage* before = *spare;
    const int n = rb.read_page(spare, cpu, false);
    if (n == -EAGAIN) break;
    ASSERT_GT(n, 0);
    if (*spare != before) d->traded++;
    walk_returned_page(*spare, n, size, d);
  }
}

struct PageHolder {
  explicit PageHolder(RingBuffer& r) : rb(r), p(r.alloc_read_page()) {}
  ~PageHolder() { rb.free_read_page(p); }
  RingBuffer& rb;
  DataPage* p;
};

// ---------------------------------------------------------------------------
// read_page
// ---------------------------------------------------------------------------

// With full = true, a partly filled page is not handed out (-EAGAIN, nothing
// counted as read). With full = false, its committed part is copied into the
// caller's page (same pointer back), with the page time stamp and commit set
// so that PageWalker decodes the events with their times.
TEST(ReadPage, FullRefusesAPartialPageAndCopyReturnsIt) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint64_t t0 = rb->clock().now();
  for (uint64_t i = 0; i < 10; i++) ASSERT_EQ(write_seq(*rb, i, 16), 0);
  const uint64_t t1 = rb->clock().now();
  PageHolder h(*rb);
  DataPage* const mine = h.p;
  EXPECT_EQ(rb->read_page(&h.p, 0, true), -EAGAIN);
  EXPECT_EQ(h.p, mine);
  EXPECT_EQ(rb->stats(0).read, 0u);

  const int n = rb->read_page(&h.p, 0, false);
  // 10 x (4-byte header + 16), plus a time extend if a delta did not fit
  // 27 bits (a preempted test).
  ASSERT_GE(n, 10 * 20);
  ASSERT_LE(n, 10 * 20 + 9 * 8);
  EXPECT_EQ(h.p, mine);   // copied into our page
  Drained d;
  walk_returned_page(h.p, n, 16, &d);
  ASSERT_EQ(d.seqs.size(), 10u);
  for (uint64_t i = 0; i < 10; i++) EXPECT_EQ(d.seqs[i], i);
  EXPECT_EQ(d.flagged, 0);
  EXPECT_GE(h.p->time_stamp, t0);
  EXPECT_LE(d.last_ts, t1);
  EXPECT_EQ(rb->stats(0).read, 10u);
  // Nothing new: nothing to copy, and the events are not handed out twice.
  EXPECT_EQ(rb->read_page(&h.p, 0, false), -EAGAIN);
  EXPECT_EQ(rb->stats(0).read, 10u);
}

// Successive copies of the same page continue where the last one ended, and
// each copy's time stamp is the time its first delta is relative to.
TEST(ReadPage, SuccessiveCopiesContinueInOrderAndInTime) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  PageHolder h(*rb);
  Drained d;
  uint64_t seq = 0;
  for (int round = 0; round < 5; round++) {
    const uint64_t t0 = rb->clock().now();
    for (int i = 0; i < 7; i++) ASSERT_EQ(write_seq(*rb, seq++, 12), 0);
    const int n = rb->read_page(&h.p, 0, false);
    ASSERT_GT(n, 0);
    const size_t had = d.seqs.size();
    walk_returned_page(h.p, n, 12, &d);
    ASSERT_EQ(d.seqs.size(), had + 7);
    EXPECT_GE(d.last_ts, t0);  // the copy's base time is right
  }
  for (uint64_t i = 0; i < seq; i++) EXPECT_EQ(d.seqs[i], i);
  EXPECT_EQ(rb->stats(0).read, seq);
}

// After several pages are filled, full = true hands back whole pages by
// trading the caller's page for the ring's (no copy), oldest first; then the
// partial last page is copied. Every event comes back exactly once, in order.
TEST(ReadPage, FullPagesAreTradedAndEveryEventIsReadOnce) {
  auto rb = make(8, Mode::kProducerConsumer);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint32_t size = 28;
  const uint64_t n = 700;  // ~5 pages of 4 KiB
  for (uint64_t i = 0; i < n; i++) ASSERT_EQ(write_seq(*rb, i, size), 0);
  PageHolder h(*rb);
  Drained d;
  drain(*rb, 0, size, &h.p, &d);
  EXPECT_GE(d.traded, 4);
  EXPECT_EQ(d.copied_full, 0);  // no page was partly read: all traded
  ASSERT_EQ(d.seqs.size(), n);
  for (uint64_t i = 0; i < n; i++) ASSERT_EQ(d.seqs[i], i);
  EXPECT_EQ(d.flagged, 0);
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, n);
  EXPECT_EQ(s.read, n);
  EXPECT_EQ(s.lost(), 0u);
  // The traded pages keep working: write and read again.
  for (uint64_t i = n; i < 2 * n; i++) ASSERT_EQ(write_seq(*rb, i, size), 0);
  drain(*rb, 0, size, &h.p, &d);
  ASSERT_EQ(d.seqs.size(), 2 * n);
  for (uint64_t i = 0; i < 2 * n; i++) ASSERT_EQ(d.seqs[i], i);
}

// A page partly read (by consume or a copy) that the writer has since left
// is complete: read_page with full = true hands out its unread rest, as the
// kernel does, instead of refusing it until someone reads with full = false.
TEST(ReadPage, FullReturnsTheRestOfAPartlyReadPageTheWriterLeft) {
  for (int how = 0; how < 2; how++) {
    SCOPED_TRACE(how == 0 ? "after consume" : "after a copy");
    auto rb = make(4, Mode::kProducerConsumer);
    Bound b(*rb, 0);
    ASSERT_EQ(b.rc, 0);
    PageHolder h(*rb);
    const uint32_t size = 28;
    uint64_t seq = 0;
    for (; seq < 10; seq++) ASSERT_EQ(write_seq(*rb, seq, size), 0);
    Drained d;
    if (how == 0) {
      PageEvent e;
      for (int i = 0; i < 3; i++) {
        ASSERT_EQ(rb->consume(0, &e), 0);
        d.seqs.push_back(seq_of(e, size));
        d.last_ts = e.ts;
      }
    } else {
      const int n = rb->read_page(&h.p, 0, false);
      ASSERT_GT(n, 0);
      walk_returned_page(h.p, n, size, &d);
    }
    // Fill the page and two more: the writer leaves the partly read page.
    for (; seq < 400; seq++) ASSERT_EQ(write_seq(*rb, seq, size), 0);
    for (;;) {
      const int n = rb->read_page(&h.p, 0, true);
      if (n == -EAGAIN) break;
      ASSERT_GT(n, 0);
      walk_returned_page(h.p, n, size, &d);
    }
    // Everything but the page the writer is on came out, in order.
    ASSERT_GE(d.seqs.size(), 2u * (4080 / 32));
    for (uint64_t i = 0; i < d.seqs.size(); i++) ASSERT_EQ(d.seqs[i], i);
    drain(*rb, 0, size, &h.p, &d);
    ASSERT_EQ(d.seqs.size(), seq);
    EXPECT_EQ(rb->stats(0).read, seq);
  }
}

// Overwrite mode, small ring, written far past its capacity: the first page
// read says events were missed, and (it has room) stores how many; the
// stored counts add up to stats().overrun, the events read are exactly the
// newest ones, and written == read + overrun. A second round of overwriting
// between reads is reported again.
TEST(ReadPage, OverwriteReportsMissedEventsInTheCommitFlags) {
  // Monotonic ns: deltas fit 27 bits (no time extend would eat the room the
  // page keeps for the missed count: 4080 - 145 x 28 = 20 bytes).
  auto rb = make(3, Mode::kOverwrite, 1, ClockKind::kMono);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint32_t size = 24;
  uint64_t seq = 0;
  for (; seq < 3000; seq++) ASSERT_EQ(write_seq(*rb, seq, size), 0);
  ASSERT_GT(rb->stats(0).overrun, 0u);
  PageHolder h(*rb);
  DataPage* const mine = h.p;
  const int n = rb->read_page(&h.p, 0, true);
  ASSERT_GT(n, 0);
  EXPECT_NE(h.p, mine);
  EXPECT_TRUE(h.p->commit & kMissedEvents);
  ASSERT_TRUE(h.p->commit & kMissedStored);
  const uint64_t lost_first = load_u64(h.p->data + n);
  EXPECT_EQ(lost_first, rb->stats(0).overrun);
  Drained d;
  walk_returned_page(h.p, n, size, &d);
  ASSERT_FALSE(d.seqs.empty());
  EXPECT_EQ(d.seqs.front(), lost_first);  // the oldest events were the lost ones
  drain(*rb, 0, size, &h.p, &d);
  EXPECT_EQ(d.flagged, 1);
  EXPECT_EQ(d.seqs.back(), seq - 1);

  // Round two: overwrite again, then read everything.
  for (; seq < 9000; seq++) ASSERT_EQ(write_seq(*rb, seq, size), 0);
  drain(*rb, 0, size, &h.p, &d);
  EXPECT_EQ(d.flagged, 2);
  EXPECT_EQ(d.seqs.back(), seq - 1);

  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, seq);
  EXPECT_EQ(d.stored_missed, s.overrun);
  EXPECT_EQ(s.read, d.seqs.size());
  EXPECT_EQ(s.entries, s.read + s.overrun);
  EXPECT_EQ(s.lost(), s.overrun);
}

// The same losses seen through consume: the first event consumed after the
// overwrite reports how many were lost before it, the next one none.
TEST(Consume, OverwriteReportsLostEventsBeforeTheNextEvent) {
  auto rb = make(3, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  for (uint64_t i = 0; i < 2000; i++) ASSERT_EQ(write_seq(*rb, i, 16), 0);
  const uint64_t overrun = rb->stats(0).overrun;
  ASSERT_GT(overrun, 0u);
  PageEvent e;
  uint64_t lost = 12345;
  ASSERT_EQ(rb->peek(0, &e, &lost), 0);
  EXPECT_EQ(lost, overrun);
  ASSERT_EQ(rb->consume(0, &e, &lost), 0);
  EXPECT_EQ(lost, overrun);
  EXPECT_EQ(seq_of(e, 16), overrun);
  ASSERT_EQ(rb->consume(0, &e, &lost), 0);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(seq_of(e, 16), overrun + 1);
  uint64_t count = 2, prev_ts = e.ts, next = overrun + 2;
  while (rb->consume(0, &e, &lost) == 0) {
    EXPECT_EQ(lost, 0u);
    EXPECT_EQ(seq_of(e, 16), next++);
    EXPECT_GE(e.ts, prev_ts);
    prev_ts = e.ts;
    count++;
  }
  EXPECT_EQ(next, 2000u);
  EXPECT_EQ(rb->stats(0).read, count);
  EXPECT_EQ(rb->stats(0).entries, count + overrun);
}

// A reader that looked at an empty CPU (taking its empty page as the reader
// page) and then reads the events written after: they carry their real
// times, not times relative to zero. Checked for consume, read_page and the
// iterator.
TEST(Reader, EventsWrittenAfterAnEmptyReadKeepTheirTime) {
  for (int how = 0; how < 3; how++) {
    SCOPED_TRACE(how == 0 ? "consume" : how == 1 ? "read_page" : "iterator");
    auto rb = make(4, Mode::kProducerConsumer);
    Bound b(*rb, 0);
    ASSERT_EQ(b.rc, 0);
    PageEvent e;
    PageHolder h(*rb);
    ASSERT_EQ(rb->peek(0, &e), -EAGAIN);
    ASSERT_EQ(rb->read_page(&h.p, 0, false), -EAGAIN);
    const uint64_t t0 = rb->clock().now();
    for (uint64_t i = 0; i < 3; i++) ASSERT_EQ(write_seq(*rb, i, 8), 0);
    const uint64_t t1 = rb->clock().now();
    std::vector<uint64_t> ts;
    if (how == 0) {
      while (rb->consume(0, &e) == 0) ts.push_back(e.ts);
    } else if (how == 1) {
      const int n = rb->read_page(&h.p, 0, false);
      ASSERT_GT(n, 0);
      PageWalker w(h.p->data, static_cast<uint32_t>(n), h.p->time_stamp);
      while (w.next(&e)) ts.push_back(e.ts);
    } else {
      RingBuffer::Iterator it(*rb, 0);
      ASSERT_EQ(it.status(), 0);
      while (it.next(&e)) ts.push_back(e.ts);
    }
    ASSERT_EQ(ts.size(), 3u);
    for (uint64_t t : ts) {
      EXPECT_GE(t, t0);
      EXPECT_LE(t, t1);
    }
  }
}

// ---------------------------------------------------------------------------
// peek / consume
// ---------------------------------------------------------------------------

// peek leaves the event in place (twice the same event), consume returns it
// and moves on; neither hands out an event twice nor skips one.
TEST(Consume, PeekDoesNotConsume) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  for (uint64_t i = 0; i < 3; i++) ASSERT_EQ(write_seq(*rb, i, 8), 0);
  PageEvent a, c;
  ASSERT_EQ(rb->peek(0, &a), 0);
  ASSERT_EQ(rb->peek(0, &c), 0);
  EXPECT_EQ(seq_of(a, 8), 0u);
  EXPECT_EQ(seq_of(c, 8), 0u);
  EXPECT_EQ(a.ts, c.ts);
  EXPECT_EQ(a.offset, c.offset);
  EXPECT_EQ(rb->stats(0).read, 0u);
  ASSERT_EQ(rb->consume(0, &c), 0);
  EXPECT_EQ(seq_of(c, 8), 0u);
  EXPECT_EQ(c.ts, a.ts);
  EXPECT_EQ(rb->stats(0).read, 1u);
  ASSERT_EQ(rb->peek(0, &a), 0);
  EXPECT_EQ(seq_of(a, 8), 1u);
  ASSERT_EQ(rb->consume(0, &c), 0);
  EXPECT_EQ(seq_of(c, 8), 1u);
  ASSERT_EQ(rb->consume(0, &c), 0);
  EXPECT_EQ(seq_of(c, 8), 2u);
  EXPECT_EQ(rb->peek(0, &a), -EAGAIN);
  EXPECT_EQ(rb->consume(0, &a), -EAGAIN);
  EXPECT_EQ(rb->stats(0).read, 3u);
}

// consume and read_page share one read position: consuming part of a page
// and then copying hands out the rest, with right times.
TEST(Consume, ConsumeThenReadPageContinues) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  for (uint64_t i = 0; i < 20; i++) ASSERT_EQ(write_seq(*rb, i, 8), 0);
  PageEvent e;
  uint64_t ts5 = 0;
  for (uint64_t i = 0; i < 6; i++) {
    ASSERT_EQ(rb->consume(0, &e), 0);
    EXPECT_EQ(seq_of(e, 8), i);
    ts5 = e.ts;
  }
  PageHolder h(*rb);
  const int n = rb->read_page(&h.p, 0, false);
  ASSERT_GT(n, 0);
  Drained d;
  d.seqs.push_back(5);
  d.last_ts = ts5;
  walk_returned_page(h.p, n, 8, &d);
  ASSERT_EQ(d.seqs.size(), 15u);
  EXPECT_EQ(d.seqs.back(), 19u);
  EXPECT_EQ(rb->stats(0).read, 20u);
}

// ---------------------------------------------------------------------------
// Iterator
// ---------------------------------------------------------------------------

// Producer/consumer mode: the iterator walks every committed event, oldest
// first, across pages and from the reader's position, without consuming.
TEST(Iterator, SeesAllCommittedEventsWithoutConsuming) {
  auto rb = make(8, Mode::kProducerConsumer);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  {
    RingBuffer::Iterator it(*rb, 0);
    ASSERT_EQ(it.status(), 0);
    PageEvent e;
    EXPECT_FALSE(it.next(&e));  // nothing yet
  }
  const uint64_t n = 600;  // 3+ pages
  for (uint64_t i = 0; i < n; i++) ASSERT_EQ(write_seq(*rb, i, 20), 0);
  auto iterate = [&](uint64_t from) {
    RingBuffer::Iterator it(*rb, 0);
    ASSERT_EQ(it.status(), 0);
    PageEvent e;
    uint64_t next = from, prev_ts = 0;
    while (it.next(&e)) {
      ASSERT_EQ(seq_of(e, 20), next);
      EXPECT_GE(e.ts, prev_ts);
      prev_ts = e.ts;
      next++;
    }
    EXPECT_EQ(next, n);
  };
  iterate(0);
  iterate(0);  // again: nothing was consumed
  EXPECT_EQ(rb->stats(0).read, 0u);
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 20), 0u);
  for (int i = 1; i < 250; i++) ASSERT_EQ(rb->consume(0, &e), 0);  // into page 2
  iterate(250);  // starts at the reader's position
  PageHolder h(*rb);
  ASSERT_GT(rb->read_page(&h.p, 0, false), 0);  // the rest of the reader page
  const uint64_t first_unread = rb->stats(0).read;  // 250 + the copied rest
  EXPECT_GT(first_unread, 250u);
  iterate(first_unread);
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 20), first_unread);
}

// Overwrite mode: the iterator must keep writers out, so it fails with
// -EBUSY while another live thread owns the CPU; once that thread is gone it
// works and, for its lifetime, holds the slot (a writer cannot claim it).
TEST(Iterator, OverwriteModeIsBusyWhileAnotherThreadOwnsTheCpu) {
  // One slot, no more: a writer the iterator keeps out is refused.
  auto rb = make(4, Mode::kOverwrite, 1, ClockKind::kCounter, 1);
  std::atomic<int> step{0};
  std::thread owner([&] {
    for (uint64_t i = 0; i < 5; i++) EXPECT_EQ(write_seq(*rb, i, 8), 0);
    step = 1;
    while (step.load() != 2) std::this_thread::yield();
  });
  while (step.load() != 1) std::this_thread::yield();
  ASSERT_NE(rb->cpu_owner(0), 0);
  {
    RingBuffer::Iterator it(*rb, 0);
    EXPECT_EQ(it.status(), -EBUSY);
    PageEvent e;
    EXPECT_FALSE(it.next(&e));
  }
  EXPECT_NE(rb->cpu_owner(0), 0);  // the failed iterator took nothing
  step = 2;
  owner.join();
  ASSERT_EQ(rb->cpu_owner(0), 0);
  {
    RingBuffer::Iterator it(*rb, 0);
    ASSERT_EQ(it.status(), 0);
    EXPECT_NE(rb->cpu_owner(0), 0);  // held by the iterator
    std::thread writer([&] { EXPECT_EQ(write_seq(*rb, 99, 8), -EBUSY); });
    writer.join();
    EXPECT_EQ(rb->no_cpu_dropped(), 1u);
    PageEvent e;
    uint64_t next = 0;
    while (it.next(&e)) EXPECT_EQ(seq_of(e, 8), next++);
    EXPECT_EQ(next, 5u);
  }
  EXPECT_EQ(rb->cpu_owner(0), 0);  // given back
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 0u);
}

// Overwrite mode, iterating the calling thread's own CPU (no writer can run
// while it iterates, except its own signal handlers): allowed.
TEST(Iterator, OverwriteModeOnTheCallersOwnCpuWorks) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  for (uint64_t i = 0; i < 300; i++) ASSERT_EQ(write_seq(*rb, i, 8), 0);
  {
    RingBuffer::Iterator it(*rb, 0);
    ASSERT_EQ(it.status(), 0);
    PageEvent e;
    uint64_t next = 0;
    while (it.next(&e)) EXPECT_EQ(seq_of(e, 8), next++);
    EXPECT_EQ(next, 300u);
  }
  EXPECT_EQ(rb->current_cpu(), 0);
  EXPECT_EQ(write_seq(*rb, 300, 8), 0);  // still the owner
}

// ---------------------------------------------------------------------------
// discard
// ---------------------------------------------------------------------------

// Discarding the last reservation gives its space back: it is not read,
// not counted, the events around it are intact, and the next event takes
// its place (no padding left behind).
TEST(Discard, LastReservationIsGivenBack) {
  for (uint32_t size : {8u, 200u}) {  // a small and a type_len 0 event
    SCOPED_TRACE(size);
    auto rb = make(4, Mode::kOverwrite);
    Bound b(*rb, 0);
    ASSERT_EQ(b.rc, 0);
    ASSERT_EQ(write_seq(*rb, 0, 8), 0);
    Reservation r = rb->reserve(size);
    ASSERT_TRUE(r);
    std::memset(r.data, 0xab, size);
    rb->discard(r);
    ASSERT_EQ(write_seq(*rb, 2, 8), 0);
    PageEvent e;
    ASSERT_EQ(rb->consume(0, &e), 0);
    EXPECT_EQ(seq_of(e, 8), 0u);
    const uint64_t ts0 = e.ts;
    ASSERT_EQ(rb->consume(0, &e), 0);
    EXPECT_EQ(seq_of(e, 8), 2u);
    EXPECT_GE(e.ts, ts0);
    // Right after event 0 (12 bytes), at most behind a time stamp.
    EXPECT_LE(e.offset, data_event_size(8) + kTimeEventSize);
    EXPECT_EQ(rb->consume(0, &e), -EAGAIN);
    const CpuStats s = rb->stats(0);
    EXPECT_EQ(s.entries, 2u);
    EXPECT_EQ(s.bytes, 16u);
    EXPECT_EQ(s.read, 2u);
  }
}

// Discarding the first event of a page, then writing: the page starts over.
TEST(Discard, OnlyEventOfThePage) {
  auto rb = make(4, Mode::kOverwrite);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  Reservation r = rb->reserve(16);
  ASSERT_TRUE(r);
  rb->discard(r);
  PageEvent e;
  EXPECT_EQ(rb->peek(0, &e), -EAGAIN);
  const uint64_t t0 = rb->clock().now();
  ASSERT_EQ(write_seq(*rb, 1, 8), 0);
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 1u);
  EXPECT_GE(e.ts, t0);
  EXPECT_EQ(rb->stats(0).entries, 1u);
}

// A discarded reservation with a later event after it (written by a signal
// handler that interrupted the reservation) becomes padding: every reader
// (consume, read_page's copy, the iterator) skips it, the events around it
// are intact and in time order.
RingBuffer* g_handler_rb = nullptr;
uint64_t g_handler_seq = 0;
void write_in_handler(int) {
  // No allocation in a signal handler: the same payload, built in place.
  unsigned char v[8];
  store_u64(v, g_handler_seq);
  (void)g_handler_rb->write(v, sizeof v);
}

TEST(Discard, ReservationFollowedByANestedEventBecomesPadding) {
  struct sigaction sa {}, old {};
  sa.sa_handler = write_in_handler;
  sigfillset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  for (uint32_t size : {8u, 200u}) {
    SCOPED_TRACE(size);
    for (int how = 0; how < 3; how++) {
      auto rb = make(4, Mode::kOverwrite);
      Bound b(*rb, 0);
      ASSERT_EQ(b.rc, 0);
      g_handler_rb = rb.get();
      g_handler_seq = 1;
      ASSERT_EQ(write_seq(*rb, 0, 8), 0);
      Reservation r = rb->reserve(size);
      ASSERT_TRUE(r);
      std::memset(r.data, 0xab, size);
      raise(SIGUSR1);  // handler writes seq 1 after our reservation
      rb->discard(r);
      ASSERT_EQ(write_seq(*rb, 2, 8), 0);
      const CpuStats s = rb->stats(0);
      EXPECT_EQ(s.entries, 3u);
      std::vector<uint64_t> seqs, ts;
      PageEvent e;
      if (how == 0) {
        while (rb->consume(0, &e) == 0) {
          seqs.push_back(seq_of(e, 8));
          ts.push_back(e.ts);
        }
      } else if (how == 1) {
        PageHolder h(*rb);
        const int n = rb->read_page(&h.p, 0, false);
        ASSERT_GT(n, 0);
        // The padding is there, the size of the discarded event.
        EXPECT_GE(static_cast<uint32_t>(n), 3 * data_event_size(8) + data_event_size(size));
        PageWalker w(h.p->data, static_cast<uint32_t>(n), h.p->time_stamp);
        while (w.next(&e)) {
          seqs.push_back(seq_of(e, 8));
          ts.push_back(e.ts);
        }
        EXPECT_FALSE(w.error());
      } else {
        RingBuffer::Iterator it(*rb, 0);
        ASSERT_EQ(it.status(), 0);
        while (it.next(&e)) {
          seqs.push_back(seq_of(e, 8));
          ts.push_back(e.ts);
        }
      }
      ASSERT_EQ(seqs, (std::vector<uint64_t>{0, 1, 2})) << "reader " << how;
      EXPECT_LE(ts[0], ts[1]);
      EXPECT_LE(ts[1], ts[2]);
      if (how < 2) {
        EXPECT_EQ(rb->stats(0).read, 3u);
      }
    }
  }
  g_handler_rb = nullptr;
  ASSERT_EQ(sigaction(SIGUSR1, &old, nullptr), 0);
}

// ---------------------------------------------------------------------------
// Producer/consumer mode
// ---------------------------------------------------------------------------

// A full buffer refuses new events with -ENOSPC and counts each refusal in
// dropped; what was written before is read back intact; once read, there is
// room again.
TEST(ProducerConsumer, FullBufferDropsTheNewestAndKeepsTheRest) {
  auto rb = make(3, Mode::kProducerConsumer);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint32_t size = 40;
  uint64_t written = 0;
  int rc;
  while ((rc = write_seq(*rb, written, size)) == 0) {
    written++;
    ASSERT_LT(written, 100000u);
  }
  EXPECT_EQ(rc, -ENOSPC);
  uint64_t refused = 1;
  for (int i = 0; i < 500; i++, refused++) ASSERT_EQ(write_seq(*rb, 1000000 + i, size), -ENOSPC);
  CpuStats s = rb->stats(0);
  EXPECT_EQ(s.dropped, refused);
  EXPECT_EQ(s.entries, written);
  EXPECT_EQ(s.overrun, 0u);
  EXPECT_EQ(s.lost(), refused);
  // Three ring pages of ~4 KiB, 44-byte events.
  EXPECT_GE(written, 3u * (4080 / 44));

  PageHolder h(*rb);
  Drained d;
  drain(*rb, 0, size, &h.p, &d);
  ASSERT_EQ(d.seqs.size(), written);
  for (uint64_t i = 0; i < written; i++) ASSERT_EQ(d.seqs[i], i);
  EXPECT_EQ(rb->stats(0).read, written);

  ASSERT_EQ(write_seq(*rb, written, size), 0);
  Drained d2;
  drain(*rb, 0, size, &h.p, &d2);
  ASSERT_EQ(d2.seqs.size(), 1u);
  EXPECT_EQ(d2.seqs[0], written);
  // The reader is told about the drops exactly once, with the count (at the
  // first page it takes after them).
  EXPECT_EQ(d.flagged + d2.flagged, 1);
  EXPECT_EQ(d.stored_missed + d2.stored_missed, refused);
}

// Millions of refusals on a full buffer (a stalled consumer under a heavy
// writer): every one is refused and counted, none lands in the full page,
// and the page's events read back intact. The refused reservations add up
// to more than 2^32 bytes, so a write index that grows with each refusal
// wraps around.
TEST(ProducerConsumer, MillionsOfRefusalsLeaveTheFullPageIntact) {
  auto rb = make(2, Mode::kProducerConsumer);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint32_t size = 2000;
  uint64_t written = 0;
  while (write_seq(*rb, written, size) == 0) written++;
  ASSERT_GE(written, 2u);
  const uint64_t attempts = (uint64_t{1} << 32) / data_event_size(size) + 1000;
  uint64_t accepted = 0;
  for (uint64_t i = 0; i < attempts; i++) {
    Reservation r = rb->reserve(size);
    if (r) {  // must not happen; keep the buffer consistent if it does
      accepted++;
      std::memset(r.data, 0xee, size);
      rb->commit(r);
    }
  }
  EXPECT_EQ(accepted, 0u);
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, written);
  EXPECT_EQ(s.dropped, attempts + 1);
  PageHolder h(*rb);
  Drained d;
  drain(*rb, 0, size, &h.p, &d);
  ASSERT_EQ(d.seqs.size(), written);
  for (uint64_t i = 0; i < written; i++) EXPECT_EQ(d.seqs[i], i);
}

// ---------------------------------------------------------------------------
// record disable / off
// ---------------------------------------------------------------------------

// Global record_disable nests (n disables need n enables), record_off is
// idempotent (one record_on undoes any number of offs), and both combine.
// Every refused write is -EPERM and counted in disabled; the accepted ones
// are exactly the entries.
TEST(RecordDisable, GlobalDisableNestsAndOffIsIdempotent) {
  auto rb = make(4, Mode::kOverwrite, 2);
  Bound b(*rb, 1);
  ASSERT_EQ(b.rc, 0);
  uint64_t written = 0, refused = 0, seq = 0;
  auto attempt = [&](bool should_work) {
    const int rc = write_seq(*rb, seq++, 8);
    if (should_work) {
      EXPECT_EQ(rc, 0);
      written += rc == 0;
    } else {
      EXPECT_EQ(rc, -EPERM);
      refused += rc == -EPERM;
    }
  };
  attempt(true);
  rb->record_disable();
  rb->record_disable();
  EXPECT_FALSE(rb->record_is_on());
  attempt(false);
  rb->record_enable();
  attempt(false);  // still disabled once
  rb->record_enable();
  EXPECT_TRUE(rb->record_is_on());
  attempt(true);
  rb->record_off();
  rb->record_off();
  attempt(false);
  rb->record_on();
  EXPECT_TRUE(rb->record_is_on());
  attempt(true);  // one on undoes two offs
  rb->record_off();
  rb->record_disable();
  attempt(false);
  rb->record_on();
  attempt(false);  // the disable count still holds
  rb->record_enable();
  attempt(true);
  const CpuStats s = rb->stats(1);
  EXPECT_EQ(s.entries, written);
  EXPECT_EQ(s.disabled, refused);
  EXPECT_EQ(written, 4u);
  EXPECT_EQ(refused, 5u);
  EXPECT_EQ(rb->stats(0).disabled, 0u);
  PageEvent e;
  uint64_t n = 0;
  while (rb->consume(1, &e) == 0) n++;
  EXPECT_EQ(n, written);
}

// Per CPU: disabling CPU 0 refuses CPU 0's writer only; the same nesting and
// idempotence rules hold.
TEST(RecordDisable, PerCpuDisableOnlyAffectsThatCpu) {
  auto rb = make(4, Mode::kOverwrite, 2);
  std::atomic<int> go{0}, done{0};
  std::atomic<int> other_rc{1};
  // CPU 1's writer: a second thread, writing when told to.
  std::thread t([&] {
    EXPECT_EQ(rb->bind_thread(1), 0);
    for (int round = 1; round <= 3; round++) {
      while (go.load() != round) std::this_thread::yield();
      other_rc = write_seq(*rb, 100 + round, 8);
      done = round;
    }
  });
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  auto other_write = [&](int round) {
    go = round;
    while (done.load() != round) std::this_thread::yield();
    return other_rc.load();
  };
  ASSERT_EQ(rb->record_disable_cpu(0), 0);
  ASSERT_EQ(rb->record_disable_cpu(0), 0);
  EXPECT_EQ(write_seq(*rb, 0, 8), -EPERM);
  EXPECT_EQ(other_write(1), 0);  // CPU 1 unaffected
  ASSERT_EQ(rb->record_enable_cpu(0), 0);
  EXPECT_EQ(write_seq(*rb, 1, 8), -EPERM);
  ASSERT_EQ(rb->record_enable_cpu(0), 0);
  EXPECT_EQ(write_seq(*rb, 2, 8), 0);
  ASSERT_EQ(rb->record_off_cpu(1), 0);
  ASSERT_EQ(rb->record_off_cpu(1), 0);
  EXPECT_EQ(other_write(2), -EPERM);
  EXPECT_EQ(write_seq(*rb, 3, 8), 0);  // CPU 0 unaffected
  ASSERT_EQ(rb->record_on_cpu(1), 0);
  EXPECT_EQ(other_write(3), 0);
  t.join();
  EXPECT_TRUE(rb->record_is_on());  // the global state was never touched
  const CpuStats s0 = rb->stats(0), s1 = rb->stats(1);
  EXPECT_EQ(s0.entries, 2u);
  EXPECT_EQ(s0.disabled, 2u);
  EXPECT_EQ(s1.entries, 2u);
  EXPECT_EQ(s1.disabled, 1u);
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 2u);
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 3u);
  ASSERT_EQ(rb->consume(1, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 101u);
  ASSERT_EQ(rb->consume(1, &e), 0);
  EXPECT_EQ(seq_of(e, 8), 103u);
}

}  // namespace

// Losses told with a page whose events were all discarded: consume() tells
// them with the next real event, so after the last one they are untold
// (CpuBuffer::lost_events), neither told nor "trailing" (after the tail's
// last page entry). The forced case behind a rare stress_accounting
// mismatch: refusals on a full producer/consumer ring, the reader drains,
// the tail enters a new page (its mark carries the refusals) with one
// event that is then discarded.
TEST(Consume, LossesBeforeAPageOfDiscardsAreToldWithTheNextEvent) {
  auto rb = make(4, Mode::kProducerConsumer);
  ASSERT_EQ(rb->bind_thread(0), 0);
  detail::CpuBuffer* cb = rb->cpu_buffer(0);
  std::vector<unsigned char> p(64, 0xab);
  int rc;
  while ((rc = rb->write(p.data(), 64)) == 0) {
  }
  ASSERT_EQ(rc, -ENOSPC);
  for (int i = 0; i < 3; i++) ASSERT_EQ(rb->write(p.data(), 64), -ENOSPC);
  ASSERT_EQ(rb->stats(0).dropped, 4u);
  PageEvent e;
  uint64_t lost = 0, told = 0;
  while (rb->consume(0, &e, &lost) == 0) told += lost;
  EXPECT_EQ(told, 0u);  // nothing came after the refusals yet
  // Big events on the tail page until one crosses into a new page: that
  // one is discarded, so the new page holds padding only.
  const uint32_t big = std::min<uint32_t>(rb->max_payload(), 3000);
  for (int guard = 0;; guard++) {
    ASSERT_LT(guard, 8);
    detail::BufferPage* before = cb->tail_page.load();
    Reservation r = rb->reserve(big);
    ASSERT_TRUE(r) << r.err;
    if (cb->tail_page.load() != before) {
      rb->discard(r);
      break;
    }
    std::memset(r.data, 0xcd, big);
    rb->commit(r);
  }
  told = 0;
  while (rb->consume(0, &e, &lost) == 0) told += lost;
  const uint64_t trailing = cb->refused_total() - cb->tail_page.load()->refused_mark.load();
  EXPECT_EQ(trailing, 0u);                 // the tail entered a page after the refusals
  EXPECT_EQ(told, 0u);                     // but no event came after them
  EXPECT_EQ(cb->lost_events, 4u);          // untold, held for the next event
  EXPECT_EQ(told + cb->lost_events + trailing, rb->stats(0).lost());
  ASSERT_EQ(rb->write(p.data(), 64), 0);   // the next event tells them
  ASSERT_EQ(rb->consume(0, &e, &lost), 0);
  EXPECT_EQ(lost, 4u);
  EXPECT_EQ(cb->lost_events, 0u);
  rb->unbind_thread();
}
