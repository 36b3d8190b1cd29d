// rbtrace::autostart - linked into a program, records the process ring
// when the environment asks for it: RBTRACE_RECORD=DIR (rbtrace/consumer.h,
// record_from_env) starts a Consumer on the process ring (rbtrace/tracer.h)
// before main and stops it at exit. Without RBTRACE_RECORD it does nothing
// (one getenv at start).
//
// The object is pulled from the static archive by an undefined reference
// to rbtrace_autostart_anchor, which the target's link options (and the
// pkg-config file) add: nothing in the program refers to it otherwise.
#include <cstdio>
#include <string>

#include "rbtrace/consumer.h"

extern "C" {
// Referenced by -Wl,--undefined=rbtrace_autostart_anchor; never called.
void rbtrace_autostart_anchor() {}
}

namespace {

// Runs before main, in an order the linker chooses among the program's
// initializers: record_from_env and what it reaches use no object that
// needs a dynamic initializer (event types register themselves whenever
// theirs run; a segment's header lists the types registered when it is
// written).
__attribute__((constructor)) void rbtrace_autostart() {
  std::string why;
  if (rbtrace::record_from_env(&why) < 0)
    std::fprintf(stderr, "rbtrace: RBTRACE_RECORD: not recording: %s\n", why.c_str());
}

}  // namespace
