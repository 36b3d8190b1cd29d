// callgrind_driver.cc - N events on the writer fast path, for bench/callgrind.py
// (instructions per event under valgrind --tool=callgrind: run it with N and
// 2N and divide the difference by N, so start-up and calibration cancel).
//
//   rbtrace-callgrind-driver N [reserve|emit|disabled] [counter|mono]
//
// reserve   reserve(16) + copy 16 bytes + commit, the loop of
//           BM_Writer_ReserveCommit/16 (default)
// emit      the typed event rbtrace_bench:rec16 (two u64), as BM_Writer_Emit/16
// disabled  the same typed event after disable(), as BM_Writer_EmitDisabled/16
//
// The ring is the benchmarks' (bench_common.h: overwrite, 8 pages of 4 KiB),
// so page crossings (W5) are counted at their real rate.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench_ring.h"

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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s N [reserve|emit|disabled] [counter|mono]\n", argv[0]);
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
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  bench::BoundRing rb(bench::writer_options(clock));
  run(*rb, n);
  const CpuStats s = rb->stats(0);
  std::printf("events=%llu entries=%llu overrun=%llu\n", static_cast<unsigned long long>(n),
              static_cast<unsigned long long>(s.entries),
              static_cast<unsigned long long>(s.overrun));
  return 0;
}
