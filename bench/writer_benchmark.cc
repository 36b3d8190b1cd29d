// writer_benchmark.cc - the cost of one event on the writer side (W0..W6),
// each benchmark one question (see bench/README.md for the list):
//
//   BM_Writer_ReserveCommit/<bytes>         reserve + copy + commit, counter
//                                           clock, overwrite, steady state
//   BM_Writer_ReserveCommit/mono/<bytes>    the same with CLOCK_MONOTONIC
//   BM_Writer_ReserveCommit/pc/<bytes>      producer/consumer mode; when the
//                                           ring is full the writer thread
//                                           drains it itself (read_page)
//   BM_Writer_Emit/16, /mono/16             typed RBTRACE_EVENT, two u64
//   BM_Writer_EmitStr/<bytes>, /mono/<bytes>  typed event with one string
//                                           field of <bytes> (NUL included):
//                                           the typed path's variable size
//   BM_Writer_EmitDisabled/16               typed event after disable()
//   BM_Writer_NoTracer/16                   the same event without a ring
//                                           argument, no process ring made
//                                           (rbtrace/tracer.h): -ENODEV
//   BM_Library_NoTracer/16, _Traced/16, _RingDisabled/16, _Untraced
//                                           a call into a library
//                                           (bench_lib.h) with such a
//                                           tracepoint and no process ring,
//                                           into the process ring, with a
//                                           disabled tracepoint taking its
//                                           ring from the caller, and without
//                                           a tracepoint
//   BM_Writer_Scope, _Async, _Counter, _CounterF, _Slice, _Flow
//                                           the track events of rbtrace/track.h
//                                           (a 6-character name): one
//                                           RBTRACE_SCOPE (2 events), an
//                                           async_begin + async_end (2), one
//                                           counter / slice / flow (1); items
//                                           are events
//   BM_Writer_ReserveRecordOff/16           reserve on a ring that is off (W1)
//   BM_Writer_SignalNested/<n>              n writes in a signal handler that
//                                           interrupted an open reservation
//   BM_Writer_Threads/16/real_time/threads:<t>  t threads, one CPU slot each
//
// All rings are overwrite rings of kPages pages unless stated: they wrap all
// the time, so page crossings (W5) are in the measured cost.
#include <benchmark/benchmark.h>

#include <signal.h>

#include <algorithm>
#include <cstring>
#include <vector>
#include <string>
#include <thread>

#include "bench_common.h"
#include "bench_lib.h"
#include "rbtrace/tracer.h"
#include "rbtrace/track.h"

RBTRACE_EVENT(rbtrace_bench, rec16_noring, ((uint64_t, a))((uint64_t, b)))

