// Request latency, viewed in Perfetto: each request is an async slice
// (rbtrace::async_begin when it is accepted, async_end when its reply is
// sent, on whichever threads those happen), and the work on it is nested
// slices (RBTRACE_SCOPE) on the worker that handles it.
//
//   rbtrace-example-request-latency DIR [REQUESTS]
//   rbtrace export --chrome DIR/*.dat -o latency.json
//
// then open latency.json in https://ui.perfetto.dev (or chrome://tracing):
// a "request" track with one async slice per request (ph "b"/"e"), and on
// the worker threads "handle" slices with "parse" and "db" inside (ph
// "B"/"E").
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <rbtrace/consumer.h>
#include <rbtrace/rbtrace.h>

namespace {

// Stand-in for real work: a few microseconds of computation.
uint64_t spin(uint64_t n) {
  volatile uint64_t x = 0;
  for (uint64_t i = 0; i < n; i++) x = x + i;
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [REQUESTS]\n", argv[0]);
    return 2;
  }
  const uint64_t nreq = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 100;

  rbtrace::Options o;
  o.ncpus = 3;
  o.pages_per_cpu = 64;
  o.mode = rbtrace::Mode::kProducerConsumer;
  o.clock = rbtrace::ClockKind::kMono;  // nanoseconds, CLOCK_MONOTONIC
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "ring: %s\n", err.message.c_str());
    return 1;
  }
  rbtrace::ConsumerOptions co;
  co.dir = argv[1];
  auto consumer = rbtrace::Consumer::create(*rb, co, &err);
  if (!consumer) {
    std::fprintf(stderr, "consumer: %s\n", err.message.c_str());
    return 1;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::deque<uint64_t> queue;
  bool done = false;
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; w++)
    workers.emplace_back([&] {
      for (;;) {
        uint64_t id;
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return done || !queue.empty(); });
          if (queue.empty()) return;
          id = queue.front();
          queue.pop_front();
        }
        {
          RBTRACE_SCOPE(*rb, "handle");  // "B" here, "E" at the closing brace
          {
            RBTRACE_SCOPE(*rb, "parse");
            spin(2000);
          }
          {
            RBTRACE_SCOPE(*rb, "db");
            spin(10000 + 1000 * (id % 10));
          }
        }
        rbtrace::async_end(*rb, "request", id);  // the reply is sent
      }
    });

  // The acceptor (this thread): a request's latency starts here.
  for (uint64_t id = 0; id < nreq; id++) {
    rbtrace::async_begin(*rb, "request", id);
    {
      std::lock_guard<std::mutex> lk(mu);
      queue.push_back(id);
    }
    cv.notify_one();
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    done = true;
  }
  cv.notify_all();
  for (auto& t : workers) t.join();

  const int rc = consumer->stop();
  for (const auto& f : consumer->published()) std::printf("published %s\n", f.c_str());
  std::printf("%llu requests\n", static_cast<unsigned long long>(nreq));
  return rc == 0 ? 0 : 1;
}
