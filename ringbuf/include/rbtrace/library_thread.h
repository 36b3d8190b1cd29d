// rbtrace/library_thread.h - the threads rbtrace itself runs (the consumer's
// drain and publish threads, the control server).
//
// Such a thread must stay out of the application's way: a process-directed
// signal (a tick timer, kill(pid, ...)) must not run the application's
// handler on it, and an event written on it (a user callback that traces)
// must not take one of the application's CPU slots.
#pragma once

#include <functional>
#include <thread>

namespace rbtrace {

// Starts `fn` on a new thread named `name` (at most 15 bytes are kept;
// named before `fn` runs and before this returns) with
// every signal blocked from its first instruction: the caller's mask is
// full while the thread is created, and a new thread inherits it; the
// caller's own mask is restored before this returns. On that thread every
// claim of a CPU slot is refused (-EBUSY from reserve/write/emit, counted in
// RingBuffer::no_cpu_dropped(); bind_thread returns -EBUSY). Throws as
// std::thread does.
std::thread start_library_thread(const char* name, std::function<void()> fn);

// True on a thread started by start_library_thread. Any thread.
bool is_library_thread();

}  // namespace rbtrace
