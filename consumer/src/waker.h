// waker.h - the drain thread's wake-up: the futex calls and the watermark
// waker (a ring page hook). Private to rbtrace::consumer. See
// docs/DESIGN.md, "Consumer", Wake-up.
#pragma once

#include <atomic>
#include <cstdint>

#include "rbtrace/ring_buffer.h"

namespace rbtrace::detail {

void futex_wait(std::atomic<uint32_t>* w, uint32_t val, int64_t ns);
void futex_wake(std::atomic<uint32_t>* w);

// ---------------------------------------------------------------------------
// Watermark wake-up. The writer that moves a CPU's tail to a new page calls
// the ring's page hook (ring_buffer.h, PageHook), i.e. at most once per
// page. Wakers are never freed: a writer may still be inside the hook after
// the consumer removed it. They are recycled through a global free list
// (a late writer then at worst wakes some other consumer early: harmless)
// and stay reachable, so leak checkers do not flag them.
// ---------------------------------------------------------------------------
struct Waker {
  PageHook hook{};
  // 1 while the drain thread sleeps in futex_wait on it. relaxed
  // everywhere: it is only a flag, and the futex system call orders the
  // sleep against the wake (FUTEX_WAIT rechecks the value in the kernel).
  std::atomic<uint32_t> sleeping{0};
  std::atomic<uint32_t> watermark{1};
  std::atomic<uint32_t> filled[kMaxCpus];  // pages since the sleep began
};

// A waker from the free list (or a new one), its hook set up.
Waker* get_waker();
// Back to the free list (never freed).
void put_waker(Waker* w);

}  // namespace rbtrace::detail
