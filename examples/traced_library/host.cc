// The host of mylib: it decides where the library's events go.
//
//   rbtrace-example-library-host DIR      makes the process ring itself
//                                         (tracer::init) and records it
//                                         into DIR with a Consumer
//   RBTRACE_RECORD=DIR rbtrace-example-library-autohost
//                                         the same program linked with
//                                         rbtrace::autostart: the
//                                         environment alone records, before
//                                         main and until exit. The ring is
//                                         the environment's too: a
//                                         recording's defaults (producer
//                                         mode, 256 pages per CPU) hold all
//                                         of these events whenever the
//                                         consumer thread runs;
//                                         RBTRACE_PAGES, RBTRACE_MODE change
//                                         them
//
// Either way `rbtrace report DIR/*.dat` shows mylib:query events and the
// rbtrace:slice_begin/slice_end of mylib's RBTRACE_SCOPE.
#include <cstdio>
#include <memory>

#include <rbtrace/consumer.h>
#include <rbtrace/tracer.h>

#include "mylib.h"

int main(int argc, char** argv) {
  std::unique_ptr<rbtrace::Consumer> consumer;
  if (rbtrace::process_ring() != nullptr) {
    // rbtrace::autostart saw RBTRACE_RECORD and already records the
    // process ring (a second Consumer on one ring is not allowed); it stops
    // at exit, flushed and published.
    std::printf("recording started by the environment (RBTRACE_RECORD)\n");
  } else if (argc == 2) {
    // The host sets it up: one ring for the whole process, made once and
    // never destroyed (a library thread may still write at exit).
    rbtrace::Options o;
    o.pages_per_cpu = 64;
    o.mode = rbtrace::Mode::kProducerConsumer;
    rbtrace::Error err;
    rbtrace::RingBuffer* rb = rbtrace::tracer::init(o, &err);
    if (rb == nullptr) {
      std::fprintf(stderr, "tracer: %s\n", err.message.c_str());
      return 1;
    }
    rbtrace::ConsumerOptions co;
    co.dir = argv[1];
    consumer = rbtrace::Consumer::create(*rb, co, &err);
    if (!consumer) {
      std::fprintf(stderr, "consumer: %s\n", err.message.c_str());
      return 1;
    }
  } else {
    std::printf("not tracing: mylib's tracepoints cost a load and a branch\n");
  }

  uint64_t rows = 0;
  for (uint64_t id = 0; id < 1000; id++) rows += mylib::query(id, "SELECT * FROM t");
  std::printf("1000 queries, %llu rows\n", static_cast<unsigned long long>(rows));

  if (consumer && consumer->stop() != 0) return 1;  // publishes the last segment
  return 0;
}
