// rbtrace/detail/hints.h - branch hints and inlining attributes for the
// writer: which tests the fast path expects to pass, what is inlined into
// the caller and what is kept out of its way.
#pragma once

#define RBTRACE_LIKELY(x) __builtin_expect(!!(x), 1)
#define RBTRACE_UNLIKELY(x) __builtin_expect(!!(x), 0)
// For the writer's fast-path tests: "unlikely" says 10 % to GCC, which then
// lays out and allocates registers as if the slow path mattered.
#define RBTRACE_ALMOST_ALWAYS(x) __builtin_expect_with_probability(!!(x), 1, 0.999)
// The writer's fast path is inlined into the caller whatever the optimizer
// thinks of its size; the slow paths are kept out of its way.
#define RBTRACE_ALWAYS_INLINE inline __attribute__((always_inline))
#define RBTRACE_COLD __attribute__((noinline, cold))
// Out of the fast path but on the way of whole classes of writes (nested
// writers, clocks other than the counter, disabled rings, page starts):
// kept out of line, and not `cold`, which would optimize for size and, for
// one, copy the Reservation with `rep movs` (tens of cycles per call).
#define RBTRACE_SLOW __attribute__((noinline))
