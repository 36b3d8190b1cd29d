// rbtrace/tracer.h - the process-wide tracer: one ring buffer for the whole
// process, so that a library traces without being handed a buffer.
//
//   // in a library: no handle, no set-up
//   RBTRACE_EVENT(mylib, query, ((uint64_t, id))((rbtrace::str, sql)))
//   void run(uint64_t id, std::string_view sql) {
//     RBTRACE_SCOPE("mylib.run");                       // rbtrace/track.h
//     rbtrace_events::mylib_query::emit(id, sql);       // no RingBuffer&
//   }
//
//   // in the host, once (or nothing: see "Nobody set it up" below)
//   rbtrace::RingBuffer* rb = rbtrace::tracer::init(opts);   // or init_from_env()
//   auto consumer = rbtrace::Consumer::create(rb, copts);    // to disk, as any ring
//
// Every typed event (RBTRACE_EVENT) and every rbtrace/track.h helper has a
// form without the RingBuffer& argument that writes into the process ring:
// the same writer (any thread or signal handler, no lock, no allocation, no
// system call), the same return values, plus -ENODEV when there is no
// process ring.
//
// Nobody set it up: the buffer-less forms return -ENODEV after one load and
// one branch, what a disabled event costs (bench: BM_Writer_NoTracer beside
// BM_Writer_Disabled; callgrind `--mode no-tracer`). Nothing is counted: no
// ring exists to count in.
//
// Lifetime: the process ring, once made, lives until the process ends; it
// is never destroyed, not even at exit, so a thread still writing while
// static destructors run (or after a Consumer on it stopped) writes into
// live memory. There is no way to replace it or take it away: a writer may
// have loaded the pointer and not yet written (a grace period would need
// the writers to announce themselves, which costs every event).
//
// Recording with no code in the host: rbtrace::record_from_env()
// (rbtrace/consumer.h) and the rbtrace::autostart link target, which calls
// it before main: RBTRACE_RECORD=DIR starts a Consumer on the process ring
// into DIR and stops it at exit.
//
// Environment (init_from_env, record_from_env), every one optional:
//   RBTRACE_CPUS=N          Options::ncpus (slots made at once)
//   RBTRACE_MAX_CPUS=N      Options::max_cpus
//   RBTRACE_PAGES=N         Options::pages_per_cpu
//   RBTRACE_PAGE_SIZE=N     Options::page_size (bytes, a power of two)
//   RBTRACE_MODE=overwrite|producer   (flight recorder | lose the newest)
//   RBTRACE_CLOCK=counter|mono|mono_raw|boot|realtime
// A value that does not parse is an error naming the variable: a tracer
// silently configured otherwise than asked would surprise more.
#pragma once

#include <atomic>
#include <string>

#include "rbtrace/ring_buffer.h"

namespace rbtrace {

namespace detail {
// The process ring: null until tracer::init, then never changes again.
extern std::atomic<RingBuffer*> g_process_ring;
}  // namespace detail

// The process ring, or null. Any thread or signal handler.
RBTRACE_ALWAYS_INLINE RingBuffer* process_ring() noexcept {
  // acquire: pairs with the release CAS in tracer::init, so a writer that
  // sees the pointer sees the ring it points to fully constructed. (On
  // x86-64 a plain load; arm64 an LDAR.)
  return detail::g_process_ring.load(std::memory_order_acquire);
}

namespace tracer {

// Makes the process ring with `opts` and installs it, once: a second call
// (from any thread, concurrently or later) returns the ring the first made
// and sets err->code to EEXIST when given (its options are
// process_ring()->options(), not these). Null with *err filled when the
// ring cannot be made (bad options: EINVAL; ENOMEM). Any thread but a
// signal handler (it allocates).
RingBuffer* init(const Options& opts, Error* err = nullptr);

// The options of the environment (the table above) applied to *opts. 0,
// or -EINVAL with *why naming the variable and what it accepts.
int options_from_env(Options* opts, std::string* why);

// init with options_from_env over `defaults`.
RingBuffer* init_from_env(const Options& defaults = {}, Error* err = nullptr);

}  // namespace tracer

namespace detail {
// The environment's numbers (tracer.cc, and the consumer's variables):
// all of `s` in `base`, within [lo, hi]; and the error that names the
// variable ("VAR=value: expected ...", -EINVAL).
bool parse_env_number(const char* s, uint64_t lo, uint64_t hi, int base, uint64_t* out);
int bad_env(std::string* why, const char* var, const char* value, const char* accepts);
}  // namespace detail
}  // namespace rbtrace
