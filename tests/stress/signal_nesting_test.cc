// signal_nesting_test.cc - signal handlers writing on their thread's CPU.
//
// Per case: two owner threads, each bound to its CPU, write in a loop. Two
// per-thread POSIX timers (SIGEV_THREAD_ID, so the owner itself takes the
// signal) interrupt each owner: SIGRTMIN every 50 us, whose handler writes
// a burst of 1-4 events, and SIGUSR1 every 77 us, whose handler writes one.
// Neither signal is blocked in the other's handler, so the writers nest up
// to depth 3 (owner, handler, handler). A reader thread drains both CPUs
// meanwhile, the main thread toggles record-disable.
//
// Each writer (owner, SIGRTMIN handler, SIGUSR1 handler) is one stream with
// its own sequence numbers. Asserted per CPU after the drain: no torn or
// misplaced event; each stream's sequence strictly increasing in buffer
// order; time stamps non-decreasing in buffer order; the exact accounting of
// stress_accounting over all three streams; producer/consumer: the missing
// sequences of each stream are exactly its refused ones. And that the
// handlers ran (>= 1000 handler events written), that handler events were
// written while the owner was inside a write, and at nesting depth 3 (the
// last two relaxed under TSan, which delays signals to its own safe points).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <thread>

#include "rbtrace_test/stress_common.h"

using namespace rbtrace;
using namespace stress;
using namespace std::chrono;

