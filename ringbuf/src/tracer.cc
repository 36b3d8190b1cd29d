// The process-wide ring (rbtrace/tracer.h).
#include "rbtrace/tracer.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "rbtrace/clock.h"

namespace rbtrace {
namespace detail {
std::atomic<RingBuffer*> g_process_ring{nullptr};
}  // namespace detail

namespace tracer {

RingBuffer* init(const Options& opts, Error* err) {
  if (RingBuffer* have = process_ring()) {
    if (err) *err = {EEXIST, "the process ring exists already (made by an earlier init)"};
    return have;
  }
  std::unique_ptr<RingBuffer> rb = RingBuffer::create(opts, err);
  if (!rb) return nullptr;
  RingBuffer* expected = nullptr;
  // release: publishes the constructed ring; pairs with the acquire load in
  // process_ring() (writers) and with the acquire of a losing CAS below.
  // acquire on failure: the winner's ring, returned to this caller, is
  // constructed as far as this thread can see.
  if (detail::g_process_ring.compare_exchange_strong(expected, rb.get(), std::memory_order_release,
                                                     std::memory_order_acquire)) {
    // Never destroyed (tracer.h, "Lifetime"): the global holds it, so leak
    // checkers see it reachable.
    return rb.release();
  }
  // Another thread installed its ring first; ours was never visible to a
  // writer, so it can go.
  if (err) *err = {EEXIST, "the process ring exists already (made by a concurrent init)"};
  return expected;
}

}  // namespace tracer

namespace detail {

bool parse_env_number(const char* s, uint64_t lo, uint64_t hi, int base, uint64_t* out) {
  if (s == nullptr || *s < '0' || *s > '9') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, base);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int bad_env(std::string* why, const char* var, const char* value, const char* accepts) {
  if (why) *why = std::string(var) + "=" + value + ": expected " + accepts;
  return -EINVAL;
}

}  // namespace detail

namespace tracer {

using detail::bad_env;

int options_from_env(Options* opts, std::string* why) {
  struct Num {
    const char* var;
    uint64_t lo, hi;
    uint32_t Options::*field;
    const char* accepts;
  };
  static constexpr Num kNums[] = {
      {"RBTRACE_CPUS", 1, kMaxCpus, &Options::ncpus, "a number of CPU slots, 1..4096"},
      {"RBTRACE_MAX_CPUS", 1, kMaxCpus, &Options::max_cpus, "a slot limit, 1..4096"},
      {"RBTRACE_PAGES", 2, kMaxPagesPerCpu, &Options::pages_per_cpu,
       "pages per CPU, 2..1048576"},
      {"RBTRACE_PAGE_SIZE", kMinPageSize, kMaxPageSize, &Options::page_size,
       "a page size in bytes, a power of two, 4096..1048576"},
  };
  Options o = *opts;
  for (const Num& n : kNums) {
    const char* v = std::getenv(n.var);
    if (v == nullptr) continue;
    uint64_t x = 0;
    if (!detail::parse_env_number(v, n.lo, n.hi, 10, &x)) return bad_env(why, n.var, v, n.accepts);
    if (n.field == &Options::page_size && (x & (x - 1)) != 0)
      return bad_env(why, n.var, v, n.accepts);
    o.*n.field = static_cast<uint32_t>(x);
  }
  if (const char* v = std::getenv("RBTRACE_MODE")) {
    const std::string_view m = v;
    if (m == "overwrite") o.mode = Mode::kOverwrite;
    else if (m == "producer" || m == "producer-consumer") o.mode = Mode::kProducerConsumer;
    else return bad_env(why, "RBTRACE_MODE", v, "overwrite or producer");
  }
  if (const char* v = std::getenv("RBTRACE_CLOCK")) {
    if (!parse_clock_kind(v, &o.clock))
      return bad_env(why, "RBTRACE_CLOCK", v, "counter, mono, mono_raw, boot or realtime");
  }
  *opts = o;
  return 0;
}

RingBuffer* init_from_env(const Options& defaults, Error* err) {
  Options o = defaults;
  std::string why;
  if (options_from_env(&o, &why) != 0) {
    if (err) *err = {EINVAL, why};
    return nullptr;
  }
  return init(o, err);
}

}  // namespace tracer
}  // namespace rbtrace
