// The ring buffer's promises that an independent storm broke (issue 9),
// each forced deterministically through a hook point in the real code:
//
//  1. R2 ABA: the reader stopped between finding the head and its CAS while
//     the writer laps the whole ring. The CAS succeeds (the HEAD flag is
//     back on the same pointer); the page handed out must say exactly how
//     many events were lost before it.
//  5. fork() while another thread holds a reader lock and another is inside
//     a write: the child can write, read every CPU and swap.
//  6. A CPU buffer swapped into a live RingBuffer stays valid when the
//     RingBuffer it came from (a Snapshot's spare) is destroyed.
//  7. A balanced disable/enable pair with a swap attempted between the
//     disable's load of the slot and its change: the swap is refused while
//     the change is under way, the disable lands on the slot's buffer, and
//     the CPU is enabled and swappable again after the enable.
//  8. What consume() returned stays intact while the CPU buffer it came from
//     is swapped away, drained, reset, swapped back and rewritten.
//  9. A W1 refusal of a writer whose cached CPU buffer went stale (a swap in
//     a handler between W0 and W1) is counted in the buffer in the slot.
//  and: a discard is counted (discarded), so the accounting identity holds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace_test/test_files.h"

using namespace rbtrace;

namespace {

Options opts(uint32_t ncpus, uint32_t pages, Mode mode = Mode::kOverwrite) {
  Options o;
  o.ncpus = ncpus;
  o.page_size = 4096;
  o.pages_per_cpu = pages;
  o.mode = mode;
  return o;
}

// Restores the test hook whatever the test does.
struct HookGuard {
  explicit HookGuard(TestHook h) { set_test_hook(h); }
  ~HookGuard() { set_test_hook(nullptr); }
};

uint64_t first_seq(const DataPage* p) {
  PageWalker w(p->data, static_cast<uint32_t>(p->commit & kCommitMask), p->time_stamp);
  PageEvent e{};
  if (!w.next(&e)) {
    ADD_FAILURE() << "empty page";
    return 0;
  }
  return load_u64(e.data);
}

bool flagged(const DataPage* p) { return p->commit & kMissedEvents; }
// Missed count of a page handed out by read_page: 0 when not flagged, the
// stored count when there was room for it, kUnstored for a full page.
constexpr uint64_t kUnstored = ~0ULL;
uint64_t missed(const DataPage* p) {
  if (!flagged(p)) return 0;
  if (!(p->commit & kMissedStored)) return kUnstored;
  return load_u64(p->data + (p->commit & kCommitMask));
}

// ---------------------------------------------------------------------------
// 1. R2 ABA
// ---------------------------------------------------------------------------

struct Lap {
  static inline RingBuffer* rb = nullptr;
  static inline uint64_t* seq = nullptr;
  static inline bool armed = false;
  static inline uint32_t pushes = 0;
  static void hook(TestHookPoint p, RingBuffer& r, uint32_t cpu) {
    if (p != TestHookPoint::kR2BeforeSplice || !armed || &r != rb) return;
    armed = false;
    // Write (this thread owns the CPU; writers never wait for the reader
    // lock we hold) until the head has been pushed once per ring page: the
    // HEAD flag is then back on the very pointer the reader will CAS.
    const uint32_t npages = rb->options().pages_per_cpu;
    while (pushes < npages) {
      const uint64_t before = rb->stats(cpu).overrun;
      ASSERT_EQ(rb->write(seq, sizeof *seq), 0);
      ++*seq;
      if (rb->stats(cpu).overrun != before) pushes++;
    }
  }
};

TEST(Promises, R2ReportsExactLossWhenTheWriterLapsBeforeTheSplice) {
  auto rb = RingBuffer::create(opts(1, 4));
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  uint64_t seq = 0;
  for (int i = 0; i < 1000; i++, seq++) ASSERT_EQ(rb->write(&seq, sizeof seq), 0);
  DataPage* page = rb->alloc_read_page();
  ASSERT_EQ(rb->read_page(&page, 0, true) > 0, true);
  EXPECT_EQ(missed(page), 0u);
  EXPECT_EQ(first_seq(page), 0u);
  uint64_t next_expected = rb->stats(0).read;  // events 0..read-1 were handed out

  HookGuard g(&Lap::hook);
  Lap::rb = rb.get();
  Lap::seq = &seq;
  Lap::pushes = 0;
  Lap::armed = true;
  ASSERT_GT(rb->read_page(&page, 0, true), 0);
  ASSERT_EQ(Lap::pushes, rb->options().pages_per_cpu) << "the hook did not lap the ring";
  const uint64_t first = first_seq(page);
  ASSERT_GT(first, next_expected);
  // The page after the gap says so. It is full, so the count does not fit
  // on it (as in the kernel); consume() below checks the count itself.
  EXPECT_TRUE(flagged(page)) << "gap " << next_expected << ".." << first - 1
                             << " with no MISSED indication";
  // The rest comes without a loss indication, and everything adds up.
  while (rb->read_page(&page, 0, false) > 0) EXPECT_FALSE(flagged(page));
  EXPECT_EQ(rb->stats(0).read + rb->stats(0).overrun, seq);
  EXPECT_EQ(rb->stats(0).overrun, first - next_expected);
  rb->free_read_page(page);
  rb->unbind_thread();
}

// The same through consume(): the loss comes with the first event after it.
TEST(Promises, ConsumeReportsExactLossAfterALap) {
  auto rb = RingBuffer::create(opts(1, 3));
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  uint64_t seq = 0;
  for (int i = 0; i < 800; i++, seq++) ASSERT_EQ(rb->write(&seq, sizeof seq), 0);
  PageEvent ev;
  uint64_t lost = 0, expect = 0;
  // Consume the first page (340 events of 12 bytes).
  for (int i = 0; i < 340; i++, expect++) {
    ASSERT_EQ(rb->consume(0, &ev, &lost), 0);
    ASSERT_EQ(load_u64(ev.data), expect);
    ASSERT_EQ(lost, 0u);
  }
  HookGuard g(&Lap::hook);
  Lap::rb = rb.get();
  Lap::seq = &seq;
  Lap::pushes = 0;
  Lap::armed = true;
  ASSERT_EQ(rb->consume(0, &ev, &lost), 0);
  ASSERT_EQ(Lap::pushes, 3u);
  const uint64_t got = load_u64(ev.data);
  EXPECT_EQ(lost, got - expect);
  rb->unbind_thread();
}

// ---------------------------------------------------------------------------
// 9. W1 refusal with a stale cached CPU buffer
// ---------------------------------------------------------------------------

struct StaleW1 {
  static inline RingBuffer* spare = nullptr;
  static inline bool armed = false;
  static void at(HookPoint p, RingBuffer& rb, uint32_t cpu) {
    if (p != HookPoint::kAfterW0 || !armed) return;
    armed = false;
    // As the doorbell handler would, on this thread between W0 and W1: the
    // swap refreshes the binding, but the writer already holds the old one.
    ASSERT_EQ(rb.swap_cpu(*spare, cpu), 0);
    rb.record_disable();
  }
};

TEST(Promises, W1RefusalIsCountedInTheSlotNotTheSwappedOutBuffer) {
  auto live = RingBuffer::create(opts(2, 4));
  auto spare = RingBuffer::create(opts(2, 4));
  ASSERT_TRUE(live && spare);
  ASSERT_EQ(live->bind_thread(1), 0);
  const uint64_t v = 1;
  ASSERT_EQ(live->write(&v, sizeof v), 0);
  StaleW1::spare = spare.get();
  StaleW1::armed = true;
  Reservation r = live->reserve<StaleW1>(8);
  EXPECT_FALSE(r);
  EXPECT_EQ(r.err, -EPERM);
  EXPECT_EQ(live->stats(1).disabled, 1u) << "the refusal must be counted in the slot";
  EXPECT_EQ(spare->stats(1).disabled, 0u) << "the swapped-out buffer is the requester's";
  EXPECT_EQ(spare->stats(1).entries, 1u);
  live->record_enable();
  ASSERT_EQ(live->write(&v, sizeof v), 0);
  EXPECT_EQ(live->stats(1).entries, 1u);
  live->unbind_thread();
}

// ---------------------------------------------------------------------------
// 7. Balanced disables racing a swap
// ---------------------------------------------------------------------------

struct DisableSwap {
  static inline RingBuffer* spare = nullptr;
  static inline int armed = 0;
  static inline int swap_rc = 1;
  static void hook(TestHookPoint p, RingBuffer& rb, uint32_t cpu) {
    if (p != TestHookPoint::kDisableBeforeCas || armed == 0) return;
    armed--;
    // The slot has no owner: a swap may run on any thread (as
    // swap_cpu_marshalled does with claim_cpu_for).
    ASSERT_EQ(rb.claim_cpu_for(cpu), 0);
    swap_rc = rb.swap_cpu(*spare, cpu);
    rb.release_cpu_for(cpu);
  }
};

void balanced_pair_beside_a_swap(bool off) {
  auto live = RingBuffer::create(opts(2, 4));
  auto spare = RingBuffer::create(opts(2, 4));
  ASSERT_TRUE(live && spare);
  DisableSwap::spare = spare.get();
  DisableSwap::swap_rc = 1;
  {
    HookGuard g(&DisableSwap::hook);
    DisableSwap::armed = 1;  // a swap between the disable's load and its change
    ASSERT_EQ(off ? live->record_off_cpu(0) : live->record_disable_cpu(0), 0);
  }
  // A swap inside a disable of its slot would move the buffer the disable
  // loaded: it is refused (the slot's ctl_ count), and retried by
  // swap_cpu_marshalled.
  ASSERT_EQ(DisableSwap::swap_rc, -EBUSY) << "a swap ran inside a disable of its slot";
  // The CPU in the slot is disabled now, and cannot be swapped away.
  std::thread([&] {
    const uint64_t v = 1;
    ASSERT_EQ(live->bind_thread(0), 0);
    EXPECT_EQ(live->write(&v, sizeof v), -EPERM);
    live->unbind_thread();
  }).join();
  ASSERT_EQ(live->claim_cpu_for(0), 0);
  EXPECT_EQ(live->swap_cpu(*spare, 0), -EAGAIN);
  live->release_cpu_for(0);
  ASSERT_EQ(off ? live->record_on_cpu(0) : live->record_enable_cpu(0), 0);
  // Every disable matched: it records and swaps again, both ways.
  std::thread([&] {
    const uint64_t v = 2;
    ASSERT_EQ(live->bind_thread(0), 0);
    EXPECT_EQ(live->write(&v, sizeof v), 0);
    live->unbind_thread();
  }).join();
  ASSERT_EQ(live->claim_cpu_for(0), 0);
  EXPECT_EQ(live->swap_cpu(*spare, 0), 0);
  EXPECT_EQ(live->swap_cpu(*spare, 0), 0);
  live->release_cpu_for(0);
  EXPECT_EQ(live->cpu_buffer(0)->record_disabled.load(), 0u);
  EXPECT_EQ(spare->cpu_buffer(0)->record_disabled.load(), 0u);
}

TEST(Promises, DisableRacingASwapLandsOnTheSlot) { balanced_pair_beside_a_swap(false); }
TEST(Promises, OffRacingASwapLandsOnTheSlot) { balanced_pair_beside_a_swap(true); }

// An enable without a disable does not wrap the count.
TEST(Promises, UnmatchedEnableIsIgnored) {
  auto rb = RingBuffer::create(opts(1, 2));
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->record_enable_cpu(0), 0);
  EXPECT_EQ(rb->cpu_buffer(0)->record_disabled.load(), 0u);
  ASSERT_EQ(rb->bind_thread(0), 0);
  const uint64_t v = 3;
  EXPECT_EQ(rb->write(&v, sizeof v), 0);
  rb->unbind_thread();
}

