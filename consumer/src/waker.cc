// waker.cc - futex wake-up and the recycled watermark wakers (waker.h).
#include "waker.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mutex>
#include <vector>

namespace rbtrace::detail {

void futex_wait(std::atomic<uint32_t>* w, uint32_t val, int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), FUTEX_WAIT_PRIVATE, val, &ts, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>* w) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

namespace {

void waker_hook(void* arg, uint32_t cpu) {
  Waker* w = static_cast<Waker*>(arg);
  if (w->sleeping.load(std::memory_order_relaxed) == 0) return;  // the usual case
  if (cpu >= kMaxCpus) return;
  if (w->filled[cpu].fetch_add(1, std::memory_order_relaxed) + 1 <
      w->watermark.load(std::memory_order_relaxed))
    return;
  if (w->sleeping.exchange(0, std::memory_order_relaxed) == 1) futex_wake(&w->sleeping);
}

std::mutex& waker_mutex() {
  static std::mutex m;
  return m;
}
std::vector<Waker*>& free_wakers() {
  static std::vector<Waker*>* v = new std::vector<Waker*>();  // immortal
  return *v;
}
std::vector<Waker*>& all_wakers() {
  static std::vector<Waker*>* v = new std::vector<Waker*>();  // keeps them reachable
  return *v;
}

}  // namespace

Waker* get_waker() {
  std::lock_guard<std::mutex> g(waker_mutex());
  if (!free_wakers().empty()) {
    Waker* w = free_wakers().back();
    free_wakers().pop_back();
    return w;
  }
  Waker* w = new Waker();
  w->hook.fn = waker_hook;
  w->hook.arg = w;
  all_wakers().push_back(w);
  return w;
}
void put_waker(Waker* w) {
  std::lock_guard<std::mutex> g(waker_mutex());
  free_wakers().push_back(w);
}

}  // namespace rbtrace::detail
