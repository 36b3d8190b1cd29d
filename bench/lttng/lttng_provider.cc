// lttng_provider.cc - instantiates the LTTng-UST probes of
// rbtrace_bench_tp.h, statically linked into rbtrace-bench.
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "rbtrace_bench_tp.h"
