// baseline_benchmark.cc - what rbtrace's writer is measured against, in the
// same binary and the same run:
//   BM_Baseline_ClockRead/tsc    a bare CPU-counter read (rdtsc, cntvct_el0):
//                                the floor of any time-stamped event
//   BM_Baseline_ClockRead/mono   clock_gettime(CLOCK_MONOTONIC) (vDSO)
//   BM_Baseline_Loop             the benchmark loop alone, with one value kept
//                                alive: what BM_Writer_EmitDisabled pays
//                                that a disabled event does not
//   BM_Baseline_SpscQueue_Push/16  boost::lockfree::spsc_queue push of the
//                                16-byte payload (no time stamp, one producer)
//   BM_Baseline_MutexRing_Write/16  a std::mutex-protected overwrite ring of
//                                the payload (no time stamp)
//   BM_Baseline_ClockRead/tsc/real_time/threads:<t>  t threads each reading the
//                                counter: how far this machine scales a
//                                per-thread loop that shares nothing, the
//                                ceiling for BM_Writer_Threads
#include <benchmark/benchmark.h>

#include <boost/lockfree/spsc_queue.hpp>

#include <array>
#include <ctime>
#include <mutex>
#include <thread>

#include "bench_common.h"
#include "rbtrace/clock.h"

namespace rbtrace::bench {
namespace {

void BM_Baseline_Loop(benchmark::State& state) {
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(i++);
  state.SetItemsProcessed(state.iterations());
}

void BM_Baseline_ClockRead_Tsc(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(read_cpu_counter());
  state.SetItemsProcessed(state.iterations());
}

void BM_Baseline_ClockRead_Mono(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(read_posix_clock(CLOCK_MONOTONIC));
  state.SetItemsProcessed(state.iterations());
}

// One producer, nobody consuming: the loop pushes until the queue is full,
// then empties it with reset() (O(1) for a trivially destructible element:
// two index stores), once per 4096 pushes. That is the queue's share of an
// overwrite ring with no reader, which is what BM_Writer_ReserveCommit
// measures; a consumer thread would measure cache-line traffic between two
// cores instead, which on a shared 2-core machine is mostly noise.
void BM_Baseline_SpscQueue_Push(benchmark::State& state) {
  using Queue = boost::lockfree::spsc_queue<Payload16, boost::lockfree::capacity<4096>>;
  static_assert(std::is_trivially_destructible_v<Payload16>);
  auto q = std::make_unique<Queue>();
  uint64_t i = 0;
  for (auto _ : state) {
    const Payload16 p{i, i};
    if (RBTRACE_UNLIKELY(!q->push(p))) {
      q->reset();
      q->push(p);
    }
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * sizeof(Payload16));
}

// A fixed overwrite ring of 2048 payloads (32 KiB, the size of the rbtrace
// writer rings) behind a std::mutex: lock, copy, unlock. One thread, so the
// mutex is never contended: this is the cheapest a locked ring gets.
void BM_Baseline_MutexRing_Write(benchmark::State& state) {
  struct Ring {
    std::mutex mu;
    uint64_t head = 0;
    std::array<Payload16, 2048> slots;
  };
  auto ring = std::make_unique<Ring>();
  uint64_t i = 0;
  for (auto _ : state) {
    const Payload16 p{i, i};
    {
      std::lock_guard<std::mutex> g(ring->mu);
      ring->slots[ring->head++ & (ring->slots.size() - 1)] = p;
    }
    benchmark::ClobberMemory();
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * sizeof(Payload16));
}

// The same loop as BM_Baseline_ClockRead/tsc in t threads at once, wall
// time: nothing is shared, so items/s at 2 threads over 1 thread is what
// the machine gives any two independent loops (two vCPUs of a VM may be
// two hyperthreads of one host core, for instance).
void BM_Baseline_ClockRead_Threads(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(read_cpu_counter());
  state.SetItemsProcessed(state.iterations());
}

[[maybe_unused]] const bool registered = [] {
  common(benchmark::RegisterBenchmark("BM_Baseline_Loop", BM_Baseline_Loop));
  common(benchmark::RegisterBenchmark("BM_Baseline_ClockRead/tsc", BM_Baseline_ClockRead_Tsc));
  common(benchmark::RegisterBenchmark("BM_Baseline_ClockRead/mono", BM_Baseline_ClockRead_Mono));
  common(benchmark::RegisterBenchmark("BM_Baseline_SpscQueue_Push/16", BM_Baseline_SpscQueue_Push));
  common(benchmark::RegisterBenchmark("BM_Baseline_MutexRing_Write/16",
                                      BM_Baseline_MutexRing_Write));
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  common(benchmark::RegisterBenchmark("BM_Baseline_ClockRead/tsc", BM_Baseline_ClockRead_Threads)
             ->DenseThreadRange(1, hw > 2 ? hw : 2)
             ->UseRealTime());
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
