// segment.h - one segment of the spool: per CPU, the pages submitted, the
// longest prefix written completely (completions arrive out of order) and
// what a failure lost. Pure bookkeeping, no I/O: the drain thread feeds it
// submissions and completions, the publish thread reads good_end. Private
// to rbtrace::consumer. See docs/DESIGN.md, "Consumer", Segments.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rbtrace/tracedat.h"
#include "spool.h"

namespace rbtrace::detail {

// One CPU's pages in the segment: its region of the segment file (offsets
// from the region's start, SegmentLayout::base), or its own file.
struct CpuRun {
  int fd = -1;               // its own file (per_cpu_files), else -1
  uint64_t next_off = 0;     // where the next page goes
  uint64_t good_end = 0;     // [0, good_end) written completely
  uint64_t good_events = 0;  // events in [0, good_end)
  uint64_t events = 0;       // events in every page submitted
  uint64_t pages = 0;        // pages submitted
  bool broken = false;       // a write failed: nothing after good_end counts
  std::map<uint64_t, uint64_t> done;  // completed beyond good_end: off -> events

  // A page of `events` events submitted: returns its offset in the file.
  uint64_t submit(uint64_t page_events, uint32_t page_size) {
    const uint64_t off = next_off;
    next_off += page_size;
    events += page_events;
    pages++;
    return off;
  }

  // The page at `off` was written completely. Extends [0, good_end) over
  // it and over the pages that completed earlier beyond it; after a
  // failure nothing counts, so a file never has a hole.
  void written(uint64_t off, uint64_t page_events, uint32_t page_size) {
    if (broken) return;
    if (off == good_end) {
      good_end += page_size;
      good_events += page_events;
      for (auto it = done.begin(); it != done.end() && it->first == good_end; it = done.erase(it)) {
        good_end += page_size;
        good_events += it->second;
      }
    } else {
      done.emplace(off, page_events);
    }
  }

  // A write failed: good_end stays where it is for good.
  void fail() {
    done.clear();
    broken = true;
  }

  // What did not make it into [0, good_end).
  uint64_t lost_events() const { return events - good_events; }
  uint64_t lost_pages(uint32_t page_size) const { return pages - good_end / page_size; }
};

struct Segment {
  using Clock = std::chrono::steady_clock;

  Segment() = default;  // seq 0: a bare flush marker
  Segment(uint64_t sequence, uint32_t ncpus, uint32_t psize)
      : seq(sequence), page_size(psize), started(Clock::now()), cpus(ncpus) {}

  uint64_t seq = 0;
  uint32_t page_size = 0;
  // Spool version 2: one file <seq>.dat (spool.h), opened with the
  // segment, CPU c's pages from layout.base(c). Version 1
  // (per_cpu_files): a file <seq>.cpu<c> per CPU from 0 (CpuRun::fd),
  // opened with the CPU's first page.
  bool per_cpu_files = false;
  int fd = -1;
  SegmentLayout layout;
  std::string public_name;
  SpoolMeta meta;  // its sidecar (rewritten when the ring grows, and to compact)
  Clock::time_point started;
  uint64_t bytes = 0;
  uint32_t in_flight = 0;
  bool closed = false;
  int error = 0;  // first write error
  std::vector<CpuRun> cpus;
  // Filled when handed to the publish thread.
  uint64_t flush_gen = 0;  // > 0: a flush marker (may have no data)
  std::vector<std::string> stats;
  std::vector<std::pair<int32_t, std::string>> cmdlines;
  std::vector<EventFormat> events;

  // CPU `cpu`'s region has no room for another page: the segment must end.
  bool region_full(uint32_t cpu) const {
    return !per_cpu_files && cpus[cpu].next_off + page_size > layout.cpu_region;
  }
  // Where CPU `cpu`'s page at `off` (in its region) is: file and offset.
  int fd_of(uint32_t cpu) const { return per_cpu_files ? cpus[cpu].fd : fd; }
  uint64_t file_offset(uint32_t cpu, uint64_t off) const {
    return per_cpu_files ? off : layout.base(cpu) + off;
  }
  // A page of CPU `cpu` submitted: returns its offset in the CPU's region.
  uint64_t submit(uint32_t cpu, uint64_t page_events) {
    bytes += page_size;
    in_flight++;
    return cpus[cpu].submit(page_events, page_size);
  }
  // A submitted page's write completed: fully (`ok`), or not (then call
  // fail()).
  void completed(uint32_t cpu, uint64_t off, uint64_t page_events, bool ok) {
    in_flight--;
    if (ok) cpus[cpu].written(off, page_events, page_size);
  }
  // A write (or the creation of a spool file) of CPU `cpu` failed with
  // errno `e`: the first error is kept, nothing after good_end counts.
  void fail(uint32_t cpu, int e) {
    if (!error) error = e;
    cpus[cpu].fail();
  }

  // Pages in the published prefixes, all CPUs.
  uint64_t good_pages() const {
    uint64_t n = 0;
    for (const CpuRun& r : cpus) n += r.good_end / page_size;
    return n;
  }
  // The per-CPU lines this segment adds to the ring's stats in trace.dat.
  std::string stats_text(uint32_t cpu) const {
    const CpuRun& r = cpus[cpu];
    return "segment events: " + std::to_string(r.good_events) + "\n" +
           "segment lost events: " + std::to_string(r.lost_events()) + "\n";
  }
};

// The closed segments, oldest first, that may go to the publish thread:
// the longest prefix of `closing` with nothing in flight (removed from it).
// A segment whose writes completed before its predecessor's waits for it:
// segments are published in the order they were opened.
inline std::vector<std::unique_ptr<Segment>> take_finished_in_order(
    std::vector<std::unique_ptr<Segment>>* closing) {
  size_t n = 0;
  while (n < closing->size() && (*closing)[n]->in_flight == 0) n++;
  std::vector<std::unique_ptr<Segment>> out;
  for (size_t i = 0; i < n; i++) out.push_back(std::move((*closing)[i]));
  closing->erase(closing->begin(), closing->begin() + static_cast<long>(n));
  return out;
}

}  // namespace rbtrace::detail
