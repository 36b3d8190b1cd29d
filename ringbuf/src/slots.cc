// slots.cc - CPU slots and thread bindings: a thread's claim of a free slot
// on its first event (W0's cold half), bind/unbind, the thread-exit key that
// gives the slots back, fork(), and the registry and ids of live ring
// buffers. docs/DESIGN.md section 1 (CPU) and section 4 ("Threads: exit and
// fork").
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "rbtrace/library_thread.h"
#include "rbtrace/ring_buffer.h"
#include "ring_buffer_internal.h"

namespace rbtrace {

using namespace detail;

namespace detail {
constinit thread_local ThreadState tls_state __attribute__((tls_model("initial-exec"))) = {};
}  // namespace detail

namespace {

pthread_key_t exit_key;

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
  std::free(t.copy);
  t.copy = nullptr;
  t.copy_size = 0;
}

// fork(): only the forking thread exists in the child, under a new tid.
// Its slots move to that tid; every other thread's slots are freed and the
// CPU buffers emptied (after_fork_in_child). The registry lock is held
// across fork so the child finds the map consistent.
void fork_prepare() {
  forking.store(true, std::memory_order_seq_cst);  // pairs with swap_cpu
  while (swaps_in_flight.load(std::memory_order_seq_cst) != 0) sched_yield();
  registry_mutex().lock();
}
void fork_parent() {
  registry_mutex().unlock();
  // seq_cst: ends the Dekker pair with swap_cpu's load of `forking`; swaps
  // refused meanwhile are retried.
  forking.store(false, std::memory_order_seq_cst);
}
void fork_child() {
  forking.store(false, std::memory_order_relaxed);  // one thread here
  ThreadState& t = tls_state;
  const int32_t old_tid = t.tid;
  t.tid = static_cast<int32_t>(syscall(SYS_gettid));
  for (auto& [id, rb] : registry()) rb->after_fork_in_child(old_tid, t.tid);
  registry_mutex().unlock();
}

int32_t cached_tid() {
  ThreadState& t = tls_state;
  if (t.tid == 0) t.tid = static_cast<int32_t>(syscall(SYS_gettid));
  return t.tid;
}

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
bool maybe_alive(uint32_t id) {
  if (live_overflow.load(std::memory_order_relaxed)) return true;
  for (auto& slot : live_ids)
    if (slot.load(std::memory_order_relaxed) == id) return true;
  return false;
}

}  // namespace

// ---- registry of live ring buffers, for thread-exit cleanup ---------------
std::mutex& detail::registry_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<uint32_t, RingBuffer*>& detail::registry() {
  static std::unordered_map<uint32_t, RingBuffer*> r;
  return r;
}
pthread_once_t detail::exit_key_once = PTHREAD_ONCE_INIT;

unsigned char* detail::reader_copy_buffer(uint32_t size) {
  ThreadState& t = tls_state;
  if (t.copy_size >= size) return t.copy;
  auto* p = static_cast<unsigned char*>(std::malloc(size));
  if (!p) return nullptr;
  std::free(t.copy);
  t.copy = p;
  t.copy_size = size;
  if (!t.key_set && !t.exiting) {
    pthread_once(&exit_key_once, make_exit_key);
    pthread_setspecific(exit_key, &t);  // frees it at thread exit
    t.key_set = true;
  }
  return p;
}

void detail::make_exit_key() {
  pthread_key_create(&exit_key, release_thread_slots);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void detail::mark_live(uint32_t id) {
  for (auto& slot : live_ids) {
    uint32_t expected = 0;
    // relaxed: the id is published to this thread's own later claims by
    // program order; other threads only ever prune ids they bound to,
    // which were live (and recorded) when they bound.
    if (slot.compare_exchange_strong(expected, id, std::memory_order_relaxed)) return;
  }
  live_overflow.store(true, std::memory_order_relaxed);
}
void detail::mark_dead(uint32_t id) {
  for (auto& slot : live_ids) {
    uint32_t expected = id;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_relaxed)) return;
  }
}

// ===========================================================================
// CPU slots
// ===========================================================================

