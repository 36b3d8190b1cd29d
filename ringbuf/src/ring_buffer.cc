// ring_buffer.cc - construction, CPU slots, the writer's slow path (W5), the
// reader (R1..R4), swap, reset, the iterator and stats.
#include "rbtrace/ring_buffer.h"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>

namespace rbtrace {

using namespace detail;

namespace detail {
constinit thread_local ThreadState tls_state __attribute__((tls_model("initial-exec"))) = {};
}  // namespace detail

namespace {

// ---- registry of live ring buffers, for thread-exit cleanup ---------------
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<uint32_t, RingBuffer*>& registry() {
  static std::unordered_map<uint32_t, RingBuffer*> r;
  return r;
}
std::atomic<uint32_t> next_id{1};
pthread_key_t exit_key;
pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

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

void release_thread_slots(void*) {
  ThreadState& t = tls_state;
  // From here on the thread cannot claim a slot again: a signal handler or
  // another key's destructor that writes after this would claim one that
  // nothing gives back (glibc runs this destructor once).
  t.exiting = true;
  signal_fence();
  ChangingBindings changing;
  std::lock_guard<std::mutex> g(registry_mutex());
  // Backwards: unbind_thread moves the last binding into the freed entry,
  // so a forward walk would skip it and leak that buffer's slot.
  for (int i = t.count - 1; i >= 0; i--) {
    auto it = registry().find(t.bindings[i].rb_id);
    if (it != registry().end()) it->second->unbind_thread();
  }
  t.count = 0;
  signal_fence();
  t.bindings[0].rb_id = 0;  // see remove_binding_at
}

// fork(): only the forking thread exists in the child, under a new tid.
// Its slots move to that tid; every other thread's slots are freed and the
// CPU buffers emptied (after_fork_in_child). The registry lock is held
// across fork so the child finds the map consistent.
void fork_prepare() { registry_mutex().lock(); }
void fork_parent() { registry_mutex().unlock(); }
void fork_child() {
  ThreadState& t = tls_state;
  const int32_t old_tid = t.tid;
  t.tid = static_cast<int32_t>(syscall(SYS_gettid));
  for (auto& [id, rb] : registry()) rb->after_fork_in_child(old_tid, t.tid);
  registry_mutex().unlock();
}

void make_exit_key() {
  pthread_key_create(&exit_key, release_thread_slots);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int32_t cached_tid() {
  ThreadState& t = tls_state;
  if (t.tid == 0) t.tid = static_cast<int32_t>(syscall(SYS_gettid));
  return t.tid;
}

bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

std::atomic<TestHook> test_hook{nullptr};  // set_test_hook

// True if no thread of this process has id `tid` any more. tgkill with
// signal 0 only checks; errno is preserved (claim_cpu may run in a signal
// handler).
bool thread_gone(int32_t tid) {
  const int saved = errno;
  const bool gone = syscall(SYS_tgkill, getpid(), tid, 0) != 0 && errno == ESRCH;
  errno = saved;
  return gone;
}

// Ids of live ring buffers, readable from a signal handler (a plain scan):
// a thread whose binding table is full drops its bindings to destroyed
// buffers. Past kLiveSlots live buffers, ids are not recorded and every id
// counts as possibly alive (nothing is pruned then).
constexpr int kLiveSlots = 1024;
std::atomic<uint32_t> live_ids[kLiveSlots];
std::atomic<bool> live_overflow{false};

void mark_live(uint32_t id) {
  for (auto& slot : live_ids) {
    uint32_t expected = 0;
    // relaxed: the id is published to this thread's own later claims by
    // program order; other threads only ever prune ids they bound to,
    // which were live (and recorded) when they bound.
    if (slot.compare_exchange_strong(expected, id, std::memory_order_relaxed)) return;
  }
  live_overflow.store(true, std::memory_order_relaxed);
}
void mark_dead(uint32_t id) {
  for (auto& slot : live_ids) {
    uint32_t expected = id;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_relaxed)) return;
  }
}
bool maybe_alive(uint32_t id) {
  if (live_overflow.load(std::memory_order_relaxed)) return true;
  for (auto& slot : live_ids)
    if (slot.load(std::memory_order_relaxed) == id) return true;
  return false;
}

// Points the calling thread's binding for (rb_id, cpu), if any, at `cb`.
// Async-signal-safe (the swap's doorbell handler calls it).
void refresh_binding(uint32_t rb_id, uint32_t cpu, CpuBuffer* cb) {
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
void remove_binding_at(ThreadState& t, int i) {
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


DataPage* alloc_page(uint32_t size) {
  void* p = nullptr;
  if (posix_memalign(&p, size < 65536 ? size : 65536, size) != 0) return nullptr;
  std::memset(p, 0, size);  // pre-fault: the writer should not take faults
  return static_cast<DataPage*>(p);
}

}  // namespace

// ===========================================================================
// Construction
// ===========================================================================

std::unique_ptr<RingBuffer> RingBuffer::create(const Options& o, Error* err) {
  auto fail = [&](int code, std::string msg) -> std::unique_ptr<RingBuffer> {
    if (err) {
      err->code = code;
      err->message = std::move(msg);
    }
    return nullptr;
  };
  if (o.ncpus == 0 || o.ncpus > kMaxCpus)
    return fail(EINVAL, "ncpus must be 1.." + std::to_string(kMaxCpus) + ", got " +
                            std::to_string(o.ncpus));
  if (!is_pow2(o.page_size) || o.page_size < kMinPageSize || o.page_size > kMaxPageSize)
    return fail(EINVAL, "page_size must be a power of two from 4096 to 1048576, got " +
                            std::to_string(o.page_size));
  if (o.pages_per_cpu < 2 || o.pages_per_cpu > kMaxPagesPerCpu)
    return fail(EINVAL, "pages_per_cpu must be 2.." + std::to_string(kMaxPagesPerCpu) +
                            ", got " + std::to_string(o.pages_per_cpu));
  const uint64_t bytes = static_cast<uint64_t>(o.ncpus) * (o.pages_per_cpu + 1ULL) * o.page_size;
  if (bytes > kMaxBytesPerBuffer)
    return fail(EINVAL, "too many pages: " + std::to_string(bytes) +
                            " bytes requested, the limit is " +
                            std::to_string(kMaxBytesPerBuffer));
  if (o.mode != Mode::kOverwrite && o.mode != Mode::kProducerConsumer)
    return fail(EINVAL, "unknown mode");
  if (static_cast<unsigned>(o.clock) > static_cast<unsigned>(ClockKind::kRealtime))
    return fail(EINVAL, "unknown clock");

  std::unique_ptr<RingBuffer> rb(new (std::nothrow) RingBuffer());
  if (!rb) return fail(ENOMEM, "out of memory");
  rb->opts_ = o;
  rb->clock_ = Clock(o.clock);
  if (rb->clock_.kind() == ClockKind::kCounter) (void)counter_calibration();
  const uint32_t cap = o.page_size - kPageHeaderSize;
  // An event must fit a page with a time event in front of it.
  rb->max_payload_ = (cap - kTimeEventSize - 8) & ~3u;
  rb->max_payload_span_ = rb->max_payload_ - kMinPayload;
  static_assert(kMinMaxPayload == ((kMinPageSize - kPageHeaderSize - kTimeEventSize - 8) & ~3u));
  // W1's test sends every write to the slow path when the clock is not the
  // counter (the fast path reads the counter directly).
  if (rb->clock_.kind() != ClockKind::kCounter)
    rb->record_disabled_.store(kSlowClock, std::memory_order_relaxed);
  rb->buffers_.reset(new (std::nothrow) std::atomic<CpuBuffer*>[o.ncpus]);
  rb->owners_.reset(new (std::nothrow) std::atomic<int32_t>[o.ncpus]);
  if (!rb->buffers_ || !rb->owners_) return fail(ENOMEM, "out of memory");
  for (uint32_t c = 0; c < o.ncpus; c++) rb->buffers_[c].store(nullptr, std::memory_order_relaxed);
  for (uint32_t c = 0; c < o.ncpus; c++) {
    CpuBuffer* cb = new (std::nothrow) CpuBuffer;
    if (!cb) return fail(ENOMEM, "out of memory");
    // In the slot at once: the destructor frees what the slots hold.
    rb->buffers_[c].store(cb, std::memory_order_relaxed);
    cb->cpu = c;
    cb->page_size = o.page_size;
    cb->npages = o.pages_per_cpu;
    cb->capacity = cap;
    cb->overwrite = o.mode == Mode::kOverwrite;
    cb->clock = rb->clock_;
    cb->pages = new (std::nothrow) BufferPage[o.pages_per_cpu + 1];
    if (!cb->pages) return fail(ENOMEM, "out of memory");
    for (uint32_t i = 0; i <= o.pages_per_cpu; i++) {
      cb->pages[i].index = i;
      cb->pages[i].page = alloc_page(o.page_size);
      if (!cb->pages[i].page)
        return fail(ENOMEM, "cannot allocate " + std::to_string(bytes) + " bytes of pages");
    }
    rb->init_cpu_buffer(cb);
    cb->buffer.store(rb.get(), std::memory_order_relaxed);
    rb->owners_[c].store(0, std::memory_order_relaxed);
  }
  pthread_once(&exit_key_once, make_exit_key);
  rb->id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  mark_live(rb->id_);
  {
    std::lock_guard<std::mutex> g(registry_mutex());
    registry()[rb->id_] = rb.get();
  }
  return rb;
}

// Links pages[0..npages-1] into a ring with pages[0] as head, tail and
// commit page, and pages[npages] as the reader page. Only with no writer and
// no reader on cb.
void RingBuffer::init_cpu_buffer(CpuBuffer* cb) {
  const uint32_t n = cb->npages;
  for (uint32_t i = 0; i <= n; i++) {
    BufferPage* p = &cb->pages[i];
    p->write.store(0);
    p->entries.store(0);
    p->real_end.store(cb->capacity);
    p->refused_mark.store(0);
    p->push_mark.store(0);
    p->push_seq.store(kNoPushSeq);
    p->page->time_stamp = 0;
    p->page->commit = 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    BufferPage* p = &cb->pages[i];
    p->next.store(link(&cb->pages[(i + 1) % n], kPageNormal), std::memory_order_relaxed);
    p->prev.store(&cb->pages[(i + n - 1) % n], std::memory_order_relaxed);
  }
  // The page before the head points at it with kPageHead.
  cb->pages[n - 1].next.store(link(&cb->pages[0], kPageHead), std::memory_order_relaxed);
  BufferPage* rp = &cb->pages[n];
  rp->next.store(link(&cb->pages[0], kPageNormal), std::memory_order_relaxed);
  rp->prev.store(&cb->pages[n - 1], std::memory_order_relaxed);
  cb->tail_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->commit_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->head_page.store(&cb->pages[0], std::memory_order_relaxed);
  cb->reader_page = rp;
  cb->reader_read = 0;
  cb->read_stamp = 0;
  cb->write_stamp.store(0);
  cb->stamp_pos.store(~0ULL);
  cb->tail_seq.store(0);
  cb->in_w5.store(0);
  cb->entries.store(0);
  cb->bytes.store(0);
  cb->overrun.store(0);
  cb->commit_overrun.store(0);
  cb->dropped.store(0);
  cb->nested_dropped.store(0);
  cb->disabled.store(0);
  cb->discarded.store(0);
  cb->read.store(0, std::memory_order_relaxed);
  cb->last_overrun = 0;
  cb->last_refused = 0;
  cb->lost_events = 0;
}

RingBuffer::~RingBuffer() {
  {
    std::lock_guard<std::mutex> g(registry_mutex());
    registry().erase(id_);
  }
  mark_dead(id_);
  // The destroying thread's own binding goes now; other threads' bindings
  // are pruned when their tables fill up (add_binding).
  ThreadState& t = tls_state;
  for (int i = t.count - 1; i >= 0; i--)
    if (t.bindings[i].rb_id == id_) remove_binding_at(t, i);
  // The CPU buffers in our slots are ours, whichever RingBuffer made them
  // (swap_cpu exchanges them).
  if (buffers_) {
    for (uint32_t c = 0; c < opts_.ncpus; c++) {
      CpuBuffer* cb = buffers_[c].load(std::memory_order_relaxed);
      if (!cb) continue;
      if (cb->pages) {
        for (uint32_t i = 0; i <= cb->npages; i++) std::free(cb->pages[i].page);
        delete[] cb->pages;
      }
      delete cb;
    }
  }
}

// ===========================================================================
// CPU slots
// ===========================================================================

void RingBuffer::after_fork_in_child(int32_t old_tid, int32_t new_tid) {
  // relaxed throughout: the child has a single thread here.
  for (uint32_t c = 0; c < opts_.ncpus; c++) {
    const int32_t o = owners_[c].load(std::memory_order_relaxed);
    const bool mine = o == old_tid && old_tid != 0;
    if (o != 0) owners_[c].store(mine ? new_tid : 0, std::memory_order_relaxed);
    CpuBuffer* cb = buffers_[c].load(std::memory_order_relaxed);
    // A swap or a reader of another thread may have been half way through
    // at the fork; that thread does not exist here.
    cb->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_relaxed);
    cb->reader_lock.store(0, std::memory_order_relaxed);
    // The forking thread is inside a write of its own CPU (fork from a
    // handler that interrupted it): that write completes on return, so the
    // buffer stays as it is. Every other buffer starts empty: its events
    // are the parent's, and a write another thread had in flight at the
    // fork would otherwise keep the CPU busy for ever.
    if (mine && cb->committing() != 0) continue;
    init_cpu_buffer(cb);
    cb->state.store(0);
  }
}

int32_t RingBuffer::cpu_owner(uint32_t cpu) const {
  if (cpu >= opts_.ncpus) return 0;
  return owners_[cpu].load(std::memory_order_relaxed);
}

namespace {
int add_binding(RingBuffer& rb, int32_t cpu, CpuBuffer* cb) {
  const uint32_t rb_id = rb.id();
  ThreadState& t = tls_state;
  if (t.count >= kMaxBindingsPerThread) {
    // Drop bindings to buffers destroyed since (their slots died with them).
    for (int i = t.count - 1; i >= 0; i--)
      if (!maybe_alive(t.bindings[i].rb_id)) remove_binding_at(t, i);
  }
  if (t.count >= kMaxBindingsPerThread) return -ENOSPC;
  if (!t.key_set) {
    // A low pthread key stores into the thread descriptor: no allocation.
    pthread_setspecific(exit_key, &t);
    t.key_set = true;
  }
  // rb_id last: W0's fast path looks at bindings[0].rb_id alone, so the
  // entry is complete before a handler can match it.
  t.bindings[t.count].cpu = cpu;
  t.bindings[t.count].cb = cb;
  signal_fence();
  // relaxed: only tests set it.
  if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
    h(TestHookPoint::kClaimBinding, rb, static_cast<uint32_t>(cpu));
  t.bindings[t.count].rb_id = rb_id;
  signal_fence();  // the binding is complete before a handler can count it
  t.count++;
  return 0;
}
}  // namespace

int32_t RingBuffer::find_or_claim_cpu() {
  const int32_t cpu = thread_cpu(id_);
  return cpu >= 0 ? cpu : claim_cpu();
}

Reservation RingBuffer::refuse_disabled(CpuBuffer* cb) {
  Reservation r;
  CpuBuffer* now = cb;
  // relaxed: a swap that moved cb ran on this thread (in a handler between
  // our W0 and W1), so program order shows it; see leave_refused.
  if (cb->buffer.load(std::memory_order_relaxed) != this) {
    now = buffers_[cb->cpu].load(std::memory_order_relaxed);
    refresh_binding(id_, cb->cpu, now);
  }
  now->disabled.inc();
  r.err = -EPERM;
  return r;
}

Reservation RingBuffer::leave_refused(CpuBuffer* cb) {
  Reservation r;
  // Undo W2 (committing and commits): we reserved nothing, so a writer we
  // interrupted may find the state as it left it.
  if (cb->buffer.load(std::memory_order_relaxed) != this) {
    // W3: a swap that ran between W1 and W2 moved cb to the other buffer.
    // Nobody can have reserved in cb since our W2: nested writers load
    // buffers_[cpu] afresh. Leave without committing anything.
    cb->state.sub(CpuBuffer::kEnter);
    // Count the refusal in the buffer now in the slot: the one we touched
    // belongs to the requester, who may be dumping or resetting it. The
    // binding's cached buffer was stale (a swap run elsewhere while nobody
    // owned the slot cannot happen to a bound thread; one that broke the
    // rule is survived): refresh it for the next write.
    CpuBuffer* now = buffers_[cb->cpu].load(std::memory_order_relaxed);
    now->disabled.inc();
    refresh_binding(id_, cb->cpu, now);
    r.err = -EAGAIN;
    return r;
  }
  // Nesting deeper than kMaxNesting.
  cb->nested_dropped.inc();
  signal_fence();
  cb->state.sub(CpuBuffer::kEnter);
  r.err = -ELOOP;
  return r;
}

// Slow path of the first event of an unbound thread. Async-signal-safe: a
// CAS per slot, one gettid the first time.
int32_t RingBuffer::claim_cpu() {
  ThreadState& t = tls_state;
  if (RBTRACE_UNLIKELY(t.exiting)) {
    // Our slots were given back at thread exit; nothing would give back a
    // slot claimed now (a signal handler, or a later key destructor).
    no_cpu_.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  if (t.changing) {
    // A handler interrupted this thread's own claim, bind or unbind.
    no_cpu_.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  const int32_t tid = cached_tid();
  ChangingBindings changing;
  return claim_free_cpu(tid);
}

int32_t RingBuffer::claim_free_cpu(int32_t tid) {
  ThreadState& t = tls_state;
  for (bool reclaimed = false;; reclaimed = true) {
    for (uint32_t c = 0; c < opts_.ncpus; c++) {
      int32_t expected = 0;
      // acq_rel: acquire pairs with the release store in unbind_thread, so
      // the new owner sees the previous owner's writer-side state; release
      // is not needed by anyone but keeps the pair symmetric for
      // bind_thread.
      if (owners_[c].load(std::memory_order_relaxed) == 0 &&
          owners_[c].compare_exchange_strong(expected, tid, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
        if (add_binding(*this, static_cast<int32_t>(c),
                        buffers_[c].load(std::memory_order_relaxed)) != 0) {
          owners_[c].store(0, std::memory_order_release);  // pairs as above
          no_cpu_.fetch_add(1, std::memory_order_relaxed);
          return -1;
        }
        return static_cast<int32_t>(c);
      }
    }
    // No slot is free. The first time, and every 64th, take back the
    // slots of threads that no longer exist (a thread whose first event
    // came from a signal handler after its thread-specific data was
    // destroyed claims a slot that its exit never gives back), then look
    // again. Rationed: each look costs a tgkill per slot.
    if (reclaimed || (t.claim_failures++ & 63) != 0 || reclaim_dead_slots() == 0) break;
  }
  no_cpu_.fetch_add(1, std::memory_order_relaxed);
  return -1;
}

uint32_t RingBuffer::reclaim_dead_slots() {
  uint32_t n = 0;
  for (uint32_t c = 0; c < opts_.ncpus; c++) {
    int32_t o = owners_[c].load(std::memory_order_relaxed);
    if (o <= 0 || !thread_gone(o)) continue;
    // The owner exited (its tid is free; a reused tid is a live thread and
    // keeps the slot). Its writes finished before it exited: the kernel's
    // exit and our tgkill's lookup of the tid order them before us. A
    // buffer left busy (the thread died inside a write) is not taken.
    if (buffers_[c].load(std::memory_order_relaxed)->committing() != 0) continue;
    // acquire: as in claim_cpu; the slot becomes free, then claimable.
    if (owners_[c].compare_exchange_strong(o, 0, std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
      n++;
  }
  return n;
}

int RingBuffer::bind_thread(uint32_t cpu) {
  if (cpu >= opts_.ncpus) return -EINVAL;
  // As in claim_cpu: not after exit, not inside another change of ours.
  if (tls_state.exiting || tls_state.changing) return -EBUSY;
  const int32_t tid = cached_tid();
  ChangingBindings changing;
  int32_t cur = thread_cpu(id_);
  if (cur == static_cast<int32_t>(cpu)) return 0;
  int32_t expected = 0;
  // acq_rel: acquire pairs with the release in unbind_thread (see claim_cpu).
  if (!owners_[cpu].compare_exchange_strong(expected, tid, std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
    return -EBUSY;
  if (cur >= 0) {
    // Moving from another slot: give that one back first.
    ThreadState& t = tls_state;
    for (int i = 0; i < t.count; i++) {
      if (t.bindings[i].rb_id == id_) {
        // A handler sees the old binding or the new one: the buffer first
        // (relaxed: the slot is ours now, see the CAS above).
        t.bindings[i].cb = buffers_[cpu].load(std::memory_order_relaxed);
        signal_fence();
        t.bindings[i].cpu = static_cast<int32_t>(cpu);
        // release: publishes this thread's writes to the old slot to its
        // next owner; pairs with the acquire CAS in claim_cpu/bind_thread.
        owners_[cur].store(0, std::memory_order_release);
        return 0;
      }
    }
  }
  int rc = add_binding(*this, static_cast<int32_t>(cpu),
                       buffers_[cpu].load(std::memory_order_relaxed));
  if (rc != 0) owners_[cpu].store(0, std::memory_order_release);  // as above
  return rc;
}

void RingBuffer::unbind_thread() {
  ThreadState& t = tls_state;
  ChangingBindings changing;
  for (int i = 0; i < t.count; i++) {
    if (t.bindings[i].rb_id != id_) continue;
    const int32_t cpu = t.bindings[i].cpu;
    remove_binding_at(t, i);
    // release: publishes this thread's writer-side state to the slot's next
    // owner; pairs with the acquire CAS in claim_cpu/bind_thread.
    owners_[cpu].store(0, std::memory_order_release);
    return;
  }
}

void RingBuffer::discard(const Reservation& r) {
  if (!r) return;
  CpuBuffer* cb = r.cpu;
  BufferPage* bp = r.page;
  const uint32_t ev = r.event_offset;
  // The reservation began at the time event, if it had one.
  const uint32_t begin = ev - (r.total - data_event_size(r.length));
  const uint64_t w = bp->write.load();
  const uint64_t end = (w & ~0xffffffffULL) | (begin + r.total);
  bp->entries.dec();
  cb->entries.dec();
  cb->bytes.sub(r.length);
  cb->discarded.inc();
  // If nothing was reserved after us, give the space back (local cmpxchg:
  // a handler reserving meanwhile makes it fail).
  if (cb->tail_page.load(std::memory_order_relaxed) != bp || bp->write.cmpxchg(end, end - r.total) != end) {
    // Otherwise the data event becomes padding; a time event in front of it
    // keeps its meaning.
    unsigned char* p = bp->page->data + ev;
    const uint32_t word = load_u32(p);
    const uint32_t size = data_event_size(r.length);
    store_u32(p, make_event_word(kTypePadding, event_time_delta(word)));
    store_u32(p + 4, size - 4);
  }
  cb->end_commit();
}

// ===========================================================================
// Control
// ===========================================================================

CpuBuffer* RingBuffer::cpu_buffer(uint32_t cpu) const {
  if (cpu >= opts_.ncpus) return nullptr;
  // acquire: pairs with the release stores in swap_cpu.
  return buffers_[cpu].load(std::memory_order_acquire);
}

// The per-CPU disable calls act on the slot, not on whichever buffer they
// happened to load: a swap (S3) sets kSwapping on both buffers with a CAS
// from "no bit set" and clears it after S4, so
//  - a change whose CAS comes first in the word's modification order makes
//    the swap's CAS fail (-EAGAIN: the CPU is disabled, or about to be);
//  - a change that finds kSwapping waits for the swap to finish;
//  - a change whose CAS reads the word after the swap cleared kSwapping
//    (acquire, pairing with the swap's release fetch_and) sees the swap's
//    S4 store of buffers_[cpu] and re-checks the slot: if its buffer moved
//    away, it undoes the change there and applies it to the slot's new
//    buffer.
// So a disable lands on the buffer in the slot once the call returns, and
// while the count is not 0 no swap can move it: its enable finds it there.
int RingBuffer::change_cpu_disable(uint32_t cpu, int add, int off) {
  if (cpu >= opts_.ncpus) return -EINVAL;
  for (uint32_t spins = 0;; spins++) {
    CpuBuffer* cb = cpu_buffer(cpu);
    uint32_t old = cb->record_disabled.load(std::memory_order_relaxed);
    if (old & CpuBuffer::kSwapping) {
      if (spins > 64) sched_yield();
      continue;
    }
    const uint32_t count = old & ~(CpuBuffer::kRecordOff | CpuBuffer::kSwapping);
    uint32_t nw = old;
    if (add > 0 && count < CpuBuffer::kSwapping - 1) nw = old + 1;
    if (add < 0 && count > 0) nw = old - 1;  // an unmatched enable does nothing
    if (off > 0) nw |= CpuBuffer::kRecordOff;
    if (off < 0) nw &= ~CpuBuffer::kRecordOff;
    if (nw == old) return 0;
    // relaxed: only tests set it.
    if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
      h(TestHookPoint::kDisableBeforeCas, *this, cpu);
    // acq_rel: acquire pairs with swap_cpu's release clearing kSwapping (we
    // then see its S4 store of the slot); release pairs with the swap's
    // acquire CAS setting kSwapping, which then fails on our change.
    if (!cb->record_disabled.compare_exchange_weak(old, nw, std::memory_order_acq_rel,
                                                   std::memory_order_relaxed))
      continue;
    if (buffers_[cpu].load(std::memory_order_relaxed) == cb) return 0;
    // A swap moved cb out of the slot before our CAS: undo it there (a
    // plain restore of the bits we changed) and apply it to the new one.
    cb->record_disabled.fetch_add(old - nw, std::memory_order_relaxed);
  }
}

int RingBuffer::record_disable_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 1, 0); }
int RingBuffer::record_enable_cpu(uint32_t cpu) { return change_cpu_disable(cpu, -1, 0); }
int RingBuffer::record_off_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 0, 1); }
int RingBuffer::record_on_cpu(uint32_t cpu) { return change_cpu_disable(cpu, 0, -1); }

// ===========================================================================
// Reader
// ===========================================================================

DataPage* RingBuffer::alloc_read_page() const { return alloc_page(opts_.page_size); }
void RingBuffer::free_read_page(DataPage* p) { std::free(p); }

CpuBuffer* RingBuffer::lock_reader(uint32_t cpu) {
  for (int spins = 0;; spins++) {
    CpuBuffer* cb = cpu_buffer(cpu);
    int expected = 0;
    // acquire: pairs with the release in unlock_reader; readers serialize.
    if (cb->reader_lock.compare_exchange_weak(expected, 1, std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
      // A swap may have moved cb out of this slot before we locked it.
      if (cpu_buffer(cpu) == cb) return cb;
      unlock_reader(cb);
    }
    if (spins > 64) sched_yield();
  }
}

void RingBuffer::unlock_reader(CpuBuffer* cb) {
  // release: pairs with the acquire in lock_reader (and swap_cpu's trylock).
  cb->reader_lock.store(0, std::memory_order_release);
}

void set_test_hook(TestHook h) {
  test_hook.store(h, std::memory_order_relaxed);  // only tests: no ordering
}

// R1: find the head page: the page whose predecessor's next carries HEAD.
BufferPage* RingBuffer::find_head(CpuBuffer* cb) {
  BufferPage* p = cb->head_page.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < 2 * cb->npages + 2; i++) {
    BufferPage* prev = p->prev.load(std::memory_order_relaxed);  // reader-written
    // acquire: pairs with the release stores of the HEAD flag in move_tail.
    if (prev->next.load(std::memory_order_acquire) == link(p, kPageHead)) return p;
    p = page_of(p->next.load(std::memory_order_relaxed));
  }
  return nullptr;  // a writer is between HEAD->UPDATE and UPDATE->NORMAL
}

BufferPage* RingBuffer::get_reader_page(CpuBuffer* cb) {
  BufferPage* rp = cb->reader_page;
  if (cb->reader_read < (rp->commit_acquire() & kCommitMask)) return rp;
  // acquire: pairs with the release store of commit_page in
  // set_commit_to_write: once the commit has left the reader page, the
  // page's final commit and every event on it are visible.
  if (cb->commit_page.load(std::memory_order_acquire) == rp) {
    // The writer is still on the reader page; re-check its commit.
    return cb->reader_read < (rp->commit_acquire() & kCommitMask) ? rp : nullptr;
  }
  if (cb->reader_read < (rp->commit_acquire() & kCommitMask)) return rp;
  for (int tries = 0; tries < 100000; tries++) {
    BufferPage* head = find_head(cb);  // R1
    if (!head) {
      if (tries > 16) sched_yield();
      continue;
    }
    // R2: splice the reader page in place of the head. It is outside the
    // ring and no writer can reach it (the commit is not on it), so plain
    // resets are fine; the CAS below publishes them.
    rp->entries.store(0);
    rp->real_end.store(cb->capacity);
    rp->push_seq.store(kNoPushSeq);  // its old marks must not pass for new ones
    rp->page->time_stamp = 0;
    std::atomic_ref<uint64_t>(rp->page->commit).store(0, std::memory_order_relaxed);
    BufferPage* after = page_of(head->next.load(std::memory_order_relaxed));
    BufferPage* before = head->prev.load(std::memory_order_relaxed);
    rp->next.store(link(after, kPageHead), std::memory_order_relaxed);
    rp->prev.store(before, std::memory_order_relaxed);
    // relaxed: only tests set it.
    if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
      h(TestHookPoint::kR2BeforeSplice, *this, cb->cpu);
    uintptr_t expected = link(head, kPageHead);
    // acq_rel: release publishes rp's reset and links to the writer (pairs
    // with the acquire load of tp->next in move_tail); acquire pairs with
    // the writer's acq_rel CAS/release stores on this word (the last
    // release store of HEAD here also published head's push marks).
    if (!before->next.compare_exchange_strong(expected, link(rp, kPageNormal),
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
      if (tries > 16) sched_yield();
      continue;  // the writer pushed the head, or is pushing it
    }
    // What was lost before `head` (DESIGN.md section 5, "How R2 knows what
    // was lost"), read now that head is ours: no writer pushes it or moves
    // the tail into it any more. A value read before the CAS could be
    // stale by whole laps: the CAS succeeds again once the HEAD flag is
    // back on the same pointer (ABA), with the events of every lap lost.
    //  - overrun: if a writer made head the head by pushing (its push_seq
    //    is its current content's), the overrun at that push; no push ran
    //    since (a push always pushes the head, and head stayed head until
    //    our CAS), so that is the overrun at our CAS. Otherwise head became
    //    the head by our own previous splice and no push ran since: the
    //    overrun we reported last.
    //  - refusals: head's refused_mark, taken when the tail entered it; the
    //    tail has (the commit left the reader page, acquire above).
    const uint64_t overrun = head->push_seq.load() == (head->write.load() >> 32)
                                 ? head->push_mark.load()
                                 : cb->last_overrun;
    const uint64_t refused = head->refused_mark.load();
    // R3: finish the splice; the old head is the reader page now.
    // release: pairs with the acquire load of prev in is_reader_page.
    after->prev.store(rp, std::memory_order_release);
    cb->head_page.store(after, std::memory_order_relaxed);
    cb->reader_page = head;
    cb->reader_read = 0;
    // Not head->page->time_stamp: the page may be the empty tail page, whose
    // first event (and stamp) the writer is storing right now (a data race).
    // At read offset 0 the readers take the page's stamp after the commit
    // acquire that finds an event (read_page, next_event, Iterator).
    cb->read_stamp = 0;
    cb->lost_events += (overrun - cb->last_overrun) + (refused - cb->last_refused);
    cb->last_overrun = overrun;
    cb->last_refused = refused;
    return head;
  }
  return nullptr;
}

int RingBuffer::read_page(DataPage** pagep, uint32_t cpu, bool full) {
  if (cpu >= opts_.ncpus || pagep == nullptr || *pagep == nullptr) return -EINVAL;
  CpuBuffer* cb = lock_reader(cpu);
  int ret = -EAGAIN;
  BufferPage* bp = get_reader_page(cb);  // R1..R3
  if (bp) {
    // R4: first where the commit is, then the page's commit index. In this
    // order, a page the commit has left has its final index (the writer
    // stores the index before it moves commit_page); the other order could
    // pair a stale index with "the writer has left" and lose events.
    // acquire: pairs with set_commit_to_write's release of commit_page.
    const bool writer_on_page = cb->commit_page.load(std::memory_order_acquire) == bp;
    // acquire: see commit_acquire.
    const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
    const uint32_t read = cb->reader_read;
    if (read < commit) {
      DataPage* dst = *pagep;
      uint64_t nevents = 0;
      uint32_t len = 0;
      if (read != 0 || writer_on_page) {
        // With `full`, only a page the writer may still add to is refused;
        // the rest of a partly read page it has left is complete (kernel).
        if (!full || !writer_on_page) {
          // Copy the committed unread part. The copy's time stamp is the time
          // of the event before `read`, which the first copied delta is
          // relative to; at read 0 that is the page's own time stamp (the
          // reader may have taken the page empty, before its first event set
          // it: read_stamp is stale then).
          len = commit - read;
          dst->time_stamp = read != 0 ? cb->read_stamp : bp->page->time_stamp;
          std::memcpy(dst->data, bp->page->data + read, len);
          PageWalker walker(dst->data, len, dst->time_stamp);
          PageEvent e;
          while (walker.next(&e)) nevents++;
          cb->read_stamp = walker.time();
          cb->reader_read = commit;
        }
      } else {
        // A full page no writer can reach: trade pages, no copy.
        len = commit;
        nevents = bp->entries.load();
        DataPage* mine = bp->page;
        bp->page = dst;
        *pagep = mine;
        dst = mine;
        bp->page->time_stamp = 0;
        bp->page->commit = 0;
        cb->reader_read = 0;
        dst->commit = len;
      }
      if (len > 0) {
        dst->commit = len;
        if (cb->lost_events) {
          dst->commit |= kMissedEvents;
          if (len + 8 <= cb->capacity) {
            store_u64(dst->data + len, cb->lost_events);
            dst->commit |= kMissedStored;
          }
          cb->lost_events = 0;
        }
        cb->read.fetch_add(nevents, std::memory_order_relaxed);
        ret = static_cast<int>(len);
      }
    }
  }
  unlock_reader(cb);
  return ret;
}

int RingBuffer::next_event(uint32_t cpu, PageEvent* ev, uint64_t* lost, bool consume) {
  if (cpu >= opts_.ncpus || ev == nullptr) return -EINVAL;
  CpuBuffer* cb = lock_reader(cpu);
  int ret = -EAGAIN;
  for (;;) {
    BufferPage* bp = get_reader_page(cb);
    if (!bp) break;
    const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
    const uint32_t read = cb->reader_read;
    // At read 0 the base time is the page's own stamp (see read_page); read
    // it only once an event is committed (the writer sets it before).
    const uint64_t base = read == 0 && commit != 0 ? bp->page->time_stamp : cb->read_stamp;
    PageWalker walker(bp->page->data + read, commit - read, base);
    PageEvent e;
    if (!walker.next(&e)) {
      // Only padding (discarded events) up to commit: skip it.
      cb->reader_read = commit;
      cb->read_stamp = walker.time();
      continue;
    }
    // Hand out a copy: the page may be overwritten, traded, swapped away or
    // reset as soon as we unlock (see peek/consume in ring_buffer.h).
    thread_local std::unique_ptr<unsigned char[]> copy;
    thread_local uint32_t copy_size = 0;
    if (copy_size < cb->page_size) {
      copy.reset(new unsigned char[cb->page_size]);
      copy_size = cb->page_size;
    }
    std::memcpy(copy.get(), e.data, e.length);
    *ev = e;
    ev->data = copy.get();
    ev->offset += read;
    if (lost) *lost = cb->lost_events;
    if (consume) {
      cb->reader_read = read + walker.offset();
      cb->read_stamp = e.ts;
      cb->lost_events = 0;
      cb->read.fetch_add(1, std::memory_order_relaxed);
    }
    ret = 0;
    break;
  }
  unlock_reader(cb);
  return ret;
}

int RingBuffer::peek(uint32_t cpu, PageEvent* ev, uint64_t* lost) {
  return next_event(cpu, ev, lost, false);
}
int RingBuffer::consume(uint32_t cpu, PageEvent* ev, uint64_t* lost) {
  return next_event(cpu, ev, lost, true);
}

// ===========================================================================
// Swap and reset
// ===========================================================================

int RingBuffer::swap_cpu(RingBuffer& other, uint32_t cpu) {
  // S2: the kernel's order: presence and geometry, then disabled state.
  if (cpu >= opts_.ncpus || cpu >= other.opts_.ncpus || &other == this) return -EINVAL;
  if (opts_.page_size != other.opts_.page_size ||
      opts_.pages_per_cpu != other.opts_.pages_per_cpu || opts_.mode != other.opts_.mode ||
      clock_.kind() != other.clock_.kind())
    return -EINVAL;
  CpuBuffer* a = buffers_[cpu].load(std::memory_order_relaxed);
  CpuBuffer* b = other.buffers_[cpu].load(std::memory_order_relaxed);
  if ((record_disabled_.load(std::memory_order_relaxed) & ~kSlowClock) ||
      (other.record_disabled_.load(std::memory_order_relaxed) & ~kSlowClock))
    return -EAGAIN;
  // S3: mark both buffers kSwapping, each with a CAS from 0: a buffer that
  // is record-disabled (count, OFF) or being swapped by someone else fails
  // it (-EAGAIN). While the bit is set W1 refuses and record_disable_cpu &
  // co. wait (change_cpu_disable). acquire: pairs with the release half of
  // change_cpu_disable's CAS, so a change that came first makes ours fail.
  uint32_t za = 0, zb = 0;
  if (!a->record_disabled.compare_exchange_strong(za, CpuBuffer::kSwapping,
                                                  std::memory_order_acquire,
                                                  std::memory_order_relaxed))
    return -EAGAIN;
  if (!b->record_disabled.compare_exchange_strong(zb, CpuBuffer::kSwapping,
                                                  std::memory_order_acquire,
                                                  std::memory_order_relaxed)) {
    // release: as at the end below.
    a->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_release);
    return -EAGAIN;
  }
  signal_fence();
  // Then refuse if a write is in progress on either: the busy state is
  // committing != 0, which covers W2..W6 with every W5 retry and every turn
  // of W6's loop.
  int ret = 0;
  int la = 0, lb = 0;
  if (a->committing() != 0 || b->committing() != 0) {
    ret = -EBUSY;
  } else if (!a->reader_lock.compare_exchange_strong(
                 la, 1, std::memory_order_acquire,  // pairs with unlock_reader
                 std::memory_order_relaxed)) {
    ret = -EBUSY;
  } else if (!b->reader_lock.compare_exchange_strong(
                 lb, 1, std::memory_order_acquire,  // pairs with unlock_reader
                 std::memory_order_relaxed)) {
    unlock_reader(a);
    ret = -EBUSY;
  } else {
    // S4: exchange the slots and the back-pointers. release: a reader that
    // loads the slot (cpu_buffer, acquire) sees the buffer's state.
    buffers_[cpu].store(b, std::memory_order_release);
    other.buffers_[cpu].store(a, std::memory_order_release);
    a->buffer.store(&other, std::memory_order_relaxed);  // read by the owner only (W3)
    b->buffer.store(this, std::memory_order_relaxed);
    // The owner's cached binding (W0), when the owner is the caller.
    refresh_binding(id_, cpu, b);
    refresh_binding(other.id_, cpu, a);
    unlock_reader(b);
    unlock_reader(a);
  }
  signal_fence();
  // release: pairs with the acquire CAS in change_cpu_disable, which then
  // sees the S4 stores above and re-checks the slot.
  a->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_release);
  b->record_disabled.fetch_and(~CpuBuffer::kSwapping, std::memory_order_release);
  return ret;
}

int RingBuffer::reset_cpu(uint32_t cpu) {
  CpuBuffer* cb = cpu_buffer(cpu);
  if (!cb) return -EINVAL;
  CpuBuffer* locked = lock_reader(cpu);
  init_cpu_buffer(locked);
  unlock_reader(locked);
  return 0;
}

// ===========================================================================
// Iterator
// ===========================================================================

RingBuffer::Iterator::Iterator(RingBuffer& rb, uint32_t cpu) : rb_(rb), cpu_(cpu) {
  if (cpu >= rb.opts_.ncpus) {
    status_ = -EINVAL;
    return;
  }
  if (rb.opts_.mode == Mode::kOverwrite) {
    const int32_t me = rb.current_cpu();
    if (me == static_cast<int32_t>(cpu)) {
      CpuBuffer* cb = rb.cpu_buffer(cpu);
      if (cb->committing() != 0) {  // called from a handler mid-write
        status_ = -EBUSY;
        return;
      }
    } else {
      int32_t expected = 0;
      // acquire: pairs with the release in unbind_thread (see claim_cpu).
      if (!rb.owners_[cpu].compare_exchange_strong(expected, -1, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
        status_ = -EBUSY;
        return;
      }
      claimed_ = true;
    }
  }
  cb_ = rb.lock_reader(cpu);
  locked_ = true;
  BufferPage* rp = cb_->reader_page;
  on_reader_page_ = true;
  // acquire: pairs with set_commit_to_write's release of commit_page.
  stop_ = cb_->commit_page.load(std::memory_order_acquire);
  load_page(rp, cb_->reader_read, cb_->read_stamp);
}

RingBuffer::Iterator::~Iterator() {
  if (locked_) unlock_reader(cb_);
  // release: pairs with the acquire CAS in claim_cpu/bind_thread.
  if (claimed_) rb_.owners_[cpu_].store(0, std::memory_order_release);
}

bool RingBuffer::Iterator::load_page(BufferPage* bp, uint32_t from, uint64_t ts) {
  page_ = bp;
  const uint32_t commit = static_cast<uint32_t>(bp->commit_acquire() & kCommitMask);
  if (from > commit) from = commit;
  // From the start of a page the base time is the page's stamp, read after
  // the acquire above (the writer sets it before it commits the first event;
  // a page taken by the reader while empty has a stale read_stamp).
  if (from == 0 && commit != 0) ts = bp->page->time_stamp;
  walker_ = PageWalker(bp->page->data + from, commit - from, ts);
  return true;
}

bool RingBuffer::Iterator::next(PageEvent* ev) {
  if (status_ != 0) return false;
  for (;;) {
    if (walker_.next(ev)) return true;
    if (page_ == stop_) return false;
    BufferPage* nextp;
    if (on_reader_page_) {
      on_reader_page_ = false;
      nextp = rb_.find_head(cb_);
      if (!nextp) return false;
    } else {
      nextp = page_of(page_->next.load(std::memory_order_relaxed));
    }
    load_page(nextp, 0, 0);  // from 0: load_page takes the page's stamp
  }
}

// ===========================================================================
// Stats
// ===========================================================================

// W6, general. Only the outermost writer (committing == 1) moves the
// commit; writers it interrupted never run this concurrently with it: a
// handler sees committing >= 2 while we are in flight and leaves the
// commit to us. We leave (committing--) with a local cmpxchg that fails if
// any writer entered since we loaded the state, i.e. since our
// set_commit_to_write looked at the write position; then we look again.
// Unlike the kernel's loop there is no window with committing == 0 before
// a retry, so committing alone is the busy state (docs/DESIGN.md W6).
void detail::CpuBuffer::end_commit() {
  for (;;) {
    const uint64_t c = state.load();
    signal_fence();
    if (CpuBuffer::level_of(c) == 1) set_commit_to_write();
    signal_fence();
    if (RBTRACE_LIKELY(state.cmpxchg(c, c - 1) == c)) return;
  }
}

void detail::CpuBuffer::set_commit_to_write() {
  BufferPage* cp = commit_page.load(std::memory_order_relaxed);
  for (;;) {
    BufferPage* tp = tail_page.load(std::memory_order_relaxed);
    if (cp == tp) break;
    // The commit leaves cp: its events end at real_end (padding excluded).
    // release: publishes cp's events and header; pairs with the acquire in
    // BufferPage::commit_acquire (read_page, peek, Iterator).
    std::atomic_ref<uint64_t>(cp->page->commit).store(cp->real_end.load(),
                                                      std::memory_order_release);
    cp = page_of(cp->next.load(std::memory_order_relaxed));
    // release: the reader, seeing commit_page move, may take the old page
    // whole; pairs with the acquire loads of commit_page in
    // RingBuffer::get_reader_page and read_page.
    commit_page.store(cp, std::memory_order_release);
  }
  uint32_t idx = static_cast<uint32_t>(cp->write.load());
  uint32_t end = cp->real_end.load();
  if (idx > end) idx = end;
  // release: publishes the events below idx; pairs with
  // BufferPage::commit_acquire.
  std::atomic_ref<uint64_t>(cp->page->commit).store(idx, std::memory_order_release);
}

CpuStats detail::CpuBuffer::stats() const {
  CpuStats s;
  s.entries = entries.load();
  s.bytes = bytes.load();
  s.overrun = overrun.load();
  s.commit_overrun = commit_overrun.load();
  s.dropped = dropped.load();
  s.nested_dropped = nested_dropped.load();
  s.disabled = disabled.load();
  s.discarded = discarded.load();
  s.read = read.load(std::memory_order_relaxed);
  return s;
}

CpuStats RingBuffer::stats(uint32_t cpu) const {
  CpuBuffer* cb = cpu_buffer(cpu);
  return cb ? cb->stats() : CpuStats{};
}

}  // namespace rbtrace
