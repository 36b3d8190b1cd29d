// rbtrace-snapshot-bench: what a snapshot costs, in one run.
//
//   1. swap latency: swap_cpu_marshalled round trips (request, doorbell
//      signal, S2..S4 on the owner thread, answer) against an owner that is
//      idle (blocked in a wait) and one that is busy writing events;
//      p50/p99/max over many swaps.
//   2. snapshot + dump: Snapshot::take of every CPU (swap, read_page of the
//      whole swapped-out buffer into the memfd spool, write_trace_dat to a
//      file, reset) with full buffers of 1 MiB and 64 MiB per CPU.
//
//   rbtrace-snapshot-bench [--swaps N] [--dir DIR]   (DIR for the output files)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/swap.h"

RBTRACE_EVENT(bench, rec, ((uint64_t, seq))((uint64_t, a))((uint64_t, b)))

using namespace rbtrace;
using SteadyClock = std::chrono::steady_clock;

namespace {

double pct(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

void swap_latency(const char* what, bool busy, int nswaps) {
  Options o;
  o.ncpus = 1;
  o.page_size = 4096;
  o.pages_per_cpu = 16;
  auto live = RingBuffer::create(o);
  auto spare = RingBuffer::create(o);
  std::atomic<bool> stop{false}, ready{false};
  std::thread owner([&] {
    live->bind_thread(0);
    ready.store(true);
    uint64_t seq = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (busy) {
        for (int i = 0; i < 64; i++) rbtrace_events::bench_rec::emit(*live, ++seq, 1, 2);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    live->unbind_thread();
  });
  while (!ready.load()) std::this_thread::yield();
  std::vector<double> us;
  us.reserve(static_cast<size_t>(nswaps));
  int failed = 0;
  uint64_t busy_retries = 0;
  for (int i = 0; i < nswaps; i++) {
    SwapTrace t;
    const auto t0 = SteadyClock::now();
    const int rc = swap_cpu_marshalled(*live, *spare, 0, std::chrono::milliseconds(1000), &t);
    const auto t1 = SteadyClock::now();
    busy_retries += t.busy;
    if (rc != 0) {
      failed++;
      continue;
    }
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    spare->reset_cpu(0);
  }
  stop.store(true);
  owner.join();
  swap_release_mailboxes(*live);
  if (us.empty()) {
    std::printf("swap latency, owner %-5s: every swap failed\n", what);
    return;
  }
  std::printf("swap latency, owner %-5s: %zu swaps  p50 %7.1f us  p99 %7.1f us  max %8.1f us"
              "  (busy retries %llu, failed %d)\n",
              what, us.size(), pct(us, 0.50), pct(us, 0.99), pct(us, 1.0),
              static_cast<unsigned long long>(busy_retries), failed);
}

void snapshot_dump(uint32_t mib, const std::string& dir) {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = mib * 256;
  o.mode = Mode::kOverwrite;
  Error err;
  auto snap = Snapshot::create(o, &err);
  if (!snap) {
    std::printf("snapshot %u MiB/CPU: %s\n", mib, err.message.c_str());
    return;
  }
  // Fill every CPU's ring completely (and wrap it once), then keep the
  // owners alive and idle: the swaps go through their doorbells.
  std::atomic<int> filled{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> owners;
  const uint64_t per_cpu = static_cast<uint64_t>(mib) * 1024 * 1024 / 36 + 1000;
  for (uint32_t c = 0; c < o.ncpus; c++) {
    owners.emplace_back([&, c] {
      snap->live().bind_thread(c);
      for (uint64_t i = 0; i < per_cpu; i++) rbtrace_events::bench_rec::emit(snap->live(), i, c, 0);
      filled.fetch_add(1);
      while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      snap->live().unbind_thread();
    });
  }
  while (filled.load() < static_cast<int>(o.ncpus)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::string path = dir + "/rbtrace-snapshot-bench-" + std::to_string(getpid()) + ".dat";
  const int fd = open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    return;
  }
  SnapshotResult res;
  std::string e;
  const auto t0 = SteadyClock::now();
  const int rc = snap->take(fd, -1, &e, &res);
  const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
  const off_t size = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path.c_str());
  stop.store(true);
  for (auto& t : owners) t.join();
  double swap_us = 0;
  uint64_t pages = 0;
  for (const SnapshotCpu& c : res.cpus) {
    swap_us = std::max(swap_us, std::chrono::duration<double, std::micro>(c.swap_time).count());
    pages += c.pages;
  }
  std::printf("snapshot + dump, %2u MiB/CPU x %u CPUs: %s  %8.1f ms total (%.1f ms per CPU), "
              "%llu pages, file %.1f MiB (%.0f MiB/s), slowest swap %.1f us\n",
              mib, o.ncpus, rc == 0 ? "ok " : e.c_str(), ms, ms / o.ncpus,
              static_cast<unsigned long long>(pages), static_cast<double>(size) / 1048576.0,
              static_cast<double>(size) / 1048576.0 / (ms / 1000.0), swap_us);
}

}  // namespace

int main(int argc, char** argv) {
  int nswaps = 20000;
  std::string dir = ".";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--swaps") nswaps = std::atoi(argv[i + 1]);
    else if (k == "--dir") dir = argv[i + 1];
  }
  if (nswaps <= 0) nswaps = 1;
  char host[256] = "?";
  gethostname(host, sizeof host);
  std::printf("rbtrace-snapshot-bench on %s, %u hardware threads, doorbell SIGRTMIN+%d\n", host,
              std::thread::hardware_concurrency(), kDefaultDoorbellOffset);
  swap_latency("idle", false, nswaps);
  swap_latency("busy", true, nswaps);
  snapshot_dump(1, dir);
  snapshot_dump(64, dir);
  return 0;
}
