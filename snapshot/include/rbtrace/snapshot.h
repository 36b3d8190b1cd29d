// rbtrace/snapshot.h - the snapshot engine (rbtrace::snapshot).
//
// A Snapshot holds a live RingBuffer, which the application traces into, and
// a spare of the same geometry. take() swaps the chosen CPUs' buffers with
// the spare's on their owner threads (swap_cpu_marshalled, S1..S5), dumps
// each swapped-out buffer (now in the spare, which no writer can reach) with
// read_page into a private spool (memfd), writes a trace.dat to the given
// descriptor with write_trace_dat, then resets the swapped-out buffer so it
// serves as the spare again.
//
// The main use is the flight recorder: overwrite mode, no consumer thread,
// and on demand the last pages of every CPU. Each CPU's dump is consistent;
// CPUs are not frozen at one common instant (one swap per CPU).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rbtrace/ring_buffer.h"
#include "rbtrace/swap.h"

namespace rbtrace {

// What one take() produced, per CPU asked for.
struct SnapshotCpu {
  uint32_t cpu = 0;
  int swap_result = 0;   // 0, or the swap_cpu_marshalled error (CPU skipped)
  uint32_t pages = 0;    // pages dumped
  uint64_t bytes = 0;    // event data bytes dumped
  CpuStats stats;        // the swapped-out buffer's counters (before reset)
  SwapTrace trace;
  std::chrono::nanoseconds swap_time{0};  // swap_cpu_marshalled's duration
};

struct SnapshotResult {
  std::vector<SnapshotCpu> cpus;
  std::chrono::nanoseconds total_time{0};  // swaps + dump + trace.dat
};

class Snapshot {
 public:
  // Makes the live and spare buffers with `opts` (the flight recorder:
  // Mode::kOverwrite). Null with *err on failure.
  static std::unique_ptr<Snapshot> create(const Options& opts, Error* err = nullptr);
  // Adds a spare of the same geometry to the application's own `live`
  // buffer, which must outlive the Snapshot. Null with *err on failure.
  static std::unique_ptr<Snapshot> attach(RingBuffer& live, Error* err = nullptr);
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  // The buffer to trace into. Any thread.
  RingBuffer& live() { return *live_; }
  const RingBuffer& live() const { return *live_; }

  // Snapshot of CPU `cpu`, or of every CPU when cpu < 0, written as a
  // trace.dat to `out_fd` (empty, positioned at 0; the caller publishes
  // it). Any thread except the owner of a CPU being snapshotted from a
  // signal handler; one take() at a time (others wait). Each swap may take
  // up to `swap_timeout`; a CPU whose swap fails (e.g. -ETIMEDOUT) is left
  // out of the file and reported in *res. Returns 0; -EINVAL (bad CPU);
  // -EIO/-ENOSPC/... from writing out_fd or the spool (with *err); or, when
  // every asked-for CPU failed to swap, the first swap error. An empty
  // regular file at position 0 (not O_APPEND) gets the pages written
  // straight to their place, the header last; on an error it is truncated
  // back to empty. Anything else (a pipe) is written front to back through
  // a memfd spool. The first take() makes a batch of pages for the dump
  // (2 MiB, at most a CPU buffer's worth), kept until the Snapshot goes.
  int take(int out_fd, int cpu, std::string* err, SnapshotResult* res = nullptr,
           std::chrono::milliseconds swap_timeout = std::chrono::milliseconds(500));

  // Counters of the live buffer's CPU `cpu` (the current generation only:
  // a snapshot swaps them out with the buffer). Any thread.
  CpuStats live_stats(uint32_t cpu) const { return live_->stats(cpu); }
  // Totals since create(): live counters plus those of every buffer
  // swapped out by take(). Any thread.
  CpuStats total_stats(uint32_t cpu) const;
  // Snapshots taken and CPUs dumped since create().
  uint64_t snapshots_taken() const;

 private:
  Snapshot() = default;
  RingBuffer* live_ = nullptr;
  std::unique_ptr<RingBuffer> owned_live_;  // when made by create()
  std::unique_ptr<RingBuffer> spare_;
  mutable std::mutex mu_;          // one take() at a time; guards the below
  std::vector<CpuStats> retired_;  // counters of swapped-out generations
  uint64_t taken_ = 0;
  // The dump's batch: pages traded for the swapped-out buffer's and written
  // with one pwritev (made at the first take, kept: mapping them per take
  // cost more than a small snapshot's dump).
  std::vector<DataPage*> batch_;
};

}  // namespace rbtrace