namespace {

constexpr uint32_t kOwners = 2;
constexpr uint32_t kStreams = 3;  // 0 owner, 1 SIGRTMIN handler, 2 SIGUSR1 handler
constexpr long kTimerANs = 50000;
constexpr long kTimerBNs = 77000;
constexpr uint64_t kMinHandlerEvents = 1000;

// One writer on a CPU. Touched only by the owner thread and its handlers
// (and by the main thread after the owner has joined).
struct Stream {
  uint32_t seq = 0;
  Tally tally;
  RangeLog failed;
  Rng rng{1};
  uint64_t calls = 0;          // handler invocations
  uint64_t inside_write = 0;   // events written while the owner was inside a write
  uint64_t by_level[kMaxNesting + 1] = {};  // reserve+commit events by nesting level
  uint64_t depth3 = 0;  // attempts made while two other writers were inside a write
  volatile sig_atomic_t in_write = 0;  // this stream is inside reserve..commit
  alignas(8) unsigned char buf[kMaxLen];
  char scratch[kMaxLen];
};

struct Owner {
  uint32_t cpu = 0;
  RingBuffer* rb = nullptr;
  Stream s[kStreams];
  volatile sig_atomic_t active = 0;  // handlers may write
  std::atomic<uint64_t> handler_ok{0};  // handler events written (lock-free: signal-safe)
  int32_t tid = 0;
  std::string error;
};

thread_local Owner* tl_owner = nullptr;  // the executable's TLS: fine in a handler

// One write attempt by `stream` of `o` (the owner thread or a handler).
void attempt(Owner& o, uint32_t stream) {
  Stream& st = o.s[stream];
  RingBuffer& rb = *o.rb;
  const uint32_t len = st.rng.below(2) ? kMinLen + st.rng.below(113 - kMinLen)
                                       : 113 + st.rng.below(kMaxLen - 112);
  const uint32_t how = st.rng.below(8);
  const bool during_write = stream != 0 && o.s[0].in_write;
  uint32_t depth = 1;
  for (uint32_t i = 0; i < kStreams; i++) depth += i != stream && o.s[i].in_write;
  if (depth >= 3) st.depth3++;
  st.in_write = 1;
  detail::signal_fence();
  int rc;
  if (how < 3) {
    make_raw(st.buf, len, o.cpu, stream, st.seq, -1);
    rc = rb.write(st.buf, len);
  } else if (how < 6) {
    Reservation r = rb.reserve(len);
    rc = r.err;
    if (r) {
      make_raw(st.buf, len, o.cpu, stream, st.seq, r.level);
      std::memcpy(r.data, st.buf, len);
      if (r.level <= kMaxNesting) st.by_level[r.level]++;
      rb.commit(r);
    }
  } else {
    rc = emit_typed(rb, st.scratch, std::max(len, kTypedFixed + 1), o.cpu, stream, st.seq);
  }
  detail::signal_fence();
  st.in_write = 0;
  st.tally.add(rc);
  if (rc == 0) {
    st.seq++;
    if (during_write) st.inside_write++;
    if (stream != 0) o.handler_ok.fetch_add(1, std::memory_order_relaxed);
  } else if (Tally::is_loss(rc)) {
    st.failed.add(st.seq);
    st.seq++;
  }
}

void on_signal(int sig) {
  Owner* o = tl_owner;
  if (o == nullptr || !o->active) return;
  const int saved = errno;
  const uint32_t stream = sig == SIGUSR1 ? 2 : 1;
  Stream& st = o->s[stream];
  st.calls++;
  const uint32_t n = stream == 1 ? 1 + st.rng.below(4) : 1;
  for (uint32_t i = 0; i < n; i++) attempt(*o, stream);
  errno = saved;
}

bool make_timer(int sig, long interval_ns, pid_t tid, timer_t* out, std::string* err) {
  sigevent sev{};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = sig;
#ifdef sigev_notify_thread_id
  sev.sigev_notify_thread_id = tid;
#else
  sev._sigev_un._tid = tid;
#endif
  if (timer_create(CLOCK_MONOTONIC, &sev, out) != 0) {
    *err = std::string("timer_create: ") + std::strerror(errno);
    return false;
  }
  itimerspec its{};
  its.it_interval.tv_nsec = interval_ns;
  its.it_value.tv_nsec = interval_ns;
  if (timer_settime(*out, 0, &its, nullptr) != 0) {
    *err = std::string("timer_settime: ") + std::strerror(errno);
    return false;
  }
  return true;
}

void owner_main(Owner& o, const std::atomic<bool>& stop, std::atomic<uint32_t>& ready) {
  o.tid = static_cast<int32_t>(gettid());
  const int rc = o.rb->bind_thread(o.cpu);
  if (rc != 0) o.error = "bind_thread: " + std::to_string(rc);
  tl_owner = &o;
  o.active = 1;
  timer_t ta{}, tb{};
  const bool have_a = rc == 0 && make_timer(SIGRTMIN, kTimerANs, o.tid, &ta, &o.error);
  const bool have_b = have_a && make_timer(SIGUSR1, kTimerBNs, o.tid, &tb, &o.error);
  ready.fetch_add(1);
  if (have_b) {
#ifdef STRESS_TSAN
    // TSan runs handlers deferred, between two pthread_sigmask calls that
    // save the thread's mask in one slot per thread; when that nests, the
    // thread is left with every signal blocked (seen in
    // /proc/<pid>/task/<tid>/status: SigBlk all ones, SIGUSR1 and SIGRTMIN
    // pending). Unblock ours now and then, or the handlers stop running.
    sigset_t ours;
    sigemptyset(&ours);
    sigaddset(&ours, SIGRTMIN);
    sigaddset(&ours, SIGUSR1);
#endif
    for (uint64_t it = 0; !stop.load(std::memory_order_relaxed); it++) {
      attempt(o, 0);
#ifdef STRESS_TSAN
      if ((it & 1023) == 0) pthread_sigmask(SIG_UNBLOCK, &ours, nullptr);
#endif
    }
  }
  // Timers off, then the signals blocked: no handler runs after this, so the
  // tallies are final (a signal still pending is dropped at thread exit).
  if (have_a) timer_delete(ta);
  if (have_b) timer_delete(tb);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  o.active = 0;
  tl_owner = nullptr;
  o.rb->unbind_thread();
}

struct Case {
  const char* name;
  Mode mode;
  uint32_t page_size;
  uint32_t pages;
  ReadStyle style;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class SignalNesting : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);  // each may interrupt the other: depth 3
    sa.sa_flags = SA_RESTART;
    ASSERT_EQ(sigaction(SIGRTMIN, &sa, nullptr), 0);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
  }
};