// ---------------------------------------------------------------------------
// 8. consume()'s payload outlives swaps, resets and rewrites
// ---------------------------------------------------------------------------

TEST(Promises, ConsumedPayloadSurvivesSwapDrainResetAndRewrite) {
  auto live = RingBuffer::create(opts(1, 2));
  auto spare = RingBuffer::create(opts(1, 2));
  ASSERT_TRUE(live && spare);
  ASSERT_EQ(live->bind_thread(0), 0);
  for (uint64_t i = 0; i < 100; i++) ASSERT_EQ(live->write(&i, sizeof i), 0);
  PageEvent ev;
  ASSERT_EQ(live->consume(0, &ev), 0);
  const unsigned char* held = ev.data;
  ASSERT_EQ(load_u64(held), 0u);
  // A snapshot's life cycle: swap out, drain (trading pages away), reset,
  // and later swap back in and fill it again.
  ASSERT_EQ(live->swap_cpu(*spare, 0), 0);
  DataPage* page = spare->alloc_read_page();
  while (spare->read_page(&page, 0, false) > 0) std::memset(page->data, 0xee, 4096 - 16);
  ASSERT_EQ(spare->reset_cpu(0), 0);
  ASSERT_EQ(live->swap_cpu(*spare, 0), 0);
  for (uint64_t i = 0; i < 2000; i++) {
    const uint64_t x = 0xdead0000 + i;
    ASSERT_EQ(live->write(&x, sizeof x), 0);
  }
  while (live->read_page(&page, 0, false) > 0) std::memset(page->data, 0xee, 4096 - 16);
  spare->free_read_page(page);
  EXPECT_EQ(load_u64(held), 0u) << "the consumed payload changed under the reader";
  live->unbind_thread();
}

