// ring_buffer_internal.h - what the ring buffer's source files share, private
// to rbtrace::ringbuf: the registry of live ring buffers and the thread-exit
// key (slots.cc; create and the destructor use them), the table of live ids,
// the binding-table helpers (slots.cc, the writer's refusals, swap_cpu, the
// destructor), the page allocator and the test hook.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "rbtrace/ring_buffer.h"

// ---- reader.cc: pages handed back by a snapshot -------------------------------
// Not hidden: RingBuffer (public) holds an array of HandBack.
namespace rbtrace::detail {
struct HandBackRun {
  int fd = -1;        // dup'ed, closed when the run is read
  uint64_t offset = 0;
  uint32_t left = 0;  // pages
};
struct HandBack {
  std::mutex mu;
  uint32_t holds = 0;
  std::vector<HandBackRun> runs;  // oldest first
};

}  // namespace rbtrace::detail

// Hidden: internals of one library, addressed directly rather than through
// the GOT, as when they were one file's anonymous namespace.
#pragma GCC visibility push(hidden)

namespace rbtrace::detail {

// ---- slots.cc --------------------------------------------------------------
// One record of a RingBuffer's thread-name table, a seqlock: `seq` is 2n+1
// while record n is written and 2n+2 once it is complete. The name and tid
// are atomics so that a reader racing a writer reads old or new words,
// never undefined ones, and throws the mix away when seq moved.
struct NameRecord {
  std::atomic<uint64_t> seq{0};
  std::atomic<int32_t> tid{0};
  std::atomic<uint64_t> comm[2]{};
};

// Registry of live ring buffers, for thread-exit cleanup and fork.
std::mutex& registry_mutex();
std::unordered_map<uint32_t, RingBuffer*>& registry();
// The pthread key that gives a thread's slots back at its exit, and the
// fork handlers: installed by the first create, with
// pthread_once(&exit_key_once, make_exit_key).
extern pthread_once_t exit_key_once;
void make_exit_key();
// Ids of live ring buffers (a thread whose binding table is full drops its
// bindings to destroyed buffers): create and the destructor keep it.
void mark_live(uint32_t id);
void mark_dead(uint32_t id);

// Points the calling thread's binding for (rb_id, cpu), if any, at `cb`.
// Async-signal-safe (the swap's doorbell handler calls it).
inline void refresh_binding(uint32_t rb_id, uint32_t cpu, CpuBuffer* cb) {
  ThreadState& t = tls_state;
  for (int i = 0; i < t.count; i++)
    if (t.bindings[i].rb_id == rb_id && t.bindings[i].cpu == static_cast<int32_t>(cpu))
      t.bindings[i].cb = cb;
}

// Every removal of a binding goes through here. The writer's fast path (W0)
// looks only at bindings[0] and not at count: when the last binding goes,
// its rb_id is cleared (no buffer has id 0). A handler that runs between
// the count going down and the clearing still finds the old slot, which
// this thread owns until its caller releases it afterwards.
inline void remove_binding_at(ThreadState& t, int i) {
  // W0 reads rb_id, then cb: never show a handler one entry's rb_id with
  // another's cb. The entry is invalid while it is rewritten.
  const ThreadBinding last = t.bindings[t.count - 1];
  t.bindings[i].rb_id = 0;
  signal_fence();
  t.bindings[i].cpu = last.cpu;
  t.bindings[i].cb = last.cb;
  signal_fence();
  t.bindings[i].rb_id = last.rb_id;
  signal_fence();
  t.count--;
  signal_fence();
  if (t.count == 0) t.bindings[0].rb_id = 0;
}

// ---- ring_buffer.cc --------------------------------------------------------
// Data pages are mapped memory, so that a claim in a signal handler can
// make a CPU buffer (no allocator), and one page can be freed wherever it
// ended up (read_page trades pages between CPU buffers and readers):
// alloc_page maps one zeroed, pre-faulted page of `size` bytes (null on
// ENOMEM); free_page unmaps one, whichever mapping it came from.
DataPage* alloc_page(uint32_t size);
void free_page(DataPage* p, uint32_t size);
// Frees a CPU buffer made by make_cpu_buffer and the pages it holds now
// (its own or traded in). Only with no writer and no reader on it.
void free_cpu_buffer(CpuBuffer* cb);
// The test hook (set_test_hook). Loaded relaxed: only tests set it.
extern std::atomic<TestHook> test_hook;

// Marks the calling thread as changing its bindings for a scope (see
// ThreadState::changing); nests.
class ChangingBindings {
 public:
  ChangingBindings() : prev_(tls_state.changing) {
    tls_state.changing = true;
    signal_fence();
  }
  ~ChangingBindings() {
    signal_fence();
    tls_state.changing = prev_;
  }
  ChangingBindings(const ChangingBindings&) = delete;
  ChangingBindings& operator=(const ChangingBindings&) = delete;

 private:
  bool prev_;
};

// fork() against swaps in other threads: a swap counts itself in flight
// from S3 to the end of S4 and refuses (-EBUSY) while a fork is being
// prepared; fork_prepare waits until none is in flight. seq_cst on both
// sides (a Dekker pair), so either the swap sees `forking` or fork_prepare
// sees the swap. Otherwise a fork between S4's two slot stores would leave
// one CPU buffer in two slots in the child.
extern std::atomic<uint32_t> swaps_in_flight;
// The calling thread's buffer for peek/consume's copy, at least `size`
// bytes; null when memory cannot be had. Plain data in tls_state (no C++
// thread_local destructor: a reader may still run in a later destructor);
// freed by the thread-exit key, which it sets if the thread has no slot.
unsigned char* reader_copy_buffer(uint32_t size);
extern std::atomic<bool> forking;

}  // namespace rbtrace::detail

#pragma GCC visibility pop
