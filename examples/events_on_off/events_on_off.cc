// Turning events on and off from code: per event type (enable/disable,
// one load and a branch when off), per pattern (the `rbtrace events`
// patterns, matched against the registry of every RBTRACE_EVENT in the
// process), and the whole ring (record_off/record_on, ftrace's tracing_on).
//
//   rbtrace-example-events-on-off
//
// Writes one round of three events in each state and prints what reached
// the ring; exits 1 if it is not what the switches say.
#include <cstdio>
#include <string>

#include <rbtrace/control.h>  // valid_event_pattern, event_matches (rbtrace::snapshot)
#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(net, rx, ((uint32_t, bytes)))
RBTRACE_EVENT(net, tx, ((uint32_t, bytes)))
RBTRACE_EVENT(disk, io, ((uint32_t, bytes)))

namespace {

// Enables or disables every registered event `pattern` matches ("net:*",
// "*:io", "*"), as `rbtrace events PID PATTERN --enable|--disable` does in
// a process with a control socket. Returns how many matched.
int set_events(const std::string& pattern, bool on) {
  if (!rbtrace::control::valid_event_pattern(pattern)) return -1;
  int n = 0;
  for (const rbtrace::EventType* t : rbtrace::registered_events())
    if (rbtrace::control::event_matches(pattern, t->system, t->name)) {
      t->enabled->store(on, std::memory_order_relaxed);
      n++;
    }
  return n;
}

// One round: one event of each type. Returns what the ring received, as
// "net:rx net:tx disk:io" (the events that were on).
std::string round(rbtrace::RingBuffer& rb) {
  rbtrace_events::net_rx::emit(rb, 1);   // -ENOENT when disabled: nothing written
  rbtrace_events::net_tx::emit(rb, 2);
  rbtrace_events::disk_io::emit(rb, 3);  // -EPERM when the ring is off
  std::string got;
  rbtrace::PageEvent ev;
  for (uint32_t cpu = 0; cpu < rb.ncpus(); cpu++)
    while (rb.consume(cpu, &ev) == 0) {
      const std::string d = rbtrace::describe_record(ev.data, ev.length);
      got += (got.empty() ? "" : " ") + d.substr(0, d.find(' '));
    }
  return got;
}

}  // namespace

int main() {
  rbtrace::Options o;
  o.ncpus = 1;
  auto rb = rbtrace::RingBuffer::create(o);
  if (!rb) return 1;
  int bad = 0;
  auto check = [&](const char* what, const std::string& want) {
    const std::string got = round(*rb);
    std::printf("%-28s %s\n", what, got.empty() ? "(nothing)" : got.c_str());
    if (got != want) {
      std::fprintf(stderr, "  expected: %s\n", want.c_str());
      bad++;
    }
  };

  check("all on:", "net:rx net:tx disk:io");
  rbtrace_events::net_tx::disable();  // one type
  check("net:tx disabled:", "net:rx disk:io");
  set_events("net:*", false);  // a pattern
  check("net:* disabled:", "disk:io");
  set_events("*", true);  // every event ("*:*" too)
  check("* enabled:", "net:rx net:tx disk:io");
  rb->record_off();  // the whole ring: refused and counted in CpuStats::disabled
  check("ring off:", "");
  rb->record_on();
  check("ring on again:", "net:rx net:tx disk:io");
  std::printf("refused while off: %llu\n",
              static_cast<unsigned long long>(rb->stats(0).disabled));
  if (rb->stats(0).disabled != 3) bad++;
  return bad == 0 ? 0 : 1;
}
