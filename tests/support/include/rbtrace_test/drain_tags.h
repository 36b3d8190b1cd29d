// rbtrace_test/drain_tags.h - consume every event of a CPU, returning the u32 tag
// at the start of each payload (the tests write a tag per event).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "rbtrace/ring_buffer.h"

namespace rbtrace::test {

inline std::vector<uint32_t> drain_tags(RingBuffer& rb, uint32_t cpu) {
  std::vector<uint32_t> out;
  PageEvent ev;
  while (rb.consume(cpu, &ev) == 0) {
    uint32_t v;
    std::memcpy(&v, ev.data, sizeof v);
    out.push_back(v);
  }
  return out;
}

}  // namespace rbtrace::test
