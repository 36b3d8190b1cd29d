// Record to disk: a RingBuffer, a Consumer that drains it into trace.dat
// files in a directory, two threads tracing, and the order things must end
// in (the Consumer stops before the ring is destroyed).
//
//   rbtrace-example-record-to-disk DIR [EVENTS_PER_THREAD]
//
// Then: `rbtrace report DIR/*.dat`, `trace-cmd report DIR/trace-*.dat`.
// Prints the files it published and "published N of N events"; exits 1
// when an event was lost (it cannot be, with the sizes below).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <rbtrace/consumer.h>
#include <rbtrace/rbtrace.h>

// One typed event: trace-cmd and `rbtrace report` decode its fields by
// name ("app:work thread=1 seq=41 value=82").
RBTRACE_EVENT(app, work, ((uint32_t, thread))((uint64_t, seq))((uint64_t, value)))

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [EVENTS_PER_THREAD]\n", argv[0]);
    return 2;
  }
  const uint64_t per_thread = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 10000;
  constexpr uint32_t kThreads = 2;

  // Producer/consumer mode: when the ring is full the newest events are
  // refused (counted in CpuStats::dropped) rather than the oldest
  // overwritten: a recording wants every event in order. 256 pages of 4 KiB
  // per CPU hold about 100,000 of these events, so nothing is dropped here
  // even if the consumer thread does not run at all while we write.
  rbtrace::Options o;
  o.ncpus = kThreads;  // slots made now; more threads would get theirs on demand
  o.pages_per_cpu = 256;
  o.mode = rbtrace::Mode::kProducerConsumer;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "ring: %s\n", err.message.c_str());
    return 1;
  }

  // The consumer: one thread drains full pages to a spool, another turns
  // finished segments into DIR/trace-<session>-<segment>.dat, published
  // atomically (a file has its name only once it is complete).
  rbtrace::ConsumerOptions co;
  co.dir = argv[1];                 // created 0700 if missing
  co.segment_bytes = 64ULL << 20;   // a new file every 64 MiB (0: one file)
  auto consumer = rbtrace::Consumer::create(*rb, co, &err);
  if (!consumer) {
    std::fprintf(stderr, "consumer: %s\n", err.message.c_str());
    return 1;
  }

  // Each thread's first event claims a CPU slot; emit is lock-free and
  // makes no system call after that.
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; t++)
    threads.emplace_back([&rb, t, per_thread] {
      for (uint64_t i = 0; i < per_thread; i++)
        rbtrace_events::app_work::emit(*rb, t, i, 2 * i);
    });
  for (auto& th : threads) th.join();

  // stop() flushes what is still in the ring (partial pages too), publishes
  // the last segment and ends both threads. It must run before `rb` goes:
  // the consumer reads the ring until then.
  const int rc = consumer->stop();
  const rbtrace::ConsumerStats st = consumer->stats();
  for (const std::string& f : consumer->published()) std::printf("published %s\n", f.c_str());
  consumer.reset();
  uint64_t events = 0;
  for (uint64_t n : st.events_published) events += n;
  std::printf("published %llu of %llu events in %llu files (%s)\n",
              static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(per_thread * kThreads),
              static_cast<unsigned long long>(st.segments_published), st.backend);
  return rc == 0 && events == per_thread * kThreads ? 0 : 1;
}
