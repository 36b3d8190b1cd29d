// A thread pool bigger than the ring's first slots: the ring is made with
// 2 CPU slots, 16 workers trace at the same time, and each worker's first
// event makes it a slot of its own (mapped then). Nothing needs sizing for
// the number of threads; the limit is Options::max_cpus (default 1024) or
// a memory budget, and an event refused for want of a slot is counted in
// RingBuffer::no_cpu_dropped(), which must stay 0 here.
//
//   rbtrace-example-thread-pool [THREADS]
//
// Prints "threads=16 slots=N no_cpu_dropped=0 written=W read=W"; exits 1
// when an event was refused or a written event was not read.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(pool, task, ((uint32_t, worker))((uint32_t, task)))

int main(int argc, char** argv) {
  const uint32_t nthreads = argc > 1 ? static_cast<uint32_t>(std::atoi(argv[1])) : 16;
  constexpr uint32_t kTasks = 1000;

  rbtrace::Options o;
  o.ncpus = 2;             // made at create; more come on demand
  o.pages_per_cpu = 16;    // per slot: 64 KiB, room for every task event below
  o.mode = rbtrace::Mode::kProducerConsumer;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "ring: %s\n", err.message.c_str());
    return 1;
  }

  // Every worker writes its first event, then waits for all the others to
  // have written theirs: all are alive with a slot at once, so the pool
  // really needs `nthreads` slots (a slot is given back at thread exit and
  // reused by the next thread).
  std::atomic<uint32_t> started{0};
  std::vector<std::thread> pool;
  for (uint32_t w = 0; w < nthreads; w++)
    pool.emplace_back([&, w] {
      rbtrace_events::pool_task::emit(*rb, w, 0);
      started.fetch_add(1);
      while (started.load() < nthreads) std::this_thread::yield();
      for (uint32_t t = 1; t < kTasks; t++) rbtrace_events::pool_task::emit(*rb, w, t);
    });
  for (auto& th : pool) th.join();

  // The counters: per CPU slot, every attempt is accounted for.
  uint64_t written = 0, read = 0;
  for (uint32_t cpu = 0; cpu < rb->ncpus(); cpu++) written += rb->stats(cpu).entries;
  rbtrace::PageEvent ev;
  for (uint32_t cpu = 0; cpu < rb->ncpus(); cpu++)
    while (rb->consume(cpu, &ev) == 0) read++;

  std::printf("threads=%u slots=%u no_cpu_dropped=%llu written=%llu read=%llu\n", nthreads,
              rb->ncpus(), static_cast<unsigned long long>(rb->no_cpu_dropped()),
              static_cast<unsigned long long>(written), static_cast<unsigned long long>(read));
  const bool ok = rb->no_cpu_dropped() == 0 && rb->ncpus() >= nthreads &&
                  written == uint64_t{nthreads} * kTasks && read == written;
  return ok ? 0 : 1;
}