// ---------------------------------------------------------------------------
// 6. A swapped-in buffer outlives the RingBuffer it came from
// ---------------------------------------------------------------------------

TEST(Promises, DestroyingTheSpareLeavesTheLiveBufferWhole) {
  auto live = RingBuffer::create(opts(2, 4));
  ASSERT_TRUE(live);
  ASSERT_EQ(live->bind_thread(0), 0);
  {
    auto spare = RingBuffer::create(opts(2, 4));
    ASSERT_TRUE(spare);
    ASSERT_EQ(live->swap_cpu(*spare, 0), 0);
  }  // the spare goes, with the buffer that was live's
  for (uint64_t i = 0; i < 3000; i++) ASSERT_EQ(live->write(&i, sizeof i), 0);
  PageEvent ev;
  uint64_t n = 0, lost = 0, total_lost = 0;
  while (live->consume(0, &ev, &lost) == 0) {
    total_lost += lost;
    n++;
  }
  EXPECT_EQ(n + total_lost, 3000u);
  EXPECT_EQ(live->stats(0).entries, 3000u);
  live->unbind_thread();
}

TEST(Promises, DestroyingAnAttachedSnapshotLeavesTheLiveBufferWhole) {
  auto live = RingBuffer::create(opts(2, 4));
  ASSERT_TRUE(live);
  ASSERT_EQ(live->bind_thread(1), 0);
  const uint64_t v = 5;
  ASSERT_EQ(live->write(&v, sizeof v), 0);
  {
    Error err;
    auto snap = Snapshot::attach(*live, &err);
    ASSERT_TRUE(snap) << err.message;
    rbtrace_test::TempDir dir;
    const int fd = ::open((dir.path + "/snap.dat").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    std::string msg;
    ASSERT_EQ(snap->take(fd, 1, &msg), 0) << msg;
    ::close(fd);
  }
  for (uint64_t i = 0; i < 500; i++) ASSERT_EQ(live->write(&i, sizeof i), 0);
  PageEvent ev;
  uint64_t n = 0;
  while (live->consume(1, &ev) == 0) ASSERT_EQ(load_u64(ev.data), n++);
  EXPECT_EQ(n, 500u);
  live->unbind_thread();
}

// ---------------------------------------------------------------------------
// Discards are counted: attempts == entries + discarded + refusals
// ---------------------------------------------------------------------------

TEST(Promises, DiscardIsCounted) {
  auto rb = RingBuffer::create(opts(1, 4));
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  for (int i = 0; i < 10; i++) {
    Reservation r = rb->reserve(16);
    ASSERT_TRUE(r);
    if (i % 3 == 0)
      rb->discard(r);
    else
      rb->commit(r);
  }
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.discarded, 4u);
  EXPECT_EQ(s.entries, 6u);
  EXPECT_EQ(s.entries + s.discarded + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled,
            10u);
  rb->unbind_thread();
}

