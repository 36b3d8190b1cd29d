// bench_common.h - what every benchmark of rbtrace-bench shares.
#pragma once

#include <benchmark/benchmark.h>

#include <vector>

#include "bench_ring.h"

namespace rbtrace::bench {

// Statistics reported beside mean/median/stddev when repetitions are on.
inline double stat_min(const std::vector<double>& v) {
  double m = v.empty() ? 0 : v[0];
  for (double x : v) m = x < m ? x : m;
  return m;
}

// Applies what every benchmark in this binary gets: the median and min over
// repetitions (--benchmark_repetitions, 5 by default, see main.cc).
inline benchmark::internal::Benchmark* common(benchmark::internal::Benchmark* b) {
  return b->ComputeStatistics("min", stat_min);
}

}  // namespace rbtrace::bench
