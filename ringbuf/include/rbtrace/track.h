// rbtrace/track.h - slices, async slices, counters and flows as typed events.
//
// What Perfetto's SDK and Tracy offer, as predefined RBTRACE_EVENTs of the
// system `rbtrace` (trace-cmd report prints them like any typed event; the
// Chrome export, rbtrace/trace_export.h, turns them into its durations,
// counters and flows):
//
//   event                 fields                    Chrome export
//   rbtrace:slice_begin   name                      ph "B" on the writer's thread
//   rbtrace:slice_end     name                      ph "E" (closes the last "B")
//   rbtrace:slice         name, dur_ns (u64)        ph "X": a complete slice that
//                                                   ended at the event's time
//   rbtrace:async_begin   name, id (u64)            ph "b", "id", "cat":"rbtrace"
//   rbtrace:async_end     name, id (u64)            ph "e"
//   rbtrace:counter       name, value (s64)         ph "C", args {name: value}
//   rbtrace:counter_f     name, value (double)      ph "C" (trace-cmd shows the
//                                                   double's IEEE bits in hex)
//   rbtrace:flow          name, id (u64), phase     ph "s" / "t" / "f" with "id",
//                         (out, step, in)           bound to the enclosing slice
//
//   void handle(rbtrace::RingBuffer& rb, Request& req) {
//     RBTRACE_SCOPE(rb, "handle");                    // slice_begin ... slice_end
//     rbtrace::flow(rb, "req", req.id, rbtrace::FlowPhase::in);   // from the sender
//     rbtrace::counter(rb, "queue_depth", queue.size());
//     rbtrace::async_begin(rb, "io", req.id);          // ends on another thread:
//   }                                                  // rbtrace::async_end(rb, "io", id)
//
// Without the `rb` argument each writes into the process ring
// (rbtrace/tracer.h): RBTRACE_SCOPE("handle"), rbtrace::counter("depth", n).
//
// Each call writes one event (RBTRACE_SCOPE two: its begin and its end)
// under the writer's rules: any thread or signal handler, no allocation, no
// system call; 0, -ENOENT when the event is disabled (`rbtrace events`,
// rbtrace_events::rbtrace_counter::disable()), or the reserve's error. The
// names are copied into the event (a __data_loc string); ids are the
// caller's (an async slice's begin and end, a flow's out/step/in share one).
//
// RBTRACE_SCOPE writes a begin and an end event, not one complete event
// with its duration: both take their times from the ring's own clock read
// in reserve, so a scope nests exactly with every other event of its thread
// (inner scopes, flows bound to it, instants, signal handlers), and a scope
// still open when a snapshot is taken or the process dies is in the trace
// (its begin). A complete event measured by the writer would end at its
// event's time but start at that time minus a duration read a few
// nanoseconds apart from it, so back-to-back nested scopes could overlap
// instead of nesting. rbtrace::slice() writes a complete slice whose
// duration the caller measured.
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include <boost/preprocessor/facilities/overload.hpp>

#include "rbtrace/event.h"
#include "rbtrace/ring_buffer.h"
#include "rbtrace/tracer.h"

namespace rbtrace {
// A flow's step: its first event (out, the Chrome "s"), the ones in between
// (step, "t"), its last (in, "f"). Lower-case so that trace-cmd prints
// phase=out / phase=step / phase=in.
enum class FlowPhase : uint8_t { out, step, in };
}  // namespace rbtrace

RBTRACE_ENUM(rbtrace::FlowPhase, (out)(step)(in))

RBTRACE_EVENT(rbtrace, slice_begin, ((rbtrace::str, name)))
RBTRACE_EVENT(rbtrace, slice_end, ((rbtrace::str, name)))
RBTRACE_EVENT(rbtrace, slice, ((rbtrace::str, name))((uint64_t, dur_ns)))
RBTRACE_EVENT(rbtrace, async_begin, ((rbtrace::str, name))((uint64_t, id)))
RBTRACE_EVENT(rbtrace, async_end, ((rbtrace::str, name))((uint64_t, id)))
RBTRACE_EVENT(rbtrace, counter, ((rbtrace::str, name))((int64_t, value)))
RBTRACE_EVENT(rbtrace, counter_f, ((rbtrace::str, name))((double, value)))
RBTRACE_EVENT(rbtrace, flow, ((rbtrace::str, name))((uint64_t, id))((rbtrace::FlowPhase, phase)))