void RingBuffer::after_fork_in_child(int32_t old_tid, int32_t new_tid) {
  // relaxed throughout: the child has a single thread here.
  // No reader records the child's ring (a Consumer of the parent has no
  // threads here): a snapshot in the child hands nothing back.
  recorded_.store(false, std::memory_order_relaxed);
  const uint32_t n = nslots_.load(std::memory_order_relaxed);
  for (uint32_t c = 0; c < n; c++) {
    const int32_t o = owners_[c].load(std::memory_order_relaxed);
    const bool mine = o == old_tid && old_tid != 0;
    if (o != 0) owners_[c].store(mine ? new_tid : 0, std::memory_order_relaxed);
    CpuBuffer* cb = buffers_[c].load(std::memory_order_relaxed);
    // A slot another thread was mapping at the fork: the child maps it
    // when a thread claims it.
    // The hand-back state of a snapshot that another parent thread had under
    // way: its mutex may be held for ever, its holds never released, its
    // runs are the parent's pages. Made anew (the child's copies of the
    // run descriptors closed).
    HandBack& h = handback_[c];
    pthread_mutex_init(h.mu.native_handle(), nullptr);
    for (const HandBackRun& r : h.runs) close(r.fd);
    h.runs.clear();
    h.holds = 0;
    handback_on_[c].store(0, std::memory_order_relaxed);
    if (!cb) continue;
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
    slot_refused_[c].count.store(0);  // the parent's, as the counters
    slot_refused_[c].taken.store(0, std::memory_order_relaxed);
    init_cpu_buffer(cb);
    cb->state.store(0);
  }
}

