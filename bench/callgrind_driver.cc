// callgrind_driver.cc - N events on the writer fast path, for bench/callgrind.py
// (instructions per event under valgrind --tool=callgrind: run it with N and
// 2N and divide the difference by N, so start-up and calibration cancel).
//
//   rbtrace-callgrind-driver N [reserve|emit|disabled|no-tracer|lib-no-tracer|lib-traced|lib-untraced|lib-disabled]
//                              [counter|mono]
//
// reserve   reserve(16) + copy 16 bytes + commit, the loop of
//           BM_Writer_ReserveCommit/16 (default)
// emit      the typed event rbtrace_bench:rec16 (two u64), as BM_Writer_Emit/16
// disabled  the same typed event after disable(), as BM_Writer_EmitDisabled/16
// no-tracer the same typed event without a ring argument in a process with
//           no process ring (rbtrace/tracer.h), as BM_Writer_NoTracer/16
// lib-no-tracer / lib-traced / lib-untraced  a call into bench_lib (its
//           own static library) with that tracepoint: no process ring / into
//           the process ring / the same call without the tracepoint
//           (BM_Library_*)
// lib-disabled  the same call with a disabled tracepoint that takes the
//           ring from its caller (what a disabled event costs in a library)
//
// The ring is the benchmarks' (bench_common.h: overwrite, 8 pages of 4 KiB),
// so page crossings (W5) are counted at their real rate.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench_lib.h"
#include "bench_ring.h"
#include "rbtrace/tracer.h"

using namespace rbtrace;

namespace {

// One noinline function per mode that runs the whole loop, as the
// benchmarks do: the writer is inlined into the loop, so a call's register
// saves and restores are paid once per run, not once per event (they are
// not part of the writer's cost). callgrind_annotate still shows the
// driver's own lines (loop counter, payload) apart from the writer's.
[[gnu::noinline]] void run_reserve(RingBuffer& rb, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    const bench::Payload16 p{i, ~i};
    Reservation r = rb.reserve(sizeof p);
    if (RBTRACE_UNLIKELY(!r)) continue;
    std::memcpy(r.data, &p, sizeof p);
    rb.commit(r);
  }
}

[[gnu::noinline]] void run_emit(RingBuffer& rb, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) rbtrace_events::rbtrace_bench_rec16::emit(rb, i, ~i);
}

[[gnu::noinline]] void run_disabled(RingBuffer& rb, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) rbtrace_events::rbtrace_bench_rec16_off::emit(rb, i, ~i);
}

// rec16_off, not rec16: a second caller of rec16's write would change how
// the compiler inlines it into run_emit (a function called once is
// inlined), and with it the emit mode's count.
[[gnu::noinline]] void run_no_tracer(RingBuffer&, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) rbtrace_events::rbtrace_bench_rec16_off::emit(i, ~i);
}

uint64_t g_sink;  // the library calls' results go somewhere
[[gnu::noinline]] void run_lib_no_tracer(RingBuffer&, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += bench_lib::op_traced(i);
  g_sink = s;
}
[[gnu::noinline]] void run_lib_disabled(RingBuffer& rb, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += bench_lib::op_ring_disabled(rb, i);
  g_sink = s;
}
[[gnu::noinline]] void run_lib_traced(RingBuffer&, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += bench_lib::op_traced(i);
  g_sink = s;
}
[[gnu::noinline]] void run_lib_untraced(RingBuffer&, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += bench_lib::op_untraced(i);
  g_sink = s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s N [reserve|emit|disabled|no-tracer|lib-no-tracer|lib-traced|lib-untraced|lib-disabled] [counter|mono]\n", argv[0]);
    return 2;
  }
  const uint64_t n = std::strtoull(argv[1], nullptr, 10);
  const std::string mode = argc > 2 ? argv[2] : "reserve";
  ClockKind clock = ClockKind::kCounter;
  if (argc > 3 && !parse_clock_kind(argv[3], &clock)) {
    std::fprintf(stderr, "unknown clock %s\n", argv[3]);
    return 2;
  }
  void (*run)(RingBuffer&, uint64_t) = nullptr;
  if (mode == "reserve") {
    run = run_reserve;
  } else if (mode == "emit") {
    run = run_emit;
  } else if (mode == "disabled") {
    rbtrace_events::rbtrace_bench_rec16_off::disable();
    run = run_disabled;
  } else if (mode == "no-tracer") {
    run = run_no_tracer;
  } else if (mode == "lib-no-tracer") {
    run = run_lib_no_tracer;
  } else if (mode == "lib-untraced") {
    run = run_lib_untraced;
  } else if (mode == "lib-traced") {
    run = run_lib_traced;
  } else if (mode == "lib-disabled") {
    bench_lib::disable_op_off();
    run = run_lib_disabled;
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  if (mode == "lib-traced") {
    // The process ring, with the benchmarks' options, bound as BoundRing
    // binds its ring; bench_lib writes into it.
    RingBuffer* prb = tracer::init(bench::writer_options(clock));
    if (prb == nullptr || prb->bind_thread(0) != 0) return 1;
    run(*prb, n);
    const CpuStats s = prb->stats(0);
    std::printf("events=%llu entries=%llu overrun=%llu\n", static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(s.entries),
                static_cast<unsigned long long>(s.overrun));
    return s.entries == n ? 0 : 1;
  }
  bench::BoundRing rb(bench::writer_options(clock));
  run(*rb, n);
  const CpuStats s = rb->stats(0);
  std::printf("events=%llu entries=%llu overrun=%llu\n", static_cast<unsigned long long>(n),
              static_cast<unsigned long long>(s.entries),
              static_cast<unsigned long long>(s.overrun));
  return 0;
}
