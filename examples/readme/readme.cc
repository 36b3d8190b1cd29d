// The README's example, built so that it stays true.
#include <cstdio>

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(app, request, ((uint64_t, id))((int32_t, status))((rbtrace::str, path)))

int main() {
  rbtrace::Options o;                       // 4 CPUs x 16 x 4 KiB, overwrite mode
  auto rb = rbtrace::RingBuffer::create(o);
  rbtrace_events::app_request::emit(*rb, 42, 200, "/index.html");  // any thread or signal handler

  rbtrace::PageEvent ev;                    // a reader, usually another thread
  for (uint32_t cpu = 0; cpu < rb->ncpus(); cpu++)
    while (rb->consume(cpu, &ev) == 0)
      std::puts(rbtrace::describe_record(ev.data, ev.length).c_str());
  // prints: app:request id=42 status=200 path=/index.html
}
