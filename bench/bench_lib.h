// bench_lib - a library with a tracepoint and no rbtrace handle (issue 15,
// item 3: what a library's event costs in a host that set nothing up).
// Built as its own static library (rbtrace_bench_lib, linked with
// rbtrace::ringbuf only), so its calls are real calls, as a host's into a
// library are.
#pragma once

#include <cstdint>

namespace rbtrace {
class RingBuffer;
}

namespace bench_lib {

// The same work twice, with and without the library's tracepoint
// (rbtrace_bench_lib:op, two u64, written into the process ring: -ENODEV
// when there is none). Returns the work's result, so that nothing is
// optimised away.
uint64_t op_traced(uint64_t i);
uint64_t op_untraced(uint64_t i);
// The same work with a tracepoint that takes its ring from the caller and
// is disabled (rbtrace_bench_lib:op_off): the disabled event a library
// with a ring handle would pay.
uint64_t op_ring_disabled(rbtrace::RingBuffer& rb, uint64_t i);
// Disables rbtrace_bench_lib:op_off.
void disable_op_off();

}  // namespace bench_lib
