// bench_ring.h - what the benchmarks and the callgrind driver share: the
// ring geometry of the writer benchmarks, a ring bound to the calling
// thread, the 16-byte payload and the typed events.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "rbtrace/event.h"
#include "rbtrace/ring_buffer.h"

// The typed event of the "same event shape" comparisons: 16 bytes of fields
// (two u64), a 24-byte record with the common header. The LTTng-UST peer
// (bench/lttng/rbtrace_bench_tp.h) has the same two fields.
RBTRACE_EVENT(rbtrace_bench, rec16, ((uint64_t, a))((uint64_t, b)))
// The same shape, kept disabled by BM_Writer_EmitDisabled.
RBTRACE_EVENT(rbtrace_bench, rec16_off, ((uint64_t, a))((uint64_t, b)))
// A typed event of any payload size, for BM_Writer_EmitStr/<bytes>: one
// string field (__data_loc char[]) of bytes - 1 characters and its NUL.
RBTRACE_EVENT(rbtrace_bench, blob, ((::rbtrace::str, data)))

namespace rbtrace::bench {

// Steady state for the writer benchmarks: a few 4 KiB pages in overwrite
// mode, so the ring wraps all the time and every page crossing (W5) and
// head push is part of the measured cost, amortized as in real use. The
// LTTng-UST peer gets the same geometry (8 sub-buffers of 4 KiB per CPU).
inline constexpr uint32_t kPageSize = 4096;
inline constexpr uint32_t kPages = 8;

struct Payload16 {
  uint64_t a;
  uint64_t b;
};
static_assert(sizeof(Payload16) == 16);

inline Options writer_options(ClockKind clock = ClockKind::kCounter, uint32_t ncpus = 1,
                              Mode mode = Mode::kOverwrite, uint32_t pages = kPages) {
  Options o;
  o.ncpus = ncpus;
  o.page_size = kPageSize;
  o.pages_per_cpu = pages;
  o.mode = mode;
  o.clock = clock;
  return o;
}

// Creates a ring or aborts: a benchmark without its ring measures nothing.
inline std::unique_ptr<RingBuffer> make_ring(const Options& o) {
  Error err;
  auto rb = RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "rbtrace-bench: RingBuffer::create: %s\n", err.message.c_str());
    std::abort();
  }
  return rb;
}

// A ring with the calling thread bound to CPU slot `cpu`, unbound again on
// destruction (a thread holds at most kMaxBindingsPerThread bindings, and a
// destroyed ring does not release the bindings of the threads that used it).
class BoundRing {
 public:
  explicit BoundRing(const Options& o, uint32_t cpu = 0) : rb_(make_ring(o)) { bind(*rb_, cpu); }
  ~BoundRing() { rb_->unbind_thread(); }
  BoundRing(const BoundRing&) = delete;
  BoundRing& operator=(const BoundRing&) = delete;
  RingBuffer& operator*() { return *rb_; }
  RingBuffer* operator->() { return rb_.get(); }

  static void bind(RingBuffer& rb, uint32_t cpu) {
    const int rc = rb.bind_thread(cpu);
    if (rc != 0) {
      std::fprintf(stderr, "rbtrace-bench: bind_thread(%u): %d\n", cpu, rc);
      std::abort();
    }
  }

 private:
  std::unique_ptr<RingBuffer> rb_;
};

}  // namespace rbtrace::bench
