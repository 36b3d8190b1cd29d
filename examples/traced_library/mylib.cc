// mylib's tracepoints use the forms without a RingBuffer&: they write into
// the process ring (rbtrace/tracer.h) when the host made one, and cost one
// load and one branch (what a disabled event costs) when it did not. The
// library links rbtrace::ringbuf for the headers and the writer only.
#include "mylib.h"

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(mylib, query, ((uint64_t, id))((rbtrace::str, sql)))

namespace mylib {

uint64_t query(uint64_t id, std::string_view sql) {
  RBTRACE_SCOPE("mylib.query");                    // slice_begin now, slice_end at return
  rbtrace_events::mylib_query::emit(id, sql);      // no RingBuffer&: the process ring
  const uint64_t rows = id % 7;
  rbtrace::counter("mylib.rows", rows);
  return rows;
}

}  // namespace mylib
