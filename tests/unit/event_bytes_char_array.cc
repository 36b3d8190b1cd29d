// Must not compile: a char array (here a string literal) passed to an
// rbtrace::bytes field would bring its NUL along; bytes_view refuses it
// with a static_assert that says what to pass instead (ctest
// unit_event_bytes_char_array expects its message).
#include "rbtrace/event.h"

RBTRACE_EVENT(bad, blob, ((rbtrace::bytes, data)))

int f(rbtrace::RingBuffer& rb) { return rbtrace_events::bad_blob::emit(rb, "abc"); }