TEST_P(SignalNesting, ExactAndOrdered) {
  const Case& c = GetParam();
  const double seconds = case_seconds();
  Options opt;
  opt.ncpus = kOwners;
  opt.page_size = c.page_size;
  opt.pages_per_cpu = c.pages;
  opt.mode = c.mode;
  Error err;
  auto rb = RingBuffer::create(opt, &err);
  ASSERT_TRUE(rb) << err.message;
  const bool pc = c.mode == Mode::kProducerConsumer;
  const uint64_t ts_begin = rb->clock().now();

  auto owners = std::make_unique<Owner[]>(kOwners);
  std::vector<CpuVerifier> v;
  for (uint32_t i = 0; i < kOwners; i++) {
    Owner& o = owners[i];
    o.cpu = i;
    o.rb = rb.get();
    for (uint32_t s = 0; s < kStreams; s++) {
      o.s[s].rng = Rng(100 * i + s + 1);
      // Handlers must not allocate: their refusal log has a fixed capacity.
      if (s != 0) o.s[s].failed = RangeLog(1 << 16, /*grow=*/false);
    }
    v.emplace_back(i, kStreams, /*locate_losses=*/false);
    v.back().set_ts_bounds(ts_begin);
  }

  std::atomic<bool> stop{false}, reader_stop{false};
  std::atomic<uint32_t> ready{0};
  DataPage* spare = rb->alloc_read_page();
  ASSERT_NE(spare, nullptr);
  std::thread reader([&] {
    Rng rr(99);
    uint64_t rounds = 0;
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
      for (uint32_t cpu = 0; cpu < kOwners; cpu++)
        got += read_step(*rb, cpu, c.style, rr.below(2) == 0, &spare, v[cpu]);
      if (++rounds % 64 == 0)
        std::this_thread::sleep_for(microseconds(300 + rr.below(3000)));
      else if (got == 0)
        std::this_thread::yield();
    }
  });
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < kOwners; i++)
    threads.emplace_back(owner_main, std::ref(owners[i]), std::cref(stop), std::ref(ready));
  while (ready.load() < kOwners) std::this_thread::yield();

  // At least `seconds`; longer (up to 4x) while the handlers have written
  // fewer than kMinHandlerEvents events (a loaded machine, TSan).
  auto handler_events = [&] {
    uint64_t n = 0;
    for (uint32_t i = 0; i < kOwners; i++) n += owners[i].handler_ok.load(std::memory_order_relaxed);
    return n;
  };
  Rng crng(7);
  const auto start = steady_clock::now();
  const auto end = start + duration<double>(seconds);
  const auto hard_end = start + duration<double>(4 * seconds);
  for (;;) {
    const auto now = steady_clock::now();
    if (now >= hard_end || (now >= end && handler_events() >= kMinHandlerEvents)) break;
    std::this_thread::sleep_for(milliseconds(3));
    const uint32_t cpu = crng.below(kOwners);
    EXPECT_EQ(rb->record_disable_cpu(cpu), 0);
    std::this_thread::sleep_for(microseconds(150));
    EXPECT_EQ(rb->record_enable_cpu(cpu), 0);
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  reader_stop.store(true);
  reader.join();
  for (uint32_t cpu = 0; cpu < kOwners; cpu++) drain(*rb, cpu, c.style, &spare, v[cpu]);
  rb->free_read_page(spare);
  const uint64_t ts_end = rb->clock().now();

  uint64_t handler_ok = 0, inside_write = 0, depth3 = 0, overruns = 0, drops = 0;
  for (uint32_t cpu = 0; cpu < kOwners; cpu++) {
    SCOPED_TRACE("cpu " + std::to_string(cpu));
    Owner& o = owners[cpu];
    CpuVerifier& cv = v[cpu];
    cv.set_pid(o.tid);
    Tally t;
    for (uint32_t s = 0; s < kStreams; s++) t.merge(o.s[s].tally);
    const CpuStats st = rb->stats(cpu);
    std::string info = "\n  stats:  " + stats_str(st) + "\n  all:    " + tally_str(t);
    for (uint32_t s = 0; s < kStreams; s++)
      info += "\n  stream " + std::to_string(s) + ": " + tally_str(o.s[s].tally);
    ASSERT_EQ(o.error, "");
    EXPECT_EQ(t.other, 0u) << "unexpected return code " << t.last_other << info;
    EXPECT_EQ(t.attempts,
              st.entries + st.dropped + st.commit_overrun + st.nested_dropped + st.disabled)
        << info;
    EXPECT_EQ(t.ok, st.entries) << info;
    EXPECT_EQ(t.enospc + t.eloop, st.dropped + st.commit_overrun + st.nested_dropped) << info;
    EXPECT_EQ(t.eperm + t.eagain, st.disabled) << info;
    EXPECT_EQ(st.entries, st.read + st.overrun) << info;
    EXPECT_EQ(st.read, cv.decoded()) << info;
    uint64_t next_total = 0;
    for (uint32_t s = 0; s < kStreams; s++) {
      cv.finish_stream(s, o.s[s].seq);
      next_total += o.s[s].seq;
      EXPECT_FALSE(o.s[s].failed.overflow()) << "stream " << s << ": refusal log full";
    }
    EXPECT_EQ(cv.errors(), 0u) << cv.messages() << info;
    EXPECT_EQ(cv.gap_total(), next_total - cv.decoded()) << info;
    EXPECT_EQ(cv.gap_total(), st.overrun + t.enospc + t.eloop) << info;
    for (uint32_t s = 0; s < kStreams; s++) {
      if (pc) {
        EXPECT_EQ(cv.gaps(s).ranges(), o.s[s].failed.ranges())
            << "stream " << s << " missing:" << ranges_str(cv.gaps(s))
            << "\n  refused:" << ranges_str(o.s[s].failed) << info;
      } else {
        EXPECT_TRUE(cv.gaps(s).covers(o.s[s].failed)) << "stream " << s << info;
      }
    }
    if (pc) {
      EXPECT_EQ(st.overrun, 0u) << info;
    }
    if (cv.unknown_flags() == 0) {
      // Every loss was told with a page, except refusals after the tail's
      // last page entry (no page comes after them to carry them).
      EXPECT_EQ(cv.stored_lost() + untold_losses(*rb, cpu) + trailing_refusals(*rb, cpu),
                  st.lost()) << info;
    } else {
      EXPECT_LT(cv.stored_lost(), st.lost()) << info;
    }
    EXPECT_LE(cv.max_ts(), ts_end);

    const uint64_t hok = o.s[1].tally.ok + o.s[2].tally.ok;
    handler_ok += hok;
    inside_write += o.s[1].inside_write + o.s[2].inside_write;
    depth3 += o.s[1].depth3 + o.s[2].depth3;
    overruns += st.overrun;
    drops += st.dropped;
    std::printf("[ %-13s ] cpu %u: %s\n  handler calls %llu/%llu, events %llu (%llu during an "
                "owner write, %llu attempts and %llu reserve+commit events at depth 3); read: "
                "%llu owner, %llu/%llu handler, %llu at depth 3; loss reports %llu\n",
                c.name, cpu, stats_str(st).c_str(),
                static_cast<unsigned long long>(o.s[1].calls),
                static_cast<unsigned long long>(o.s[2].calls),
                static_cast<unsigned long long>(hok),
                static_cast<unsigned long long>(o.s[1].inside_write + o.s[2].inside_write),
                static_cast<unsigned long long>(o.s[1].depth3 + o.s[2].depth3),
                static_cast<unsigned long long>(o.s[1].by_level[2] + o.s[2].by_level[2]),
                static_cast<unsigned long long>(cv.stream_count(0)),
                static_cast<unsigned long long>(cv.stream_count(1)),
                static_cast<unsigned long long>(cv.stream_count(2)),
                static_cast<unsigned long long>(cv.level_count(2)),
                static_cast<unsigned long long>(cv.loss_flags()));
  }
  EXPECT_GE(handler_ok, kMinHandlerEvents) << "the handlers hardly ran";
  if (pc) {
    EXPECT_GT(drops, 0u) << "the buffer never filled";
  } else {
    EXPECT_GT(overruns, 0u) << "the buffer never wrapped";
  }
#ifndef STRESS_TSAN
  // TSan runs handlers only at its own safe points: inside a write that is
  // the memcpy (an interceptor), and nesting handlers is rarer still.
  EXPECT_GT(inside_write, 0u) << "no handler event was written inside an owner's write";
  EXPECT_GT(depth3, 0u) << "no write was attempted at nesting depth 3";
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Stress, SignalNesting,
    ::testing::Values(Case{"ow_4k_pages", Mode::kOverwrite, 4096, 4, ReadStyle::kPages},
                      Case{"ow_16k_consume", Mode::kOverwrite, 16384, 6, ReadStyle::kConsume},
                      Case{"ow_64k_pages", Mode::kOverwrite, 65536, 4, ReadStyle::kPages},
                      Case{"pc_4k_pages", Mode::kProducerConsumer, 4096, 8, ReadStyle::kPages},
                      Case{"pc_16k_pages", Mode::kProducerConsumer, 16384, 4, ReadStyle::kPages},
                      Case{"pc_64k_consume", Mode::kProducerConsumer, 65536, 4,
                           ReadStyle::kConsume}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