namespace rbtrace::bench {
namespace {

// ---------------------------------------------------------------------------
// reserve + copy + commit of N bytes
// ---------------------------------------------------------------------------
template <uint32_t N>
void BM_Writer_ReserveCommit(benchmark::State& state, ClockKind clock) {
  BoundRing rb(writer_options(clock));
  alignas(8) unsigned char payload[N];
  std::memset(payload, 0x5a, N);
  uint64_t failed = 0;
  uint64_t i = 0;
  for (auto _ : state) {
    std::memcpy(payload, &i, sizeof i < N ? sizeof i : N);  // a sequence number
    Reservation r = rb->reserve(N);
    if (RBTRACE_UNLIKELY(!r)) {
      failed++;
      continue;
    }
    std::memcpy(r.data, payload, N);
    rb->commit(r);
    i++;
  }
  state.SetItemsProcessed(static_cast<int64_t>(i));
  state.SetBytesProcessed(static_cast<int64_t>(i * N));
  state.counters["failed"] = static_cast<double>(failed);
}

// Producer/consumer mode, the consumer inline: when a reserve is refused
// because the ring is full, the writer thread takes every full page with
// read_page (a zero-copy page swap) and goes on. Items are the events
// written; the refused attempts (one per ring's worth) cost time but are not
// items. This is the writer's cost in producer/consumer mode plus the
// reader's page swaps, without two cores fighting over the cache lines.
template <uint32_t N>
void BM_Writer_ReserveCommit_Pc(benchmark::State& state) {
  BoundRing rb(writer_options(ClockKind::kCounter, 1, Mode::kProducerConsumer));
  DataPage* spare = rb->alloc_read_page();
  alignas(8) unsigned char payload[N];
  std::memset(payload, 0x5a, N);
  uint64_t written = 0, refused = 0, pages = 0;
  for (auto _ : state) {
    std::memcpy(payload, &written, sizeof written < N ? sizeof written : N);
    Reservation r = rb->reserve(N);
    if (RBTRACE_UNLIKELY(!r)) {
      refused++;
      while (rb->read_page(&spare, 0, true) > 0) pages++;
      continue;
    }
    std::memcpy(r.data, payload, N);
    rb->commit(r);
    written++;
  }
  rb->free_read_page(spare);
  state.SetItemsProcessed(static_cast<int64_t>(written));
  state.SetBytesProcessed(static_cast<int64_t>(written * N));
  state.counters["refused"] = static_cast<double>(refused);
  state.counters["pages_read"] = static_cast<double>(pages);
}

// ---------------------------------------------------------------------------
// Typed events
// ---------------------------------------------------------------------------
void BM_Writer_Emit(benchmark::State& state, ClockKind clock) {
  BoundRing rb(writer_options(clock));
  rbtrace_events::rbtrace_bench_rec16::enable();
  uint64_t i = 0, failed = 0;
  for (auto _ : state) {
    if (RBTRACE_UNLIKELY(rbtrace_events::rbtrace_bench_rec16::emit(*rb, i, ~i) != 0)) failed++;
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * 16);
  state.counters["failed"] = static_cast<double>(failed);
}

// A typed event carrying N bytes in its string field (N - 1 characters and
// the NUL): the dynamic-size path of RBTRACE_EVENT (the length is computed,
// the __data_loc word written, the characters copied) for the payload sizes
// of BM_Writer_ReserveCommit.
template <uint32_t N>
void BM_Writer_EmitStr(benchmark::State& state, ClockKind clock) {
  BoundRing rb(writer_options(clock));
  static_assert(N >= 1);
  std::string text(N - 1, 'x');
  uint64_t failed = 0;
  for (auto _ : state) {
    if (RBTRACE_UNLIKELY(rbtrace_events::rbtrace_bench_blob::emit(*rb, text) != 0)) failed++;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * N);
  state.counters["failed"] = static_cast<double>(failed);
}

// A typed event after disable(): one relaxed load and a branch, no ring
// access. The question is the absolute cost (target: at most 1 ns).
void BM_Writer_EmitDisabled(benchmark::State& state) {
  BoundRing rb(writer_options());
  rbtrace_events::rbtrace_bench_rec16_off::disable();
  uint64_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(rbtrace_events::rbtrace_bench_rec16_off::emit(*rb, i, i));
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  if (rb->stats(0).entries != 0) state.SkipWithError("a disabled event was written");
}

// A typed event without a RingBuffer& in a process that made no process
// ring (rbtrace/tracer.h): one load and a branch, as a disabled event. An
// event of its own: another caller of rec16's write would change how the
// compiler inlines that into BM_Writer_Emit.
void BM_Writer_NoTracer(benchmark::State& state) {
  if (rbtrace::process_ring() != nullptr) {
    state.SkipWithError("a process ring exists");
    return;
  }
  uint64_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(rbtrace_events::rbtrace_bench_rec16_noring::emit(i, i));
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  if (rbtrace_events::rbtrace_bench_rec16_noring::emit(i, i) != -ENODEV)
    state.SkipWithError("an event without a process ring was not refused");
}

// The same through a library (bench_lib.h, its own static library): a call
// to a function with a tracepoint and no process ring, beside the same
// function without the tracepoint. The difference is what a library's
// tracepoint costs a host that set nothing up.
void BM_Library_NoTracer(benchmark::State& state) {
  if (rbtrace::process_ring() != nullptr) {
    state.SkipWithError("a process ring exists");
    return;
  }
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(bench_lib::op_traced(i++));
  state.SetItemsProcessed(state.iterations());
}
void BM_Library_RingDisabled(benchmark::State& state) {
  BoundRing rb(writer_options());
  bench_lib::disable_op_off();
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(bench_lib::op_ring_disabled(*rb, i++));
  state.SetItemsProcessed(state.iterations());
  if (rb->stats(0).entries != 0) state.SkipWithError("a disabled event was written");
}
// Into the process ring: a ring of the benchmarks' options, installed as
// the process ring for this benchmark only, through the pointer behind
// tracer::init (rbtrace/tracer.h), which has no way to take a ring away:
// writers might hold it. Here only this thread writes, and the
// BM_*_NoTracer benchmarks, in whatever order they run, need no process
// ring.
void BM_Library_Traced(benchmark::State& state) {
  BoundRing rb(writer_options());
  rbtrace::RingBuffer* expected = nullptr;
  if (!rbtrace::detail::g_process_ring.compare_exchange_strong(expected, &*rb)) {
    state.SkipWithError("a process ring exists");
    return;
  }
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(bench_lib::op_traced(i++));
  rbtrace::detail::g_process_ring.store(nullptr);
  state.SetItemsProcessed(state.iterations());
  if (rb->stats(0).entries != i) state.SkipWithError("an event was not written");
}
void BM_Library_Untraced(benchmark::State& state) {
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(bench_lib::op_untraced(i++));
  state.SetItemsProcessed(state.iterations());
}

// The track events (rbtrace/track.h): what a scope, an async slice, a
// counter, a complete slice and a flow cost. Items are events (a scope and
// an async slice are two), so items/s compares with BM_Writer_Emit/16.
void BM_Writer_Scope(benchmark::State& state) {
  BoundRing rb(writer_options());
  for (auto _ : state) {
    RBTRACE_SCOPE(*rb, "handle");
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * 2);
}
void BM_Writer_Async(benchmark::State& state) {
  BoundRing rb(writer_options());
  uint64_t id = 0;
  for (auto _ : state) {
    rbtrace::async_begin(*rb, "handle", id);
    rbtrace::async_end(*rb, "handle", id);
    id++;
  }
  state.SetItemsProcessed(state.iterations() * 2);
}
void BM_Writer_Counter(benchmark::State& state) {
  BoundRing rb(writer_options());
  int64_t v = 0;
  for (auto _ : state) rbtrace::counter(*rb, "handle", v++);
  state.SetItemsProcessed(state.iterations());
}
void BM_Writer_CounterF(benchmark::State& state) {
  BoundRing rb(writer_options());
  double v = 0;
  for (auto _ : state) rbtrace::counter(*rb, "handle", v += 0.5);
  state.SetItemsProcessed(state.iterations());
}
void BM_Writer_Slice(benchmark::State& state) {
  BoundRing rb(writer_options());
  uint64_t d = 0;
  for (auto _ : state) rbtrace::slice(*rb, "handle", d++);
  state.SetItemsProcessed(state.iterations());
}
void BM_Writer_Flow(benchmark::State& state) {
  BoundRing rb(writer_options());
  uint64_t id = 0;
  for (auto _ : state) rbtrace::flow(*rb, "handle", id++, rbtrace::FlowPhase::step);
  state.SetItemsProcessed(state.iterations());
}

// The other way to turn tracing off: the whole ring record_off(). reserve
// stops at W1 (and counts the refusal in `disabled`).
void BM_Writer_ReserveRecordOff(benchmark::State& state) {
  BoundRing rb(writer_options());
  rb->record_off();
  for (auto _ : state) {
    Reservation r = rb->reserve(16);
    benchmark::DoNotOptimize(r.err);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------
// The first event of a thread: it claims a CPU slot (a CAS, gettid cached,
// prctl(PR_GET_NAME) for the name table, the binding). One iteration is an
// unbind (the slot given back) and a write that claims it again; each is
// timed alone (CLOCK_MONOTONIC) for p50/p99, and the manual time is the sum.
// ---------------------------------------------------------------------------
// p50_ns and p99_ns of the per-write times in *ns (sorted here).
void set_percentiles(benchmark::State& state, std::vector<double>* ns) {
  std::sort(ns->begin(), ns->end());
  if (ns->empty()) return;
  state.counters["p50_ns"] = (*ns)[ns->size() / 2];
  state.counters["p99_ns"] = (*ns)[std::min(ns->size() - 1, ns->size() * 99 / 100)];
}

void BM_Writer_FirstEventClaim(benchmark::State& state) {
  Options o = writer_options();
  auto rb = RingBuffer::create(o);
  std::vector<double> ns;
  ns.reserve(1u << 20);
  const Payload16 p{1, 2};
  uint64_t failed = 0;
  for (auto _ : state) {
    rb->unbind_thread();
    const uint64_t t0 = read_posix_clock(CLOCK_MONOTONIC);
    const int rc = rb->write(&p, sizeof p);
    const uint64_t t1 = read_posix_clock(CLOCK_MONOTONIC);
    if (rc != 0) failed++;
    state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    if (ns.size() < ns.capacity()) ns.push_back(static_cast<double>(t1 - t0));
    if ((state.iterations() & 1023) == 0) rb->reset_cpu(0);  // keep it from filling
  }
  rb->unbind_thread();
  set_percentiles(state, &ns);
  state.counters["failed"] = static_cast<double>(failed);
  state.SetItemsProcessed(state.iterations());
}

// The first event of a thread when every slot made so far is taken: the
// claim makes a new slot and maps its memory (one mmap of (pages_per_cpu +
// 1) pages plus the descriptors, pre-faulted), then writes. The slot this
// thread had is kept taken (claim_cpu_for), so each iteration makes one;
// at the limit the ring is made anew (not timed).
void BM_Writer_FirstEventNewSlot(benchmark::State& state) {
  Options o = writer_options();
  o.ncpus = 1;
  o.max_cpus = 256;
  auto rb = RingBuffer::create(o);
  (void)rb->claim_cpu_for(0);  // the one slot made at create: taken
  std::vector<double> ns;
  ns.reserve(1u << 16);
  const Payload16 p{1, 2};
  uint64_t failed = 0, made = 0;
  for (auto _ : state) {
    const int cur = rb->current_cpu();
    rb->unbind_thread();
    if (cur >= 0) (void)rb->claim_cpu_for(static_cast<uint32_t>(cur));  // stays taken
    if (rb->ncpus() == rb->max_cpus()) {
      rb.reset();
      rb = RingBuffer::create(o);
      (void)rb->claim_cpu_for(0);
    }
    const uint32_t before = rb->ncpus();
    const uint64_t t0 = read_posix_clock(CLOCK_MONOTONIC);
    const int rc = rb->write(&p, sizeof p);
    const uint64_t t1 = read_posix_clock(CLOCK_MONOTONIC);
    if (rc != 0) failed++;
    made += rb->ncpus() - before;
    state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    if (ns.size() < ns.capacity()) ns.push_back(static_cast<double>(t1 - t0));
  }
  rb->unbind_thread();
  set_percentiles(state, &ns);
  state.counters["failed"] = static_cast<double>(failed);
  // Every timed write made a slot (else the figure would be a reuse's).
  state.counters["slots_made_per_claim"] =
      static_cast<double>(made) / static_cast<double>(std::max<uint64_t>(1, state.iterations()));
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------
// Writes nested in a signal handler
// ---------------------------------------------------------------------------
// The owner reserves an event (W2 entered, level 0) and raises a signal; the
// handler writes n events of 16 bytes at level 1: each takes the nested path
// (absolute time stamp, no commit move, since the owner's commit is still
// open); the owner then commits, which publishes them all (W6). The handler
// times its own loop (CLOCK_MONOTONIC, two reads per n writes), so the
// reported time per item is the cost of one nested write, without the
// signal delivery. The ring has 32 pages so n nested writes never lap the
// owner's open commit.
struct SignalContext {
  RingBuffer* rb = nullptr;
  uint32_t n = 0;
  uint64_t ns = 0;
  uint64_t failed = 0;
};
SignalContext* volatile g_signal_ctx = nullptr;
constexpr int kBenchSignal = SIGUSR2;

void nested_writer(int) {
  SignalContext* c = g_signal_ctx;
  if (!c) return;
  const Payload16 p{0x1111, 0x2222};
  const uint64_t t0 = read_posix_clock(CLOCK_MONOTONIC);
  for (uint32_t k = 0; k < c->n; k++) {
    Reservation r = c->rb->reserve(sizeof p);
    if (RBTRACE_UNLIKELY(!r)) {
      c->failed++;
      continue;
    }
    std::memcpy(r.data, &p, sizeof p);
    c->rb->commit(r);
  }
  c->ns += read_posix_clock(CLOCK_MONOTONIC) - t0;
}

void BM_Writer_SignalNested(benchmark::State& state) {
  const auto n = static_cast<uint32_t>(state.range(0));
  BoundRing rb(writer_options(ClockKind::kCounter, 1, Mode::kOverwrite, 32));
  SignalContext ctx;
  ctx.rb = &*rb;
  ctx.n = n;
  struct sigaction sa{}, old{};
  sa.sa_handler = nested_writer;
  sigemptyset(&sa.sa_mask);
  sigaction(kBenchSignal, &sa, &old);
  g_signal_ctx = &ctx;
  const Payload16 p{1, 2};
  uint64_t outer_failed = 0;
  for (auto _ : state) {
    const uint64_t before = ctx.ns;
    Reservation r = rb->reserve(sizeof p);
    raise(kBenchSignal);
    if (RBTRACE_LIKELY(r)) {
      std::memcpy(r.data, &p, sizeof p);
      rb->commit(r);
    } else {
      outer_failed++;
    }
    state.SetIterationTime(static_cast<double>(ctx.ns - before) * 1e-9);
  }
  g_signal_ctx = nullptr;
  sigaction(kBenchSignal, &old, nullptr);
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * sizeof p);
  state.counters["failed"] = static_cast<double>(ctx.failed + outer_failed);
}

// ---------------------------------------------------------------------------
// 1..N writer threads, one CPU slot each
// ---------------------------------------------------------------------------
std::unique_ptr<RingBuffer> g_threads_rb;

void threads_setup(const benchmark::State& state) {
  g_threads_rb = make_ring(writer_options(ClockKind::kCounter,
                                          static_cast<uint32_t>(state.threads())));
}
void threads_teardown(const benchmark::State&) { g_threads_rb.reset(); }

void BM_Writer_Threads(benchmark::State& state) {
  RingBuffer& rb = *g_threads_rb;
  BoundRing::bind(rb, static_cast<uint32_t>(state.thread_index()));
  Payload16 p{static_cast<uint64_t>(state.thread_index()), 0};
  uint64_t failed = 0;
  for (auto _ : state) {
    Reservation r = rb.reserve(sizeof p);
    if (RBTRACE_UNLIKELY(!r)) {
      failed++;
      continue;
    }
    std::memcpy(r.data, &p, sizeof p);
    rb.commit(r);
    p.b++;
  }
  rb.unbind_thread();
  state.SetItemsProcessed(static_cast<int64_t>(p.b));
  state.SetBytesProcessed(static_cast<int64_t>(p.b * sizeof p));
  state.counters["failed"] = static_cast<double>(failed);
}

// ---------------------------------------------------------------------------
template <uint32_t N>
void register_sizes() {
  const std::string n = std::to_string(N);
  common(benchmark::RegisterBenchmark(("BM_Writer_ReserveCommit/" + n).c_str(),
                                      BM_Writer_ReserveCommit<N>, ClockKind::kCounter));
  common(benchmark::RegisterBenchmark(("BM_Writer_ReserveCommit/mono/" + n).c_str(),
                                      BM_Writer_ReserveCommit<N>, ClockKind::kMono));
  common(benchmark::RegisterBenchmark(("BM_Writer_EmitStr/" + n).c_str(), BM_Writer_EmitStr<N>,
                                      ClockKind::kCounter));
  common(benchmark::RegisterBenchmark(("BM_Writer_EmitStr/mono/" + n).c_str(),
                                      BM_Writer_EmitStr<N>, ClockKind::kMono));
}

[[maybe_unused]] const bool registered = [] {
  register_sizes<8>();
  register_sizes<16>();
  register_sizes<64>();
  register_sizes<256>();
  register_sizes<1024>();
  common(benchmark::RegisterBenchmark("BM_Writer_ReserveCommit/pc/16",
                                      BM_Writer_ReserveCommit_Pc<16>));
  common(benchmark::RegisterBenchmark("BM_Writer_Emit/16", BM_Writer_Emit, ClockKind::kCounter));
  common(benchmark::RegisterBenchmark("BM_Writer_Emit/mono/16", BM_Writer_Emit,
                                      ClockKind::kMono));
  common(benchmark::RegisterBenchmark("BM_Writer_EmitDisabled/16", BM_Writer_EmitDisabled));
  common(benchmark::RegisterBenchmark("BM_Writer_NoTracer/16", BM_Writer_NoTracer));
  common(benchmark::RegisterBenchmark("BM_Library_NoTracer/16", BM_Library_NoTracer));
  common(benchmark::RegisterBenchmark("BM_Library_RingDisabled/16", BM_Library_RingDisabled));
  common(benchmark::RegisterBenchmark("BM_Library_Untraced", BM_Library_Untraced));
  common(benchmark::RegisterBenchmark("BM_Writer_Scope", BM_Writer_Scope));
  common(benchmark::RegisterBenchmark("BM_Writer_Async", BM_Writer_Async));
  common(benchmark::RegisterBenchmark("BM_Writer_Counter", BM_Writer_Counter));
  common(benchmark::RegisterBenchmark("BM_Writer_CounterF", BM_Writer_CounterF));
  common(benchmark::RegisterBenchmark("BM_Writer_Slice", BM_Writer_Slice));
  common(benchmark::RegisterBenchmark("BM_Writer_Flow", BM_Writer_Flow));
  common(benchmark::RegisterBenchmark("BM_Writer_ReserveRecordOff/16",
                                      BM_Writer_ReserveRecordOff));
  common(benchmark::RegisterBenchmark("BM_Writer_FirstEventClaim", BM_Writer_FirstEventClaim)
             ->UseManualTime());
  common(benchmark::RegisterBenchmark("BM_Writer_FirstEventNewSlot", BM_Writer_FirstEventNewSlot)
             ->UseManualTime());
  common(benchmark::RegisterBenchmark("BM_Writer_SignalNested", BM_Writer_SignalNested)
             ->Arg(256)
             ->UseManualTime());
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  common(benchmark::RegisterBenchmark("BM_Writer_Threads/16", BM_Writer_Threads)
             ->Setup(threads_setup)
             ->Teardown(threads_teardown)
             ->DenseThreadRange(1, hw > 2 ? hw : 2)
             ->UseRealTime());
  common(benchmark::RegisterBenchmark("BM_Library_Traced/16", BM_Library_Traced));
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
