// Must not compile: a double* is fine but `long double` is not a supported
// RBTRACE_EVENT field type; the static_assert in FieldTraits says so
// (ctest unit_event_bad_type expects its message).
#include "rbtrace/event.h"

RBTRACE_EVENT(bad, type, ((uint32_t, seq))((long double, x)))
