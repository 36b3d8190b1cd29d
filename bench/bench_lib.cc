// bench_lib: see bench_lib.h.
#include "bench_lib.h"

#include <rbtrace/event.h>

RBTRACE_EVENT(rbtrace_bench_lib, op, ((uint64_t, i))((uint64_t, v)))
RBTRACE_EVENT(rbtrace_bench_lib, op_off, ((uint64_t, i))((uint64_t, v)))

namespace bench_lib {

[[gnu::noinline]] uint64_t op_traced(uint64_t i) {
  const uint64_t v = i * 0x9e3779b97f4a7c15ull;
  rbtrace_events::rbtrace_bench_lib_op::emit(i, v);
  return v;
}

[[gnu::noinline]] uint64_t op_ring_disabled(rbtrace::RingBuffer& rb, uint64_t i) {
  const uint64_t v = i * 0x9e3779b97f4a7c15ull;
  rbtrace_events::rbtrace_bench_lib_op_off::emit(rb, i, v);
  return v;
}

void disable_op_off() { rbtrace_events::rbtrace_bench_lib_op_off::disable(); }

[[gnu::noinline]] uint64_t op_untraced(uint64_t i) { return i * 0x9e3779b97f4a7c15ull; }

}  // namespace bench_lib
