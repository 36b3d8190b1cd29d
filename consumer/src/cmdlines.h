// cmdlines.h - the drain thread's tid -> comm map: the names of the
// writers seen in pages, appended to DIR/spool/<session>/cmdlines and put
// in every segment's trace.dat. Private to rbtrace::consumer. See
// docs/DESIGN.md, "Consumer", Cmdlines.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rbtrace/ring_buffer.h"

namespace rbtrace::detail {

class Cmdlines {
 public:
  // Adds the tids not seen before (name from /proc if the thread lives,
  // else the name it had when it claimed its slot, else from the last scan,
  // else "<...>"), appends them to the spool's cmdlines file; clears
  // `tids`.
  void note(std::vector<int32_t>* tids);
  // Refreshes the name cache from /proc/self/task, at most every 100 ms.
  void scan_if_due();
  std::vector<std::pair<int32_t, std::string>> seen() const {
    return {comms_.begin(), comms_.end()};
  }

  int fd = -1;  // the spool's cmdlines file (appended), or -1
  const RingBuffer* rb = nullptr;  // its names at claim (read_thread_names)
  // Held around rb's use; rb is not used once *ring_gone (ConsumerShared).
  std::mutex* ring_mu = nullptr;
  const bool* ring_gone = nullptr;

 private:
  void scan_threads();
  void read_claimed();

  std::unordered_map<int32_t, std::string> comms_;
  // Names of the process's threads, refreshed now and then from
  // /proc/self/task (so that a writer that exits before the consumer sees
  // its pages still has a name), and looked up for each new tid.
  std::unordered_map<int32_t, std::string> names_;
  std::chrono::steady_clock::time_point last_scan_{};
  // Names recorded by the writers when they claimed a slot.
  std::unordered_map<int32_t, std::string> claimed_;
  uint64_t name_cursor_ = 0;
};

}  // namespace rbtrace::detail
