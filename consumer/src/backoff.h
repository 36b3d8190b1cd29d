// backoff.h - the consumer's back-off after a write or publish failure:
// 50 ms, doubling up to 1 s, back to the start after a success (docs/DESIGN.md,
// "Consumer", Disk full). Private to rbtrace::consumer.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace rbtrace::detail {

class Backoff {
 public:
  // The next wait: 50 ms after a success, else twice the last, at most 1 s.
  std::chrono::milliseconds next() {
    ms_ = ms_ ? std::min<int64_t>(ms_ * 2, 1000) : 50;
    return std::chrono::milliseconds(ms_);
  }
  void reset() { ms_ = 0; }

 private:
  int64_t ms_ = 0;
};

}  // namespace rbtrace::detail
