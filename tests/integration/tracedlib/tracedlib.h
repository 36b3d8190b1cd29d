// tracedlib - a library that traces into whatever its host set up (issue
// 15, item 3): its API takes no rbtrace handle, and it links
// rbtrace::ringbuf only. With no process ring each tracepoint costs what a
// disabled event does and writes nothing.
#pragma once

#include <cstdint>

namespace tracedlib {

// One unit of work: a slice "tracedlib.work" around a tracedlib:item event
// (n, "item") and a counter "tracedlib.done" = n. Returns the first
// tracepoint's result (0 written, -ENODEV no process ring, ...).
int work(uint64_t n);

}  // namespace tracedlib