int32_t RingBuffer::cpu_owner(uint32_t cpu) const {
  if (cpu >= limit_) return 0;
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

// Slow path of the first event of an unbound thread (C1..C4).
// Async-signal-safe: a CAS per slot, one gettid the first time, one prctl
// for the name, one mmap when the slot it takes has no memory yet.
int32_t RingBuffer::claim_cpu() {
  ThreadState& t = tls_state;
  if (RBTRACE_UNLIKELY(t.exiting)) {
    // Our slots were given back at thread exit; nothing would give back a
    // slot claimed now (a signal handler, or a later key destructor).
    no_cpu_.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  if (t.changing || t.library) {
    // A handler interrupted this thread's own claim, bind or unbind; or
    // rbtrace's own thread (start_library_thread), which takes no slot.
    no_cpu_.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  const int32_t tid = cached_tid();
  ChangingBindings changing;
  return claim_free_cpu(tid);
}

int32_t RingBuffer::claim_free_cpu(int32_t tid) {
  ThreadState& t = tls_state;
  // A handler that ran between our caller's look at the bindings and the
  // `changing` mark may have claimed a slot for this thread meanwhile.
  if (const int32_t mine = thread_cpu(id_); mine >= 0) return mine;
  for (bool reclaimed = false;; reclaimed = true) {
    for (;;) {
      const uint32_t n = ncpus();
      for (uint32_t c = 0; c < n; c++) {
        int32_t expected = 0;
        // acq_rel: acquire pairs with the release store in unbind_thread, so
        // the new owner sees the previous owner's writer-side state; release
        // is not needed by anyone but keeps the pair symmetric for
        // bind_thread.
        if (owners_[c].load(std::memory_order_relaxed) == 0 &&
            owners_[c].compare_exchange_strong(expected, tid, std::memory_order_acq_rel,
                                               std::memory_order_relaxed)) {
          // C2: the slot's buffer, mapped now if the slot has none yet (the
          // one claim that maps memory).
          CpuBuffer* cb = slot_buffer(c);
          if (!cb || add_binding(*this, static_cast<int32_t>(c), cb) != 0) {
            owners_[c].store(0, std::memory_order_release);  // pairs as above
            no_cpu_.fetch_add(1, std::memory_order_relaxed);
            return -1;
          }
          record_thread_name(tid);
          return static_cast<int32_t>(c);
        }
      }
      // Every slot made so far is owned: make the next one, if the limit
      // allows. A claimer that loses the CAS found the slot made by another
      // claimer: either way, look again (a claimer that finds the slot it
      // made taken makes one more, until the limit).
      if (n >= limit_) break;
      // Every 64th slot made, first take back the slots of threads that no
      // longer exist (see C4): a slot leaked that way would otherwise cost
      // a new mapped slot each, up to the limit. Bounds the leak to 64
      // slots for a tgkill per slot every 64 slots made.
      if (!reclaimed && n % 64 == 0 && n > opts_.ncpus) {
        reclaimed = true;
        if (reclaim_dead_slots() != 0) continue;
      }
      uint32_t expected = n;
      // acq_rel: release pairs with the acquire load in ncpus() (a reader
      // that sees the count sees the slot's bookkeeping, set up by create);
      // acquire orders our next look after whoever made the slot before us.
      nslots_.compare_exchange_strong(expected, n + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire);
      // relaxed: only tests set it.
      if (TestHook h = test_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h))
        h(TestHookPoint::kClaimGrown, *this, n);
    }
    // C4: the limit is reached and no slot is free. The first time, and
    // every 64th, take back the slots of threads that no longer exist (a
    // thread whose first event came from a signal handler after its
    // thread-specific data was destroyed claims a slot that its exit never
    // gives back), then look again. Rationed: each look costs a tgkill per
    // slot.
    if (reclaimed || (t.claim_failures++ & 63) != 0 || reclaim_dead_slots() == 0) break;
  }
  no_cpu_.fetch_add(1, std::memory_order_relaxed);
  return -1;
}

uint32_t RingBuffer::reclaim_dead_slots() {
  uint32_t n = 0;
  const uint32_t slots = ncpus();
  for (uint32_t c = 0; c < slots; c++) {
    int32_t o = owners_[c].load(std::memory_order_relaxed);
    if (o <= 0 || !thread_gone(o)) continue;
    // The owner exited (its tid is free; a reused tid is a live thread and
    // keeps the slot). Its writes finished before it exited: the kernel's
    // exit and our tgkill's lookup of the tid order them before us. A
    // buffer left busy (the thread died inside a write) is not taken.
    const CpuBuffer* cb = cpu_buffer(c);
    if (cb && cb->committing() != 0) continue;
    // acquire: as in claim_cpu; the slot becomes free, then claimable.
    if (owners_[c].compare_exchange_strong(o, 0, std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
      n++;
  }
  return n;
}

int RingBuffer::bind_thread(uint32_t cpu) {
  if (cpu >= limit_) return -EINVAL;
  // As in claim_cpu: not after exit, not inside another change of ours,
  // not on a thread of rbtrace's own.
  if (tls_state.exiting || tls_state.changing || tls_state.library) return -EBUSY;
  const int32_t tid = cached_tid();
  grow_slots_to(cpu + 1);  // a slot beyond those made so far is made
  ChangingBindings changing;
  int32_t cur = thread_cpu(id_);
  if (cur == static_cast<int32_t>(cpu)) return 0;
  int32_t expected = 0;
  // acq_rel: acquire pairs with the release in unbind_thread (see claim_cpu).
  if (!owners_[cpu].compare_exchange_strong(expected, tid, std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
    return -EBUSY;
  CpuBuffer* const cb = slot_buffer(cpu);  // mapped now if it is new
  if (!cb) {
    // release: pairs with the acquire CAS in claim_cpu/bind_thread.
    owners_[cpu].store(0, std::memory_order_release);
    return -ENOMEM;
  }
  record_thread_name(tid);  // moving or not, the name may have changed
  if (cur >= 0) {
    // Moving from another slot: give that one back first.
    ThreadState& t = tls_state;
    for (int i = 0; i < t.count; i++) {
      if (t.bindings[i].rb_id == id_) {
        // A handler sees no binding for this buffer while the entry is
        // rewritten (W0 matches on rb_id), and the doorbell answers "not
        // owner" while we are `changing` (swap.cc), so no swap refreshes
        // the entry under us. relaxed: the slot is ours, see the CAS above.
        t.bindings[i].rb_id = 0;
        signal_fence();
        t.bindings[i].cb = cb;
        t.bindings[i].cpu = static_cast<int32_t>(cpu);
        signal_fence();
        t.bindings[i].rb_id = id_;
        // release: publishes this thread's writes to the old slot to its
        // next owner; pairs with the acquire CAS in claim_cpu/bind_thread.
        owners_[cur].store(0, std::memory_order_release);
        return 0;
      }
    }
  }
  int rc = add_binding(*this, static_cast<int32_t>(cpu), cb);
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

// ===========================================================================
// Thread names at claim
// ===========================================================================
//
// A table of kThreadNames records, each a seqlock (NameRecord): record n
// lives in entry n % kThreadNames, its `seq` is 2n+1 while it is written
// and 2n+2 once complete. Writers are claims (any thread, a signal handler
// included: a system call and atomic stores, no lock, no allocation);
// readers are the consumer and the snapshot, each with its own cursor.

void RingBuffer::record_thread_name(int32_t tid) {
  char name[16] = {};
  if (prctl(PR_GET_NAME, name) != 0) name[0] = '\0';  // async-signal-safe
  name[15] = '\0';
  // relaxed: the number only picks the record; its seq orders the rest.
  const uint64_t n = names_head_.fetch_add(1, std::memory_order_relaxed);
  NameRecord& r = names_[n % kThreadNames];
  r.seq.store(2 * n + 1, std::memory_order_relaxed);
  // release (each word): orders the odd seq before it; pairs with the
  // reader's acquire load of the word, so a reader that read a new word
  // sees seq moved on in its second load. (Release stores rather than a
  // release fence: ThreadSanitizer does not model fences.)
  r.tid.store(tid, std::memory_order_release);
  uint64_t w[2];
  std::memcpy(w, name, sizeof w);
  // release: as tid's; each pairs with its acquire load in read_thread_names.
  r.comm[0].store(w[0], std::memory_order_release);
  // release: pairs with the acquire load of comm[1] in read_thread_names.
  r.comm[1].store(w[1], std::memory_order_release);
  // release: the words are complete; pairs with the acquire load of seq
  // in read_thread_names.
  r.seq.store(2 * n + 2, std::memory_order_release);
}

uint64_t RingBuffer::read_thread_names(uint64_t* cursor, std::vector<ThreadName>* out) const {
  if (!names_) return 0;
  // relaxed: only a bound; each record's seq says whether it is there.
  const uint64_t head = names_head_.load(std::memory_order_relaxed);
  uint64_t n = *cursor, lost = 0;
  if (head > kThreadNames && n < head - kThreadNames) {
    lost += head - kThreadNames - n;  // overwritten before this reader came
    n = head - kThreadNames;
  }
  for (; n < head; n++) {
    const NameRecord& r = names_[n % kThreadNames];
    const uint64_t want = 2 * n + 2;
    // acquire: pairs with the release store of seq in record_thread_name.
    const uint64_t s1 = r.seq.load(std::memory_order_acquire);
    // acquire (each word): pairs with the release store of that word in
    // record_thread_name; keeps the second load of seq after the words.
    ThreadName t;
    t.tid = r.tid.load(std::memory_order_acquire);
    // acquire: pairs with the release stores of comm[0] and comm[1] in
    // record_thread_name (as tid's above).
    const uint64_t w[2] = {r.comm[0].load(std::memory_order_acquire),
                           r.comm[1].load(std::memory_order_acquire)};
    const uint64_t s2 = r.seq.load(std::memory_order_relaxed);
    if (s1 == want && s2 == want) {
      std::memcpy(t.comm, w, sizeof t.comm);
      t.comm[15] = '\0';
      out->push_back(t);
      continue;
    }
    if (s1 > want || s2 > want) {  // a later record took the entry
      lost++;
      continue;
    }
    // Still being written. Wait for it (the next call), unless its writer
    // has had half a table's worth of time (it died in the middle).
    if (head - n > kThreadNames / 2) {
      lost++;
      continue;
    }
    break;
  }
  *cursor = n;
  return lost;
}

// ===========================================================================
// Threads of rbtrace's own
// ===========================================================================

std::thread start_library_thread(const char* name, std::function<void()> fn) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  struct Restore {
    sigset_t* old;
    ~Restore() { pthread_sigmask(SIG_SETMASK, old, nullptr); }
  } restore{&old};
  std::string n(name ? name : "rbtrace");
  if (n.size() > 15) n.resize(15);  // the kernel's TASK_COMM_LEN - 1
  std::thread t([n, fn = std::move(fn)] {
    // Before anything of `fn` runs: no handler can run here (every signal
    // is blocked), so no claim can come before this store.
    tls_state.library = true;
    pthread_setname_np(pthread_self(), n.c_str());  // named before fn runs
    fn();
  });
  // And by the creator too, so the name is there when this returns.
  pthread_setname_np(t.native_handle(), n.c_str());
  return t;
}

bool is_library_thread() { return tls_state.library; }

}  // namespace rbtrace
