// snapshot_benchmark.cc - what a snapshot costs.
//
// BM_Snapshot_Swap, BM_Snapshot_SwapBusy: swap latency. One iteration is one
// swap_cpu_marshalled round trip (request, doorbell signal, S2..S4 on the
// owner thread, futex answer) of a 1-CPU ring of 16 pages of 4 KiB, timed by
// the requester (manual time; the spare's reset after each swap is not
// timed). The owner is idle (blocked in a 50 ms sleep) for BM_Snapshot_Swap
// and writes 24-byte events flat out for BM_Snapshot_SwapBusy (-EBUSY
// answers are retried inside the call, so they are part of the latency).
// BM_Snapshot_SwapRemote, BM_Snapshot_SwapRemoteBusy: the same with an owner
// that blocks every signal, so the swap goes without a signal
// (swap_cpu_remote: mark, membarrier, check, on the requester's thread).
// Counters: p50_us, p90_us, p99_us, max_us over the swaps of the run (the
// tables take the median over repetitions), busy_retries (-EBUSY answers per
// swap), failed (swaps that returned an error; not in the percentiles),
// swaps (in the run).
// items_per_second is swaps per second of swap time (1e9 / it = the mean
// latency in ns).
//
// BM_Snapshot_TakeDump/<MiB per CPU>: Snapshot::take of every CPU of a
// 2-CPU overwrite ring whose CPU buffers (1, 4, 16, 64 and 256 MiB each;
// 1 MiB only with RBTRACE_BENCH_SMOKE=1) were filled and wrapped by their owners, which
// then stay alive and idle: swap, read_page of the whole swapped-out buffer
// into the memfd spool, write_trace_dat to a file in $RBTRACE_BENCH_DISK,
// reset. Manual time is take()'s duration; one take per repetition.
// Counters: total_ms, ms_per_cpu, file_MiB, MiB/s (file size / total),
// pages, slowest_swap_us.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "bench_io.h"
#include "rbtrace/event.h"
#include "rbtrace/ring_buffer.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/swap.h"

// 24 bytes of fields, a 36-byte event with the common header and the event
// header.
RBTRACE_EVENT(rbtrace_bench, snap24, ((uint64_t, seq))((uint64_t, a))((uint64_t, b)))

namespace rbtrace::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Nearest rank on sorted samples: v[floor(p * n)], the last for p = 1.
double percentile(const std::vector<double>& sorted, double p) {
  const size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size()));
  return sorted[std::min(sorted.size() - 1, i)];
}

