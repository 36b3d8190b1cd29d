// rbtrace/tracedat.h - trace-cmd trace.dat files: writer and validating
// reader (rbtrace::tracedat).
//
// The writer assembles a version-6 trace.dat (header_page, header_event,
// event formats, cmdlines, CPU count, options: clock, TSC2NSEC when the
// clock is the CPU counter, per-CPU stats; then the flyrecord section with
// each CPU's pages as one page-aligned contiguous run, verbatim).
//
// The reader validates every length and offset: a corrupt, truncated or
// hostile file gives an error message, never a crash or an unbounded
// allocation.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/clock.h"
#include "rbtrace/ring_buffer.h"

namespace rbtrace {

struct EventFormat {
  std::string system;  // e.g. "demo"
  std::string format;  // the kernel-style text (EventType::format())
};

struct TraceDatCpu {
  int fd = -1;          // readable; pages of this CPU, page_size each
  uint64_t offset = 0;  // where they start in fd (page aligned)
  uint64_t size = 0;    // bytes (a multiple of page_size)
  std::string stats;    // kernel-style per_cpu/cpuN/stats text without the
                        // "CPU: N" line, which the writer adds (see
                        // cpu_stats_text); "key: value" lines
};

struct TraceDatInput {
  uint32_t page_size = 4096;
  std::string clock = "x86-tsc";        // trace clock name
  bool tsc2nsec = false;                // write the TSC2NSEC option
  CounterCalibration calibration;       // used when tsc2nsec
  std::vector<EventFormat> events;
  std::vector<std::pair<int32_t, std::string>> cmdlines;  // tid, comm
  std::vector<TraceDatCpu> cpus;        // index = CPU number
  // The traced process (its pid and name), when pid > 0: written as
  // trace-cmd's PROCMAPS option ("<pid hex> 0 <name>", the first line of
  // what `trace-cmd record --proc-map` saves; no library maps), which
  // TraceDatReader::process_pid() and the exports read back. The name's
  // blanks and control characters become '_' (trace-cmd reads it with %s).
  int32_t pid = 0;
  std::string process;
};

// Writes a complete trace.dat to `out_fd` (positioned at 0, empty).
// Returns 0, or -errno with a sentence in *err (ENOSPC/EFBIG from a full
// disk are reported as such).
//
// The file is written front to back in one pass (no seek on out_fd, so a
// pipe works too): the header, the options, the flyrecord table, then each
// CPU's pages at a page-aligned offset, copied from TraceDatCpu::fd with
// copy_file_range (pread/write where that is refused). Options written:
// CPUSTAT per CPU, TRACECLOCK, VERSION, PROCMAPS when `pid` > 0, and with `tsc2nsec` TSC2NSEC (mult,
// shift, offset 0) plus OFFSET (calibration.offset_ns), so that trace-cmd
// prints CLOCK_MONOTONIC seconds: ns = ((ticks * mult) >> shift) + offset_ns.
// The trace clock text is "[<clock>]", or "<clock> [tsc2nsec]" with
// `tsc2nsec` (trace-cmd's name for a converted counter clock; readers see
// clock "tsc2nsec"). trace-cmd 3.1.6 prints the file with `trace-cmd
// report` unchanged (tests/integration/trace_cmd_test.cc).
// Validates the input first (-EINVAL: page size, a size that is not a
// multiple of the page size, a name with a NUL or newline, ...).
// Any thread; no global state. The input fds' file offsets are not moved.
int write_trace_dat(int out_fd, const TraceDatInput& in, std::string* err);

// For CPU data already in place in out_fd (a regular file): each CPU's
// pages at TraceDatCpu::offset (page aligned, ascending, not overlapping,
// the first at or after trace_dat_header_size(in); TraceDatCpu::fd is not
// used). Writes only the header, at offset 0 with pwrite, its flyrecord
// table pointing at those offsets; the room between the header's end and
// the first CPU's data is left as it is (a hole, which readers skip).
// Returns 0, or -errno with a sentence in *err (-EINVAL for offsets that
// break the rules above).
int write_trace_dat_header(int out_fd, const TraceDatInput& in, std::string* err);

// The bytes write_trace_dat puts before the first CPU's data (the header
// without padding) for `in` (valid input), whatever the offsets.
uint64_t trace_dat_header_size(const TraceDatInput& in);

// The most bytes cpu_stats_text plus ring_stats_text can ever take (every
// number at 20 digits): room for the stats of counters not known yet.
uint64_t cpu_stats_text_bound();

// Registered events of this process as EventFormat entries. Any thread.
std::vector<EventFormat> registered_event_formats();

// The writer's per_cpu stats text for a CPU's counters ("key: value" lines:
// the kernel's "entries", "overrun", "commit overrun", "bytes", "dropped
// events", "read events", then rbtrace's "nested dropped", "disabled" and
// "lost" = CpuStats::lost()). Note: "entries" counts every written event,
// not the events still buffered as the kernel's does. Any thread.
std::string cpu_stats_text(const CpuStats& s);

// The ring-wide counters, which trace.dat has no section for: the consumer
// and the snapshot append this text to CPU 0's CPUSTAT, so `trace-cmd
// report --stat`, `rbtrace report` and any reader of the file see it.
//   "no slot dropped (all CPUs): N"  RingBuffer::no_cpu_dropped(): events
//       refused because their thread found no free CPU slot (or was one of
//       rbtrace's own); they are in no CPU's counters.
// Any thread.
std::string ring_stats_text(uint64_t no_slot_dropped);

// The "no slot dropped (all CPUs)" count of a CPUSTAT text, or 0 if the
// text has none.
uint64_t no_slot_dropped_in(const std::string& cpustat);

}  // namespace rbtrace
