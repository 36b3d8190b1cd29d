// Thread churn with a consumer recording to disk (issue 11, "Show"): 10,000
// threads start, emit through RBTRACE_EVENT and exit, 4 at a time, on a
// ring of 4 CPU slots. Each slot is reused by thread after thread:
//   - every event is in the recording, and its common_pid (the writer's
//     tid, from the slot's binding) is the tid the thread wrote into the
//     event itself: no event is attributed to another thread;
//   - every thread is named in the file, though each lived a millisecond;
//   - the resident set stays flat after the first few hundred threads;
//   - nothing is refused for want of a slot.
// RBTRACE_CHURN_THREADS sets the thread count (default 10000).
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/consumer_common.h"

RBTRACE_EVENT(churn, ev, ((int32_t, tid))((uint32_t, k)))

namespace {

constexpr uint32_t kEventsPerThread = 5;
constexpr uint32_t kParallel = 4;

long rss_kib() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

uint32_t thread_count() {
  const char* s = std::getenv("RBTRACE_CHURN_THREADS");
  const long v = s ? std::atol(s) : 0;
  return v >= 100 && v <= 1000000 ? static_cast<uint32_t>(v) : 10000;
}

}  // namespace

TEST(ThreadChurn, SlotsReusedExactlyTidsExactNamesKeptMemoryFlat) {
  const std::string dir = ctest::make_temp_dir("/tmp", "churn");
  rbtrace::Options o;
  o.ncpus = kParallel;
  o.pages_per_cpu = 64;
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(rb);
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.fsync = false;
  co.on_message = [](const std::string& m) { std::fprintf(stderr, "consumer: %s\n", m.c_str()); };
  auto consumer = rbtrace::Consumer::create(*rb, co);
  ASSERT_TRUE(consumer);

  const uint32_t n = thread_count();
  std::vector<int32_t> tids(n, 0);
  std::atomic<uint64_t> failed{0};
  long rss_early = 0;
  for (uint32_t first = 0; first < n; first += kParallel) {
    std::vector<std::thread> batch;
    for (uint32_t i = first; i < first + kParallel && i < n; i++) {
      batch.emplace_back([&, i] {
        const std::string name = "churn-" + std::to_string(i);
        pthread_setname_np(pthread_self(), name.c_str());
        const int32_t tid = static_cast<int32_t>(gettid());
        tids[i] = tid;
        for (uint32_t k = 0; k < kEventsPerThread; k++)
          if (rbtrace_events::churn_ev::emit(*rb, tid, k) != 0) failed.fetch_add(1);
      });
    }
    for (auto& t : batch) t.join();
    if (first + kParallel == 500) rss_early = rss_kib();
  }
  const long rss_late = rss_kib();
  ASSERT_EQ(consumer->stop(), 0);
  EXPECT_EQ(failed.load(), 0u);
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);

  // Every event, each under its own writer's tid; every thread named.
  std::map<int32_t, uint32_t> per_tid;
  uint64_t events = 0, wrong = 0;
  std::string err;
  for (const std::string& f : consumer->published()) {
    auto r = rbtrace::TraceDatReader::open(f, &err);
    ASSERT_TRUE(r) << f << ": " << err;
    rbtrace::TraceRecord rec;
    while (r->next(&rec) == 1) {
      if (!rec.event || rec.event->name != "ev") continue;
      const rbtrace::TraceField* ftid = nullptr;
      for (const auto& fld : rec.event->fields)
        if (fld.name == "tid") ftid = &fld;
      ASSERT_NE(ftid, nullptr);
      rbtrace::TraceValue v;
      ASSERT_TRUE(rbtrace::TraceDatReader::field_value(rec, *ftid, &v, &err)) << err;
      events++;
      if (v.i != rec.pid) wrong++;
      per_tid[rec.pid]++;
    }
    EXPECT_TRUE(r->error().empty()) << r->error();
    // Names: every thread whose events are in this file.
    for (uint32_t i = 0; i < n; i++) {
      if (!per_tid.count(tids[i])) continue;
      const std::string want = "churn-" + std::to_string(i);
      if (r->comm(tids[i]) != want) {
        ADD_FAILURE() << "thread " << i << " (tid " << tids[i] << ") named '" << r->comm(tids[i])
                      << "' in " << f;
        break;
      }
    }
  }
  EXPECT_EQ(events, static_cast<uint64_t>(n) * kEventsPerThread);
  EXPECT_EQ(wrong, 0u) << "events attributed to another thread";
  uint64_t short_threads = 0;
  for (uint32_t i = 0; i < n; i++)
    if (per_tid[tids[i]] < kEventsPerThread) short_threads++;
  EXPECT_EQ(short_threads, 0u);
  // Flat: what the consumer keeps per thread (its tid -> name map) is tens
  // of bytes; everything else is reused. Not under a sanitizer: ASan holds
  // freed memory in its quarantine and TSan keeps per-thread state, so the
  // resident set grows there by design (ASan's leak check covers leaks).
  EXPECT_GT(rss_early, 0);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(rss_late - rss_early, 8 * 1024) << "RSS grew from " << rss_early << " KiB to "
                                             << rss_late << " KiB";