void swap_latency(benchmark::State& state, bool busy, bool blocking = false) {
  Options o;
  o.ncpus = 1;
  o.page_size = 4096;
  o.pages_per_cpu = 16;
  Error err;
  auto live = RingBuffer::create(o, &err);
  auto spare = live ? RingBuffer::create(o, &err) : nullptr;
  if (!live || !spare) {
    state.SkipWithError(("RingBuffer::create: " + err.message).c_str());
    return;
  }
  std::atomic<bool> stop{false}, ready{false};
  std::thread owner([&] {
    if (blocking) {  // as a server's worker that sigwaits: no doorbell
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
    }
    live->bind_thread(0);
    ready.store(true);
    uint64_t seq = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (busy) {
        for (int i = 0; i < 64; i++) rbtrace_events::rbtrace_bench_snap24::emit(*live, ++seq, 1, 2);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    live->unbind_thread();
  });
  while (!ready.load()) std::this_thread::yield();

  std::vector<double> us;
  us.reserve(static_cast<size_t>(std::min<benchmark::IterationCount>(state.max_iterations,
                                                                      1 << 22)));
  uint64_t failed = 0, busy_retries = 0, remote = 0;
  int first_error = 0;
  for (auto _ : state) {
    SwapTrace t;
    const auto t0 = SteadyClock::now();
    const int rc = swap_cpu_marshalled(*live, *spare, 0, std::chrono::milliseconds(1000), &t);
    const auto t1 = SteadyClock::now();
    const double d = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(d);
    busy_retries += t.busy;
    remote += t.remote;
    if (rc != 0) {
      failed++;
      if (!first_error) first_error = rc;
      continue;
    }
    us.push_back(d * 1e6);
    spare->reset_cpu(0);
  }
  stop.store(true);
  owner.join();
  swap_release_mailboxes(*live);

  if (us.empty()) {
    state.SkipWithError(("every swap failed: " + std::string(std::strerror(-first_error))).c_str());
    return;
  }
  std::sort(us.begin(), us.end());
  const auto n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.counters["p50_us"] = percentile(us, 0.50);
  state.counters["p90_us"] = percentile(us, 0.90);
  state.counters["p99_us"] = percentile(us, 0.99);
  state.counters["max_us"] = us.back();
  state.counters["busy_retries"] = static_cast<double>(busy_retries) / n;
  state.counters["remote"] = static_cast<double>(remote) / n;  // runs without a signal per swap
  state.counters["failed"] = static_cast<double>(failed);
  state.counters["swaps"] = n;
}

void BM_Snapshot_Swap(benchmark::State& state) { swap_latency(state, false); }
void BM_Snapshot_SwapBusy(benchmark::State& state) { swap_latency(state, true); }
void BM_Snapshot_SwapRemote(benchmark::State& state) { swap_latency(state, false, true); }
void BM_Snapshot_SwapRemoteBusy(benchmark::State& state) { swap_latency(state, true, true); }

// Owners of every CPU of `snap`: each fills its CPU buffer (and wraps it a
// little), then stays alive and idle until destroyed, so take() goes through
// the doorbells.
class FilledOwners {
 public:
  FilledOwners(Snapshot& snap, uint32_t ncpus, uint64_t events_per_cpu) : snap_(snap) {
    for (uint32_t c = 0; c < ncpus; c++) {
      owners_.emplace_back([this, c, events_per_cpu] {
        snap_.live().bind_thread(c);
        for (uint64_t i = 0; i < events_per_cpu; i++)
          rbtrace_events::rbtrace_bench_snap24::emit(snap_.live(), i, c, 0);
        filled_.fetch_add(1);
        while (!stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        snap_.live().unbind_thread();
      });
    }
    while (filled_.load() < static_cast<int>(ncpus))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FilledOwners() {
    stop_.store(true);
    for (auto& t : owners_) t.join();
  }
  FilledOwners(const FilledOwners&) = delete;
  FilledOwners& operator=(const FilledOwners&) = delete;

 private:
  Snapshot& snap_;
  std::atomic<int> filled_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> owners_;
};

void BM_Snapshot_TakeDump(benchmark::State& state) {
  const auto mib = static_cast<uint32_t>(state.range(0));
  constexpr uint32_t kCpus = 2;
  const uint64_t need = static_cast<uint64_t>(mib) * kCpus * 1048576 * 3 / 2 + (16u << 20);
  ScratchDir scratch("RBTRACE_BENCH_DISK", io_config().disk, need);
  if (!scratch.ok()) {
    state.SkipWithError(scratch.why().c_str());
    return;
  }
  double total_s = 0, bytes = 0, slowest_swap_us = 0;
  uint64_t pages = 0;
  for (auto _ : state) {
    Options o;
    o.ncpus = kCpus;
    o.page_size = 4096;
    o.pages_per_cpu = mib * 256;
    o.mode = Mode::kOverwrite;
    Error err;
    auto snap = Snapshot::create(o, &err);
    if (!snap) {
      state.SkipWithError(("Snapshot::create: " + err.message).c_str());
      break;
    }
    SnapshotResult res;
    std::string e;
    int rc = 0;
    double secs = 0;
    off_t size = 0;
    {
      FilledOwners owners(*snap, kCpus, static_cast<uint64_t>(mib) * 1048576 / 36 + 1000);
      const std::string path = scratch.path() + "/snapshot.dat";
      const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) {
        state.SkipWithError((path + ": " + std::strerror(errno)).c_str());
        break;
      }
      const auto t0 = SteadyClock::now();
      rc = snap->take(fd, -1, &e, &res);
      secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
      size = lseek(fd, 0, SEEK_END);
      close(fd);
      unlink(path.c_str());
    }
    if (rc != 0) {
      state.SkipWithError(("Snapshot::take: " + (e.empty() ? std::strerror(-rc) : e)).c_str());
      break;
    }
    state.SetIterationTime(secs);
    total_s += secs;
    bytes += static_cast<double>(size);
    for (const SnapshotCpu& c : res.cpus) {
      slowest_swap_us = std::max(
          slowest_swap_us, std::chrono::duration<double, std::micro>(c.swap_time).count());
      pages += c.pages;
    }
  }
  if (total_s <= 0) return;
  const auto n = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["total_ms"] = total_s * 1e3 / n;
  state.counters["ms_per_cpu"] = total_s * 1e3 / n / kCpus;
  state.counters["file_MiB"] = bytes / 1048576.0 / n;
  state.counters["MiB/s"] = bytes / 1048576.0 / total_s;
  state.counters["pages"] = static_cast<double>(pages) / n;
  state.counters["slowest_swap_us"] = slowest_swap_us;
  state.SetLabel(scratch.label());
}

[[maybe_unused]] const bool registered = [] {
  common(benchmark::RegisterBenchmark("BM_Snapshot_Swap", BM_Snapshot_Swap)->UseManualTime());
  common(benchmark::RegisterBenchmark("BM_Snapshot_SwapBusy", BM_Snapshot_SwapBusy)
             ->UseManualTime());
  if (RingBuffer::membarrier_status() == 0) {
    common(benchmark::RegisterBenchmark("BM_Snapshot_SwapRemote", BM_Snapshot_SwapRemote)
               ->UseManualTime());
    common(benchmark::RegisterBenchmark("BM_Snapshot_SwapRemoteBusy", BM_Snapshot_SwapRemoteBusy)
               ->UseManualTime());
  }
  auto* dump = benchmark::RegisterBenchmark("BM_Snapshot_TakeDump", BM_Snapshot_TakeDump)
                   ->Arg(1)
                   ->Iterations(1)
                   ->UseManualTime()
                   ->Unit(benchmark::kMillisecond);
  // 1 to 256 MiB per CPU (bench/plot.py draws the time against the size);
  // the smoke run keeps 1 MiB only.
  if (!io_config().smoke) dump->Arg(4)->Arg(16)->Arg(64)->Arg(256);
  common(dump);
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
