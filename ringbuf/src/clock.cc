// clock.cc - counter calibration and clock names.
#include "rbtrace/clock.h"

#include <mutex>
#include <thread>

namespace rbtrace {

bool parse_clock_kind(std::string_view n, ClockKind* out) {
  if (n == "counter" || n == "tsc" || n == "x86-tsc" || n == "cntvct")
    *out = ClockKind::kCounter;
  else if (n == "mono")
    *out = ClockKind::kMono;
  else if (n == "mono_raw")
    *out = ClockKind::kMonoRaw;
  else if (n == "boot")
    *out = ClockKind::kBoot;
  else if (n == "realtime")
    *out = ClockKind::kRealtime;
  else
    return false;
  return true;
}

const char* clock_kind_name(ClockKind k) {
  switch (k) {
    case ClockKind::kCounter: return "counter";
    case ClockKind::kMono: return "mono";
    case ClockKind::kMonoRaw: return "mono_raw";
    case ClockKind::kBoot: return "boot";
    case ClockKind::kRealtime: return "realtime";
  }
  return "?";
}

namespace {

CounterCalibration calibrate() {
  CounterCalibration c;
#if defined(__aarch64__)
  uint64_t frq;
  asm volatile("mrs %0, cntfrq_el0" : "=r"(frq));
  c.hz = frq;
#endif
  // Sample (counter, mono) pairs 20 ms apart; take the tightest bracket of
  // each end so a preemption between the two reads does not skew the rate.
  auto sample = [](uint64_t* counter, uint64_t* mono) {
    uint64_t best = ~0ULL;
    for (int i = 0; i < 5; i++) {
      uint64_t a = read_cpu_counter();
      uint64_t m = read_posix_clock(CLOCK_MONOTONIC);
      uint64_t b = read_cpu_counter();
      if (b - a < best) {
        best = b - a;
        *counter = a + (b - a) / 2;
        *mono = m;
      }
    }
  };
  uint64_t c0 = 0, m0 = 0, c1 = 0, m1 = 0;
  sample(&c0, &m0);
  if (c.hz == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    sample(&c1, &m1);
    if (m1 > m0 && c1 > c0)
      c.hz = static_cast<uint64_t>(static_cast<long double>(c1 - c0) * 1e9L /
                                   static_cast<long double>(m1 - m0));
    if (c.hz == 0) c.hz = 1000000000ULL;
  }
  // ns = (ticks * mult) >> shift; largest shift whose mult fits 32 bits.
  c.shift = 32;
  for (;;) {
    unsigned __int128 m = (static_cast<unsigned __int128>(1000000000ULL) << c.shift) / c.hz;
    if (m <= 0xffffffffULL || c.shift == 0) {
      c.mult = static_cast<uint32_t>(m);
      break;
    }
    c.shift--;
  }
  const uint64_t scaled = static_cast<uint64_t>(
      (static_cast<unsigned __int128>(c0) * c.mult) >> c.shift);
  c.offset_ns = static_cast<int64_t>(m0) - static_cast<int64_t>(scaled);
  c.realtime_offset_ns = static_cast<int64_t>(read_posix_clock(CLOCK_REALTIME)) -
                         static_cast<int64_t>(read_posix_clock(CLOCK_MONOTONIC));
  return c;
}

}  // namespace

const CounterCalibration& counter_calibration() {
  static const CounterCalibration cal = calibrate();  // thread-safe once
  return cal;
}

uint64_t Clock::to_ns(uint64_t ticks) const {
  if (kind_ != ClockKind::kCounter || !have_cpu_counter()) return ticks;
  const CounterCalibration& c = counter_calibration();
  const uint64_t scaled =
      static_cast<uint64_t>((static_cast<unsigned __int128>(ticks) * c.mult) >> c.shift);
  return static_cast<uint64_t>(static_cast<int64_t>(scaled) + c.offset_ns);
}

uint64_t Clock::hz() const {
  if (kind_ != ClockKind::kCounter || !have_cpu_counter()) return 1000000000ULL;
  return counter_calibration().hz;
}

const char* Clock::trace_clock_name() const {
  switch (kind_) {
    case ClockKind::kCounter:
#if defined(__x86_64__)
      return "x86-tsc";
#elif defined(__aarch64__)
      return "counter";
#else
      return "mono";
#endif
    case ClockKind::kMono: return "mono";
    case ClockKind::kMonoRaw: return "mono_raw";
    case ClockKind::kBoot: return "boot";
    case ClockKind::kRealtime: return "local";
  }
  return "mono";
}

}  // namespace rbtrace
