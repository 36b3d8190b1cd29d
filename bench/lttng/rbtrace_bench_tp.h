// rbtrace_bench_tp.h - the LTTng-UST tracepoint provider of the peer
// benchmark: the same event shape as rbtrace's typed event
// rbtrace_bench:rec16 (bench/bench_common.h), two u64 fields.
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER rbtrace_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "rbtrace_bench_tp.h"

#if !defined(RBTRACE_BENCH_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define RBTRACE_BENCH_TP_H

#include <lttng/tracepoint.h>

#include <stdint.h>

LTTNG_UST_TRACEPOINT_EVENT(
    rbtrace_bench, rec16,
    LTTNG_UST_TP_ARGS(uint64_t, a_arg, uint64_t, b_arg),
    LTTNG_UST_TP_FIELDS(lttng_ust_field_integer(uint64_t, a, a_arg)
                            lttng_ust_field_integer(uint64_t, b, b_arg)))

#endif  // RBTRACE_BENCH_TP_H

#include <lttng/tracepoint-event.h>