// Summing generations (Snapshot::total_stats) keeps every counter, the
// discards too (a hand-written sum in snapshot.cc used to drop them).
TEST(Promises, CpuStatsSumKeepsEveryCounter) {
  CpuStats a, b;
  uint64_t v = 1;
  for (CpuStats* s : {&a, &b}) {
    s->entries = v++;
    s->discarded = v++;
    s->bytes = v++;
    s->overrun = v++;
    s->commit_overrun = v++;
    s->dropped = v++;
    s->nested_dropped = v++;
    s->disabled = v++;
    s->read = v++;
  }
  a += b;
  EXPECT_EQ(a.entries, 1u + 10);
  EXPECT_EQ(a.discarded, 2u + 11);
  EXPECT_EQ(a.bytes, 3u + 12);
  EXPECT_EQ(a.overrun, 4u + 13);
  EXPECT_EQ(a.commit_overrun, 5u + 14);
  EXPECT_EQ(a.dropped, 6u + 15);
  EXPECT_EQ(a.nested_dropped, 7u + 16);
  EXPECT_EQ(a.disabled, 8u + 17);
  EXPECT_EQ(a.read, 9u + 18);
  static_assert(sizeof(CpuStats) == 9 * sizeof(uint64_t), "a new counter: add it to operator+=");
}

