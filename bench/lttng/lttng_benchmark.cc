// lttng_benchmark.cc - the peer: one LTTng-UST tracepoint with the same
// event shape as rbtrace's typed event (two u64), into a per-CPU overwrite
// channel of the same geometry as the rbtrace writer rings (the session is
// set up by main, see lttng_session.h). Compare with BM_Writer_Emit/16
// (rbtrace, counter clock) and BM_Writer_Emit/mono/16 (rbtrace with
// CLOCK_MONOTONIC, LTTng-UST's default clock).
#include <benchmark/benchmark.h>

#include "bench_common.h"
#include "lttng_session.h"
#include "rbtrace_bench_tp.h"

namespace rbtrace::bench {
namespace {

void BM_Peer_LttngUst(benchmark::State& state) {
  const std::string why = lttng_unavailable_reason();
  if (!why.empty()) {
    state.SkipWithError(why.c_str());
    return;
  }
  uint64_t i = 0;
  for (auto _ : state) {
    lttng_ust_tracepoint(rbtrace_bench, rec16, i, ~i);
    i++;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * 16);
}

[[maybe_unused]] const bool registered = [] {
  common(benchmark::RegisterBenchmark("BM_Peer_LttngUst/16", BM_Peer_LttngUst));
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
