// accounting_test.cc - exact accounting under concurrent writers and a
// concurrent reader.
//
// Per case: one writer thread per CPU (two bound with bind_thread, one that
// claims its slot on its first event) writes self-checking events of 8..600
// bytes with write(), reserve+commit, typed emit, and reserve+discard, while
// one reader thread drains every CPU (read_page with full = true/false, or
// peek/consume) and the main thread toggles record-disable. Small buffers
// (4-8 pages) make the buffer wrap (overwrite) or fill (producer/consumer).
//
// Asserted per CPU, after the writers stop and everything is drained:
//   - every event is intact, on the right CPU, with strictly increasing
//     sequence numbers and non-decreasing time stamps inside the test's
//     time window;
//   - attempts == entries + dropped + commit_overrun + nested_dropped +
//     disabled, and each class equals the writer's tally of return codes;
//   - entries == read + overrun, read == events decoded;
//   - producer/consumer: overrun == 0 and the sequence numbers missing are
//     exactly the refused ones;
//   - overwrite: every gap sits where the reader was told about lost events
//     and has the reported size; the reported counts sum to the losses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "rbtrace_test/stress_common.h"

using namespace rbtrace;
using namespace stress;
using namespace std::chrono;

namespace {

constexpr uint32_t kWriters = 3;

struct Case {
  const char* name;
  Mode mode;
  uint32_t page_size;
  uint32_t pages;
  ReadStyle style;
  ClockKind clock;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Writer {
  uint32_t cpu = 0;
  bool claim = false;  // claim the slot on the first event instead of binding
  Tally tally;
  RangeLog failed;  // sequence numbers refused as losses (ENOSPC / ELOOP)
  uint64_t next_seq = 0;
  int32_t tid = 0;
  std::string error;
};

void writer_main(RingBuffer& rb, Writer& w, const std::atomic<bool>& stop,
                 std::atomic<uint32_t>& bound, double seconds, uint64_t seed) {
  w.tid = static_cast<int32_t>(gettid());
  if (!w.claim) {
    const int rc = rb.bind_thread(w.cpu);
    bound.fetch_add(1);
    if (rc != 0) {
      w.error = "bind_thread(" + std::to_string(w.cpu) + ") = " + std::to_string(rc);
      return;
    }
  } else {
    // The slot left free by the others is the one we must get.
    while (bound.load() < kWriters - 1) std::this_thread::yield();
  }
  Rng rng(seed);
  alignas(8) unsigned char buf[kMaxLen];
  char scratch[kMaxLen];
  uint32_t seq = 0;
  // One long pause per writer, so deltas overflow 27 bits (time extends).
  const auto pause_at = steady_clock::now() + duration<double>(seconds * 0.4);
  bool paused = false;
  for (uint64_t it = 0; !stop.load(std::memory_order_relaxed); it++) {
    if ((it & 1023) == 0 && !paused && steady_clock::now() >= pause_at) {
      paused = true;
      std::this_thread::sleep_for(milliseconds(150));
    }
    const uint32_t len = rng.below(2) ? kMinLen + rng.below(113 - kMinLen)
                                      : 113 + rng.below(kMaxLen - 112);
    const uint32_t how = rng.below(16);
    int rc;
    if (how < 6) {
      make_raw(buf, len, w.cpu, 0, seq, -1);
      rc = rb.write(buf, len);
    } else if (how < 11) {
      Reservation r = rb.reserve(len);
      rc = r.err;
      if (r) {
        if (r.level != 0) w.error = "thread writer at nesting level " + std::to_string(r.level);
        make_raw(buf, len, w.cpu, 0, seq, r.level);
        std::memcpy(r.data, buf, len);
        rb.commit(r);
      }
    } else if (how < 15) {
      rc = emit_typed(rb, scratch, std::max(len, kTypedFixed + 1), w.cpu, 0, seq);
    } else {
      Reservation r = rb.reserve(len);
      if (r) {
        std::memset(r.data, 0xEE, len);
        rb.discard(r);
        w.tally.discards++;
        continue;  // not an attempt that ends in a counter
      }
      rc = r.err;
    }
    w.tally.add(rc);
    if (rc == 0) {
      seq++;
    } else if (Tally::is_loss(rc)) {
      w.failed.add(seq);
      seq++;
    }
    if (it == 0 && rb.current_cpu() != static_cast<int>(w.cpu))
      w.error = "writer got cpu " + std::to_string(rb.current_cpu()) + ", expected " +
                std::to_string(w.cpu);
  }
  w.next_seq = seq;
  if (!w.claim) rb.unbind_thread();  // the claimer's slot goes back at thread exit
}

class Accounting : public ::testing::TestWithParam<Case> {};

TEST_P(Accounting, Exact) {
  const Case& c = GetParam();
  const double seconds = case_seconds();
  Options o;
  o.ncpus = kWriters;
  o.page_size = c.page_size;
  o.pages_per_cpu = c.pages;
  o.mode = c.mode;
  o.clock = c.clock;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  ASSERT_TRUE(rb) << err.message;
  const bool pc = c.mode == Mode::kProducerConsumer;
  const uint64_t ts_begin = rb->clock().now();

  std::vector<Writer> w(kWriters);
  std::vector<CpuVerifier> v;
  for (uint32_t i = 0; i < kWriters; i++) {
    w[i].cpu = i;
    w[i].claim = i == kWriters - 1;
    v.emplace_back(i, 1, /*locate_losses=*/!pc);
    v.back().set_ts_bounds(ts_begin);
  }

  std::atomic<bool> stop{false}, reader_stop{false};
  std::atomic<uint32_t> bound{0};
  DataPage* spare = rb->alloc_read_page();
  ASSERT_NE(spare, nullptr);
  uint64_t reader_rounds = 0;
  std::thread reader([&] {
    Rng rr(77);
    // One long stall a third of the way in, so that even slow writers
    // (sanitizer builds) fill or wrap the largest buffers.
    const auto stall_at = steady_clock::now() + duration<double>(seconds / 3);
    bool stalled = false;
    while (!reader_stop.load(std::memory_order_relaxed)) {
      if (!stalled && steady_clock::now() >= stall_at) {
        stalled = true;
        std::this_thread::sleep_for(duration<double>(seconds / 4));
      }
      int got = 0;
      for (uint32_t cpu = 0; cpu < kWriters; cpu++)
        got += read_step(*rb, cpu, c.style, rr.below(2) == 0, &spare, v[cpu]);
      // Nap now and then so the writers overrun / fill the buffer.
      if (++reader_rounds % 64 == 0)
        std::this_thread::sleep_for(microseconds(300 + rr.below(3000)));
      else if (got == 0)
        std::this_thread::yield();
    }
  });
  std::vector<std::thread> writers;
  for (uint32_t i = 0; i < kWriters; i++)
    writers.emplace_back(writer_main, std::ref(*rb), std::ref(w[i]), std::cref(stop),
                         std::ref(bound), seconds, 1000 + i);

  // Control: short record-disable windows, global and per CPU.
  Rng crng(5);
  const auto end = steady_clock::now() + duration<double>(seconds);
  while (steady_clock::now() < end) {
    std::this_thread::sleep_for(milliseconds(2));
    const uint32_t cpu = crng.below(kWriters);
    switch (crng.below(3)) {
      case 0:
        rb->record_disable();
        std::this_thread::sleep_for(microseconds(200));
        rb->record_enable();
        break;
      case 1:
        EXPECT_EQ(rb->record_off_cpu(cpu), 0);
        std::this_thread::sleep_for(microseconds(200));
        EXPECT_EQ(rb->record_on_cpu(cpu), 0);
        break;
      default:
        EXPECT_EQ(rb->record_disable_cpu(cpu), 0);
        std::this_thread::sleep_for(microseconds(200));
        EXPECT_EQ(rb->record_enable_cpu(cpu), 0);
        break;
    }
  }
  stop.store(true);
  for (auto& t : writers) t.join();
  reader_stop.store(true);
  reader.join();
  for (uint32_t cpu = 0; cpu < kWriters; cpu++) drain(*rb, cpu, c.style, &spare, v[cpu]);
  rb->free_read_page(spare);
  const uint64_t ts_end = rb->clock().now();

  uint64_t overruns = 0, drops = 0, disabled = 0, discards = 0, typed = 0, flags = 0;
  for (uint32_t cpu = 0; cpu < kWriters; cpu++) {
    SCOPED_TRACE("cpu " + std::to_string(cpu));
    const Writer& wr = w[cpu];
    const Tally& t = wr.tally;
    CpuVerifier& cv = v[cpu];
    const CpuStats s = rb->stats(cpu);
    const std::string info = "\n  stats:  " + stats_str(s) + "\n  writer: " + tally_str(t);
    EXPECT_EQ(wr.error, "");
    EXPECT_EQ(t.other, 0u) << "unexpected return code " << t.last_other << info;
    // Every attempt ends in exactly one counter, matching the return codes.
    EXPECT_EQ(t.attempts, s.entries + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled)
        << info;
    EXPECT_EQ(t.ok, s.entries) << info;
    EXPECT_EQ(t.enospc + t.eloop, s.dropped + s.commit_overrun + s.nested_dropped) << info;
    EXPECT_EQ(t.eperm + t.eagain, s.disabled) << info;
    // Every written event was read or overwritten; read is what we decoded.
    EXPECT_EQ(s.entries, s.read + s.overrun) << info;
    EXPECT_EQ(s.read, cv.decoded()) << info;
    cv.finish_stream(0, wr.next_seq);
    EXPECT_EQ(cv.errors(), 0u) << cv.messages() << info;
    EXPECT_EQ(cv.gap_total(), wr.next_seq - cv.decoded()) << info;
    if (pc) {
      EXPECT_EQ(s.overrun, 0u) << info;
      EXPECT_EQ(cv.gaps(0).ranges(), wr.failed.ranges())
          << "missing seqs:" << ranges_str(cv.gaps(0)) << "\n  refused:" << ranges_str(wr.failed)
          << info;
      if (cv.unknown_flags() == 0) {
        // Every loss was told with a page, except refusals after the tail's
        // last page entry (no page comes after them to carry them).
        EXPECT_EQ(cv.stored_lost() + untold_losses(*rb, cpu) + trailing_refusals(*rb, cpu),
                  s.lost()) << info;
      } else {
        EXPECT_LT(cv.stored_lost(), s.lost()) << info;
      }
    } else {
      EXPECT_EQ(cv.gap_total(), s.overrun + t.enospc + t.eloop) << info;
      EXPECT_TRUE(cv.gaps(0).covers(wr.failed)) << info;
      // Gaps sit where the reader was told (checked per event); the counts
      // told add up to the losses.
      EXPECT_EQ(cv.stored_lost() + cv.unknown_gap(), s.lost()) << info;
    }
    EXPECT_LE(cv.max_ts(), ts_end);
    overruns += s.overrun;
    drops += s.dropped;
    disabled += s.disabled;
    discards += t.discards;
    typed += cv.typed();
    flags += cv.loss_flags();
    std::printf("[ %-13s ] cpu %u: %s, pages %llu, loss reports %llu (count not stored %llu), "
                "%llu typed\n  writer: %s\n",
                c.name, cpu, stats_str(s).c_str(), static_cast<unsigned long long>(cv.pages()),
                static_cast<unsigned long long>(cv.loss_flags()),
                static_cast<unsigned long long>(cv.unknown_flags()),
                static_cast<unsigned long long>(cv.typed()), tally_str(t).c_str());
  }
  // The paths under test did run.
  if (pc) {
    EXPECT_GT(drops, 0u) << "the buffer never filled";
  } else {
    EXPECT_GT(overruns, 0u) << "the buffer never wrapped";
  }
  EXPECT_GT(flags, 0u) << "no loss was ever reported to the reader";
  EXPECT_GT(disabled, 0u);
  EXPECT_GT(discards, 0u);
  EXPECT_GT(typed, 0u);
  EXPECT_GT(reader_rounds, 0u);
}

// A producer/consumer buffer that stays full while the writer keeps trying:
// every refused attempt must leave the full page as it is, however many
// bytes the refusals add up to (more than 4 GiB here: the page's 32-bit
// write index must not wrap around into the page's events).
class AccountingFull : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AccountingFull, RefusalsNeverReopenAFullPage) {
  Options o;
  o.ncpus = 1;
  o.page_size = 65536;  // big events: few attempts add up to 4 GiB
  o.pages_per_cpu = 2;
  o.mode = Mode::kProducerConsumer;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  const uint32_t len = std::min(GetParam(), rb->max_payload());
  const uint64_t attempts = (1ULL << 32) / data_event_size(len) * 5 / 4;
  std::vector<unsigned char> buf(len);
  Tally t;
  uint64_t ok_after_full = 0;
  uint32_t seq = 0;
  for (uint64_t i = 0; i < attempts; i++) {
    make_raw(buf.data(), kMinLen, 0, 0, seq, -1);  // header only; the rest is filler
    const int rc = rb->write(buf.data(), len);
    if (rc == 0 && t.enospc > 0) ok_after_full++;
    t.add(rc);
    if (rc == 0) seq++;
  }
  rb->unbind_thread();
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(ok_after_full, 0u) << "a write succeeded into a full buffer";
  EXPECT_EQ(t.ok, s.entries);
  EXPECT_EQ(t.enospc, s.dropped);
  EXPECT_EQ(t.attempts, s.entries + s.dropped);
  // Everything written reads back, each event once, intact.
  DataPage* page = rb->alloc_read_page();
  ASSERT_NE(page, nullptr);
  uint64_t events = 0, corrupt = 0;
  int rc;
  while ((rc = rb->read_page(&page, 0, false)) > 0) {
    PageWalker w(page->data, static_cast<uint32_t>(rc), page->time_stamp);
    PageEvent e;
    while (w.next(&e)) {
      RawHead h;
      std::memcpy(&h, e.data, sizeof h);
      if (e.length != ((len + 3) & ~3u) || h.seq != events) corrupt++;
      events++;
    }
    if (w.error()) corrupt++;
  }
  rb->free_read_page(page);
  EXPECT_EQ(corrupt, 0u);
  EXPECT_EQ(events, s.entries);
  EXPECT_EQ(rb->stats(0).read, s.entries);
}

// Event sizes: the largest (one per page), and two per page.
INSTANTIATE_TEST_SUITE_P(Stress, AccountingFull, ::testing::Values(1u << 20, 30000u));

INSTANTIATE_TEST_SUITE_P(
    Stress, Accounting,
    ::testing::Values(
        Case{"ow_4k_pages", Mode::kOverwrite, 4096, 4, ReadStyle::kPages, ClockKind::kCounter},
        Case{"ow_64k_pages", Mode::kOverwrite, 65536, 4, ReadStyle::kPages, ClockKind::kCounter},
        Case{"ow_4k_consume", Mode::kOverwrite, 4096, 8, ReadStyle::kConsume, ClockKind::kMono},
        Case{"pc_4k_pages", Mode::kProducerConsumer, 4096, 8, ReadStyle::kPages,
             ClockKind::kCounter},
        Case{"pc_64k_pages", Mode::kProducerConsumer, 65536, 4, ReadStyle::kPages,
             ClockKind::kMono},
        Case{"pc_4k_consume", Mode::kProducerConsumer, 4096, 4, ReadStyle::kConsume,
             ClockKind::kCounter}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
