// main.cc - rbtrace-bench's main: Google Benchmark with this suite's
// defaults, the machine (and the directories of the consumer benchmarks)
// named in the JSON context, and the LTTng-UST session of the peer benchmark
// started before the run and destroyed after it.
//
// Defaults (each overridden by passing the flag):
//   --benchmark_repetitions=5      so every benchmark reports its median
//   --benchmark_display_aggregates_only=true   (the JSON keeps every run)
//   --benchmark_enable_random_interleaving=true   repetitions of different
//                                  benchmarks interleave, so a burst of load
//                                  from elsewhere hits them all alike
#include <benchmark/benchmark.h>

#include <sys/utsname.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "rbtrace/clock.h"

#ifdef RBTRACE_BENCH_HAVE_LTTNG
#include "lttng/lttng_session.h"
#endif
#ifdef RBTRACE_BENCH_HAVE_IO
#include "bench_io.h"
#endif

namespace {

bool has_flag(int argc, char** argv, const char* name) {
  const size_t n = std::strlen(name);
  for (int i = 1; i < argc; i++) {
    if (std::strncmp(argv[i], name, n) == 0 && (argv[i][n] == '=' || argv[i][n] == 0))
      return true;
  }
  return false;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("CPU part", 0) == 0) {
      auto pos = line.find(':');
      return pos == std::string::npos ? line : line.substr(pos + 2);
    }
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string reps = "--benchmark_repetitions=5";
  std::string aggr = "--benchmark_display_aggregates_only=true";
  std::string inter = "--benchmark_enable_random_interleaving=true";
  if (!has_flag(argc, argv, "--benchmark_repetitions")) args.push_back(reps.data());
  if (!has_flag(argc, argv, "--benchmark_display_aggregates_only") &&
      !has_flag(argc, argv, "--benchmark_report_aggregates_only"))
    args.push_back(aggr.data());
  if (!has_flag(argc, argv, "--benchmark_enable_random_interleaving"))
    args.push_back(inter.data());
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  utsname u{};
  uname(&u);
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("kernel", u.release);
  benchmark::AddCustomContext("machine", u.machine);
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
  benchmark::AddCustomContext("counter_hz",
                              std::to_string(rbtrace::counter_calibration().hz));
#ifdef RBTRACE_BENCH_HAVE_IO
  rbtrace::bench::add_io_context();  // directories and sizes of the consumer/snapshot rows
#endif

#ifdef RBTRACE_BENCH_HAVE_LTTNG
  rbtrace::bench::LttngSession lttng;
  lttng.start_if_selected();
  benchmark::AddCustomContext("lttng", lttng.status());
#else
  benchmark::AddCustomContext("lttng", "not built (liblttng-ust-dev not found at configure time)");
  std::fprintf(stderr,
               "rbtrace-bench: LTTng-UST peer not built (install liblttng-ust-dev and "
               "lttng-tools, then re-run cmake); BM_Peer_LttngUst is left out\n");
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

#ifdef RBTRACE_BENCH_HAVE_LTTNG
  lttng.stop();
#endif
  return 0;
}
