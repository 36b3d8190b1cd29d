// rbtrace/detail/local.h - "local" operations: atomic with respect to
// signal handlers on the same thread, not with respect to other threads.
//
// The writer side of a CPU buffer is only ever modified by its owner thread
// and by signal handlers running on that thread, which nest like a stack.
// An instruction cannot be split by a signal, so a single read-modify-write
// instruction without the LOCK prefix is enough (the kernel's local_t).
// Other threads (readers, the stats API) only load these words; a load of an
// aligned 8-byte word is atomic on every target we support, so they see
// either the old or the new value.
//
// On x86-64 the operations are non-LOCKed `xadd`/`add`/`cmpxchg`. Elsewhere,
// and under ThreadSanitizer (which cannot see inline assembly), they are
// relaxed std::atomic operations: correct everywhere, slower than needed.
//
// Relaxed is enough for every operation here: these words are written by one
// thread only; ordering towards other threads is given by the explicit
// release/acquire operations in the ring buffer code, each of which says
// what it pairs with.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__SANITIZE_THREAD__)
#define RBTRACE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RBTRACE_TSAN 1
#endif
#endif

#if defined(__x86_64__) && !defined(RBTRACE_TSAN)
#define RBTRACE_LOCAL_ASM 1
#endif

namespace rbtrace::detail {

// W3's load of a CPU buffer's back-pointer. On hardware a swap without a
// signal orders the requester's work on a buffer (its reset) before the
// owner's next writes into it through membarrier (docs/DESIGN.md section
// 7), which C++ and ThreadSanitizer do not model; under TSan the load is
// an acquire that pairs with the release store of the back-pointer in
// swap_cpu (S4/M4), so TSan sees the same edge. Elsewhere relaxed (on
// x86 the two are the same instruction).
#ifdef RBTRACE_TSAN
inline constexpr std::memory_order kW3Order = std::memory_order_acquire;
#else
inline constexpr std::memory_order kW3Order = std::memory_order_relaxed;
#endif

// A compiler barrier: orders the owner thread against its own signal
// handlers (std::atomic_signal_fence), never emits an instruction.
inline void signal_fence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

template <class T>
class Local {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);

 public:
  Local() = default;
  explicit Local(T v) : v_(v) {}

  // Relaxed: any thread may load; see the file comment.
  T load() const { return v_.load(std::memory_order_relaxed); }
  // Relaxed store by the owner (or by a thread that owns the buffer
  // exclusively, e.g. during reset).
  void store(T v) { v_.store(v, std::memory_order_relaxed); }

  // Returns the new value.
  T add_return(T d) {
#ifdef RBTRACE_LOCAL_ASM
    T old = d;
    asm volatile("xadd %0, %1" : "+r"(old), "+m"(v_) : : "memory", "cc");
    return old + d;
#else
    return v_.fetch_add(d, std::memory_order_relaxed) + d;
#endif
  }
  void add(T d) {
#ifdef RBTRACE_LOCAL_ASM
    // "er": a register or a sign-extended 32-bit immediate, so inc() and
    // constant adds are one instruction.
    if constexpr (sizeof(T) == 8) {
      asm volatile("addq %1, %0" : "+m"(v_) : "er"(d) : "memory", "cc");
    } else {
      asm volatile("addl %1, %0" : "+m"(v_) : "er"(d) : "memory", "cc");
    }
#else
    v_.fetch_add(d, std::memory_order_relaxed);
#endif
  }
  void sub(T d) { add(static_cast<T>(-d)); }
  void inc() { add(1); }
  void dec() { add(static_cast<T>(-1)); }

  // Compare-and-exchange; returns the value found (== expected on success).
  T cmpxchg(T expected, T desired) {
#ifdef RBTRACE_LOCAL_ASM
    T prev;
    asm volatile("cmpxchg %2, %1"
                 : "=a"(prev), "+m"(v_)
                 : "r"(desired), "0"(expected)
                 : "memory", "cc");
    return prev;
#else
    v_.compare_exchange_strong(expected, desired, std::memory_order_relaxed,
                               std::memory_order_relaxed);
    return expected;
#endif
  }
  // Compare-and-exchange; true if it stored `desired`. On x86-64 the branch
  // uses cmpxchg's own ZF (a flag output), no compare after it.
  bool cmpxchg_ok(T expected, T desired) {
#ifdef RBTRACE_LOCAL_ASM
    bool ok;
    asm volatile("cmpxchg %3, %1"
                 : "=@ccz"(ok), "+m"(v_), "+a"(expected)
                 : "r"(desired)
                 : "memory");
    return ok;
#else
    return v_.compare_exchange_strong(expected, desired, std::memory_order_relaxed,
                                      std::memory_order_relaxed);
#endif
  }

 private:
  std::atomic<T> v_{0};
  static_assert(sizeof(std::atomic<T>) == sizeof(T));
};

using Local64 = Local<uint64_t>;
using Local32 = Local<uint32_t>;

}  // namespace rbtrace::detail
