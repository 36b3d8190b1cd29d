// Built against the *installed* rbtrace: a program with no rbtrace set-up
// of its own, only buffer-less tracepoints (rbtrace/tracer.h), linked with
// rbtrace::autostart (find_package) or `pkg-config --libs
// rbtrace-autostart`. Run with RBTRACE_RECORD=DIR, its 500 events are in
// DIR when it exits (run_install_test.sh checks); without, every
// tracepoint returns -ENODEV. Prints what its tracepoints returned.
#include <cerrno>
#include <cstdio>

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(downstream, auto_tick, ((uint32_t, n)))

int main() {
  int written = 0, nodev = 0, other = 0;
  for (uint32_t i = 0; i < 500; i++) {
    const int rc = rbtrace_events::downstream_auto_tick::emit(i);
    if (rc == 0) written++;
    else if (rc == -ENODEV) nodev++;
    else other++;
  }
  std::printf("written=%d nodev=%d other=%d\n", written, nodev, other);
  return other == 0 ? 0 : 1;
}