namespace rbtrace {

// Each helper has two forms: with a RingBuffer& first, and without it,
// writing into the process ring (rbtrace/tracer.h; -ENODEV when there is
// none, at the cost of a disabled event).

// A slice on the calling thread: slice_begin now, slice_end with the same
// name later (nested slices end in the reverse order of their begins).
inline int slice_begin(RingBuffer& rb, std::string_view name) {
  return rbtrace_events::rbtrace_slice_begin::emit(rb, name);
}
inline int slice_begin(std::string_view name) {
  return rbtrace_events::rbtrace_slice_begin::emit(name);
}
inline int slice_end(RingBuffer& rb, std::string_view name) {
  return rbtrace_events::rbtrace_slice_end::emit(rb, name);
}
inline int slice_end(std::string_view name) {
  return rbtrace_events::rbtrace_slice_end::emit(name);
}
// A complete slice that ends now and lasted `dur_ns` nanoseconds (measured
// by the caller).
inline int slice(RingBuffer& rb, std::string_view name, uint64_t dur_ns) {
  return rbtrace_events::rbtrace_slice::emit(rb, name, dur_ns);
}
inline int slice(std::string_view name, uint64_t dur_ns) {
  return rbtrace_events::rbtrace_slice::emit(name, dur_ns);
}
// An async slice: begin and end may be on different threads; `id` (with the
// name) pairs them.
inline int async_begin(RingBuffer& rb, std::string_view name, uint64_t id) {
  return rbtrace_events::rbtrace_async_begin::emit(rb, name, id);
}
inline int async_begin(std::string_view name, uint64_t id) {
  return rbtrace_events::rbtrace_async_begin::emit(name, id);
}
inline int async_end(RingBuffer& rb, std::string_view name, uint64_t id) {
  return rbtrace_events::rbtrace_async_end::emit(rb, name, id);
}
inline int async_end(std::string_view name, uint64_t id) {
  return rbtrace_events::rbtrace_async_end::emit(name, id);
}
// A counter's value from now on: an integer (rbtrace:counter) or a floating
// value (rbtrace:counter_f). Every integer type goes to the int64_t
// overload (an unsigned value above INT64_MAX wraps).
template <class I>
  requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
inline int counter(RingBuffer& rb, std::string_view name, I value) {
  return rbtrace_events::rbtrace_counter::emit(rb, name, static_cast<int64_t>(value));
}
inline int counter(RingBuffer& rb, std::string_view name, double value) {
  return rbtrace_events::rbtrace_counter_f::emit(rb, name, value);
}
inline int counter(RingBuffer& rb, std::string_view name, float value) {
  return rbtrace_events::rbtrace_counter_f::emit(rb, name, value);
}
template <class I>
  requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
inline int counter(std::string_view name, I value) {
  return rbtrace_events::rbtrace_counter::emit(name, static_cast<int64_t>(value));
}
inline int counter(std::string_view name, double value) {
  return rbtrace_events::rbtrace_counter_f::emit(name, value);
}
inline int counter(std::string_view name, float value) {
  return rbtrace_events::rbtrace_counter_f::emit(name, value);
}
// A flow (an arrow between slices, across threads): out where it starts,
// step where it passes, in where it ends; the same `id` for all three. Each
// binds to the slice open on its thread at the time.
inline int flow(RingBuffer& rb, std::string_view name, uint64_t id, FlowPhase phase) {
  return rbtrace_events::rbtrace_flow::emit(rb, name, id, phase);
}
inline int flow(std::string_view name, uint64_t id, FlowPhase phase) {
  return rbtrace_events::rbtrace_flow::emit(name, id, phase);
}

// RAII slice_begin / slice_end (see the top of the file). The name is
// copied by each event, so it must outlive the scope (a literal does).
class ScopedSlice {
 public:
  // [[nodiscard]]: a temporary would end its slice at once.
  [[nodiscard]] ScopedSlice(RingBuffer& rb, std::string_view name) noexcept
      : rb_(&rb), name_(name), begun_(rbtrace_events::rbtrace_slice_begin::emit(rb, name) == 0) {}
  // Into the process ring, the one there was at the begin (none: nothing
  // is written, at the cost of a disabled event).
  [[nodiscard]] explicit ScopedSlice(std::string_view name) noexcept
      : rb_(process_ring()),
        name_(name),
        begun_(rb_ != nullptr && rbtrace_events::rbtrace_slice_begin::emit(*rb_, name) == 0) {}
  // No end for a begin that was not written (disabled, refused): the trace
  // has no end without its begin from this scope.
  ~ScopedSlice() {
    if (begun_) rbtrace_events::rbtrace_slice_end::emit(*rb_, name_);
  }
  ScopedSlice(const ScopedSlice&) = delete;
  ScopedSlice& operator=(const ScopedSlice&) = delete;

 private:
  RingBuffer* rb_;
  std::string_view name_;
  bool begun_;
};

}  // namespace rbtrace

#define RBTRACE_DETAIL_CAT2(a, b) a##b
#define RBTRACE_DETAIL_CAT(a, b) RBTRACE_DETAIL_CAT2(a, b)
// A slice from here to the end of the enclosing scope: RBTRACE_SCOPE(rb,
// "name") into `rb`, RBTRACE_SCOPE("name") into the process ring.
#define RBTRACE_DETAIL_SCOPE_1(name) \
  ::rbtrace::ScopedSlice RBTRACE_DETAIL_CAT(rbtrace_scope_, __LINE__)((name))
#define RBTRACE_DETAIL_SCOPE_2(rb, name) \
  ::rbtrace::ScopedSlice RBTRACE_DETAIL_CAT(rbtrace_scope_, __LINE__)((rb), (name))
#define RBTRACE_SCOPE(...) BOOST_PP_OVERLOAD(RBTRACE_DETAIL_SCOPE_, __VA_ARGS__)(__VA_ARGS__)
