// tracedlib: tracepoints with no buffer argument (rbtrace/tracer.h).
#include "tracedlib.h"

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(tracedlib, item, ((uint64_t, n))((rbtrace::str, what)))

namespace tracedlib {

int work(uint64_t n) {
  RBTRACE_SCOPE("tracedlib.work");
  const int rc = rbtrace_events::tracedlib_item::emit(n, "item");
  rbtrace::counter("tracedlib.done", n);
  return rc;
}

}  // namespace tracedlib
