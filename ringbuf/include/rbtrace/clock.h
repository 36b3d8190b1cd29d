// rbtrace/clock.h - the trace clock.
//
// Default: the CPU counter (x86-64 rdtsc, arm64 cntvct_el0), calibrated once
// per process against CLOCK_MONOTONIC and CLOCK_REALTIME. Options: the
// clock_gettime clocks (mono, mono_raw, boot, realtime) in nanoseconds.
//
// Who may call: now() from any thread and from signal handlers (no system
// call for the counter; clock_gettime goes through the vDSO). calibration()
// from any thread except a signal handler (the first call sleeps ~20 ms).
#pragma once

#include <cstdint>
#include <ctime>
#include <string_view>

namespace rbtrace {

enum class ClockKind : uint8_t {
  kCounter = 0,  // CPU counter, ticks; falls back to kMono where none exists
  kMono,         // CLOCK_MONOTONIC, ns
  kMonoRaw,      // CLOCK_MONOTONIC_RAW, ns
  kBoot,         // CLOCK_BOOTTIME, ns
  kRealtime,     // CLOCK_REALTIME, ns
};

// Parses "counter"/"tsc", "mono", "mono_raw", "boot", "realtime"; false if
// the name is unknown.
bool parse_clock_kind(std::string_view name, ClockKind* out);
const char* clock_kind_name(ClockKind k);

// True when this build has a CPU counter (x86-64, arm64).
constexpr bool have_cpu_counter() {
#if defined(__x86_64__) || defined(__aarch64__)
  return true;
#else
  return false;
#endif
}

inline uint64_t read_cpu_counter() {
#if defined(__x86_64__)
  // The builtin (not inline asm): the compiler knows rdtsc zeroes the upper
  // halves, so combining the two takes two instructions, not three.
  return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
  uint64_t v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
#endif
}

inline uint64_t read_posix_clock(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<uint64_t>(ts.tv_nsec);
}

// Counter calibration: ns = ((ticks * mult) >> shift) + offset gives
// CLOCK_MONOTONIC nanoseconds (trace-cmd's TSC2NSEC option carries mult,
// shift and offset). realtime_offset_ns converts monotonic to realtime.
struct CounterCalibration {
  uint64_t hz = 0;
  uint32_t mult = 0;
  uint32_t shift = 0;
  int64_t offset_ns = 0;           // mono_ns - (counter0 * mult >> shift)
  int64_t realtime_offset_ns = 0;  // realtime_ns - mono_ns at calibration
};

// Calibrates once per process (thread-safe), then returns the cached result.
const CounterCalibration& counter_calibration();

class Clock {
 public:
  explicit Clock(ClockKind k = ClockKind::kCounter)
      : kind_(have_cpu_counter() ? k : (k == ClockKind::kCounter ? ClockKind::kMono : k)),
        posix_id_(posix_id()) {}

  ClockKind kind() const { return kind_; }

  // Async-signal-safe; no system call for kCounter.
  uint64_t now() const {
    if (__builtin_expect(kind_ == ClockKind::kCounter, 1)) return read_cpu_counter();
    return read_posix_clock(posix_id_);
  }
  // now() for a clock known not to be the counter (the writer's fast path
  // for those clocks): the clock_gettime alone.
  uint64_t now_posix() const { return read_posix_clock(posix_id_); }

  // Ticks to nanoseconds of the clock's own epoch (for kCounter: to
  // CLOCK_MONOTONIC ns using the calibration).
  uint64_t to_ns(uint64_t ticks) const;
  // Ticks per second.
  uint64_t hz() const;
  // The name written into trace files ("x86-tsc", "mono", ...).
  const char* trace_clock_name() const;

 private:
  clockid_t posix_id() const {
    switch (kind_) {
      case ClockKind::kMonoRaw: return CLOCK_MONOTONIC_RAW;
      case ClockKind::kBoot: return CLOCK_BOOTTIME;
      case ClockKind::kRealtime: return CLOCK_REALTIME;
      default: return CLOCK_MONOTONIC;
    }
  }
  ClockKind kind_;
  clockid_t posix_id_;  // for a kind other than kCounter
};

}  // namespace rbtrace