#endif
  // Slots are made on demand (default limit), but each batch is joined, so
  // every thread finds the slots of the exited ones free: none is made.
  EXPECT_EQ(rb->ncpus(), kParallel);
  std::printf("thread churn: %u threads x %u events, %u slots (limit %u); RSS %ld KiB after "
              "500 threads, %ld KiB after %u; %zu files\n",
              n, kEventsPerThread, rb->ncpus(), rb->max_cpus(), rss_early, rss_late, n,
              consumer->published().size());
  ctest::remove_tree(dir);
}

// Slots made on demand, under a storm of first events: rounds of 32 threads
// released at once on a ring made with one slot and a limit of 24. Every
// thread stays alive until all have written, so exactly 24 get a slot (the
// claims race to make slots 1..23, C3) and 8 are refused on every event.
// Per round: the slot count is the limit, never more; each CPU holds the
// events of exactly one thread, all of them; written + refused = attempted.
TEST(ThreadChurn, FirstEventsRacingToMakeSlots) {
  constexpr uint32_t kRounds = 200, kThreads = 32, kLimit = 24, kEvents = 50;
  uint64_t made = 0, refused_total = 0;
  for (uint32_t round = 0; round < kRounds; round++) {
    rbtrace::Options o;
    o.ncpus = 1;
    o.max_cpus = kLimit;
    o.pages_per_cpu = 4;
    o.mode = rbtrace::Mode::kProducerConsumer;
    auto rb = rbtrace::RingBuffer::create(o);
    ASSERT_TRUE(rb);
    std::atomic<bool> go{false}, leave{false};
    std::atomic<uint32_t> done{0};
    std::atomic<uint64_t> refused{0};
    std::vector<int32_t> tids(kThreads, 0);
    std::vector<std::thread> ts;
    for (uint32_t i = 0; i < kThreads; i++) {
      ts.emplace_back([&, i] {
        const int32_t tid = static_cast<int32_t>(gettid());
        tids[i] = tid;
        while (!go.load()) std::this_thread::yield();
        for (uint32_t k = 0; k < kEvents; k++)
          if (rbtrace_events::churn_ev::emit(*rb, tid, k) != 0) refused.fetch_add(1);
        done.fetch_add(1);
        while (!leave.load()) std::this_thread::yield();
      });
    }
    go.store(true);
    while (done.load() != kThreads) std::this_thread::yield();
    const uint32_t slots = rb->ncpus();  // all alive: every slot held
    leave.store(true);
    for (auto& t : ts) t.join();
    ASSERT_EQ(slots, kLimit) << "round " << round;
    ASSERT_EQ(rb->ncpus(), kLimit) << "round " << round;
    ASSERT_EQ(refused.load(), uint64_t{kThreads - kLimit} * kEvents) << "round " << round;
    ASSERT_EQ(rb->no_cpu_dropped(), refused.load()) << "round " << round;
    std::map<int32_t, uint32_t> cpus_of_tid;
    for (uint32_t c = 0; c < rb->ncpus(); c++) {
      rbtrace::PageEvent e;
      int32_t owner = 0;
      uint32_t next = 0;
      while (rb->consume(c, &e) == 0) {
        int32_t tid;
        uint32_t k;
        std::memcpy(&tid, e.data + 8, 4);
        std::memcpy(&k, e.data + 12, 4);
        if (owner == 0) owner = tid;
        ASSERT_EQ(tid, owner) << "round " << round << " CPU " << c << ": two writers";
        ASSERT_EQ(k, next++) << "round " << round << " CPU " << c;
      }
      ASSERT_EQ(next, kEvents) << "round " << round << " CPU " << c;
      ASSERT_EQ(rb->stats(c).entries, kEvents);
      cpus_of_tid[owner]++;
    }
    ASSERT_EQ(cpus_of_tid.size(), kLimit) << "round " << round;
    for (const auto& [tid, n] : cpus_of_tid) ASSERT_EQ(n, 1u) << "tid " << tid;
    made += rb->ncpus() - 1;
    refused_total += refused.load();
  }
  std::printf("slot growth storm: %u rounds x %u threads racing, limit %u: %llu slots made, "
              "%llu events refused and counted, every CPU one writer\n",
              kRounds, kThreads, kLimit, static_cast<unsigned long long>(made),
              static_cast<unsigned long long>(refused_total));
}