// ---------------------------------------------------------------------------
// 5. fork() with a reader lock held and a write in flight in other threads
// ---------------------------------------------------------------------------

struct Frozen {
  static inline std::atomic<int> phase{0};  // 1: in the write, 2: may go on
  static void at(HookPoint p, RingBuffer&, uint32_t) {
    if (p != HookPoint::kAfterW3 || phase.load() != 0) return;
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
  }
};

struct ReaderStuck {
  static inline std::atomic<int> phase{0};
  static void hook(TestHookPoint p, RingBuffer&, uint32_t) {
    if (p != TestHookPoint::kR2BeforeSplice || phase.load() != 0) return;
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
  }
};

TEST(Promises, ForkChildWritesReadsAndSwapsWhateverOtherThreadsWereDoing) {
  auto rb = RingBuffer::create(opts(3, 4));
  auto spare = RingBuffer::create(opts(3, 4));
  ASSERT_TRUE(rb && spare);
  // cpu 0: events to read, and a reader stopped in R2 holding its lock.
  std::thread filler([&] {
    ASSERT_EQ(rb->bind_thread(0), 0);
    for (uint64_t i = 0; i < 500; i++) ASSERT_EQ(rb->write(&i, sizeof i), 0);
    rb->unbind_thread();
  });
  filler.join();
  HookGuard g(&ReaderStuck::hook);
  std::thread reader([&] {
    DataPage* p = rb->alloc_read_page();
    rb->read_page(&p, 0, false);
    rb->free_read_page(p);
  });
  // cpu 1: a write stopped inside W2..W6 (busy).
  std::thread writer([&] {
    ASSERT_EQ(rb->bind_thread(1), 0);
    Reservation r = rb->reserve<Frozen>(8);
    ASSERT_TRUE(r);
    std::memset(r.data, 0, 8);
    rb->commit(r);
    rb->unbind_thread();
  });
  while (ReaderStuck::phase.load() != 1 || Frozen::phase.load() != 1) std::this_thread::yield();
  set_test_hook(nullptr);  // the child must not stop in it
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);  // a hang fails the test instead of hanging it
    int bad = 0;
    for (uint64_t i = 0; i < 300; i++)
      if (rb->write(&i, sizeof i) != 0) bad |= 1;
    const int mine = rb->current_cpu();
    if (mine < 0) bad |= 2;
    uint64_t own = 0;
    for (uint32_t c = 0; c < rb->ncpus(); c++) {
      PageEvent ev;
      while (rb->consume(c, &ev) == 0)
        if (static_cast<int>(c) == mine) own++;
    }
    if (own != 300) bad |= 4;
    // Swap every CPU: the one we own here, the others unowned.
    for (uint32_t c = 0; c < rb->ncpus(); c++) {
      const bool owned = static_cast<int>(c) == mine;
      if (!owned && rb->claim_cpu_for(c) != 0) bad |= 8;
      if (rb->swap_cpu(*spare, c) != 0) bad |= 16;
      if (!owned) rb->release_cpu_for(c);
    }
    const uint64_t v = 9;
    if (rb->write(&v, sizeof v) != 0) bad |= 32;
    _exit(bad);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ReaderStuck::phase.store(2);
  Frozen::phase.store(2);
  reader.join();
  writer.join();
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status)
                                 << " (14 = SIGALRM: it hung)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed checks (bits): 1 write, 2 slot, 4 own events "
                                       "read back, 8 claim, 16 swap, 32 write after swap";
}

}  // namespace
