// swap.cc - S1 and S5 of the snapshot protocol: marshalling
// RingBuffer::swap_cpu (S2..S4) onto the CPU's owner thread through a
// per-CPU mailbox and a real-time signal doorbell. See rbtrace/swap.h and
// docs/DESIGN.md section 7.
//
// A request's life (one Request record per mailbox; requesters of one CPU
// are serialized by the mailbox's `requesters` mutex):
//
//   requester                              owner's doorbell handler
//   ---------                              ------------------------
//   fill live/spare/cpu
//   state = gen|PENDING  (release)  --.
//   rt_tgsigqueueinfo(owner)           `-> for each CPU this thread owns:
//                                            st = state; PENDING? then
//                                            CAS st -> gen|RUNNING (acquire)
//                                          check: this thread owns cpu in live
//                                          result = live.swap_cpu(spare, cpu)
//   wait (futex) for gen|DONE  <--------   state = gen|DONE (release), futex wake
//   (acquire) read result
//
// There is no queue of requests: the state word is the whole mailbox. The
// handler takes whatever request is PENDING in the record of each CPU its
// thread owns, whichever signal woke it.
//
// Withdrawal (timeout, or the owner changed): the requester CASes
// gen|PENDING -> gen|WITHDRAWN. Exactly one of that CAS and the handler's
// CAS wins: both CAS away from the same word value, and only they move a
// state out of PENDING. If the handler won, the requester waits for DONE
// (the swap is bounded: swap_cpu never waits). If the requester won, a
// handler that runs later (the late doorbell) finds WITHDRAWN, DONE or a
// newer request's PENDING: it never acts on the withdrawn request. What it
// decides on is the word it CASes and nothing read before: the record's
// fields are read only after a successful CAS, which reads from the release
// store of the PENDING it replaces, so they are that request's, and that
// request's requester is still waiting for it (it neither withdrew nor got
// an answer: either would have moved the word).
//
// fork(): in the child only the forking thread exists; a requester of
// another thread may have held a mailbox's lock with a request PENDING. The
// atfork child handler (after_fork_in_child) gives every mailbox and the
// registry fresh locks and an idle state.
#include "rbtrace/swap.h"

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

namespace rbtrace {
namespace {

// Request::state: bits 8..31 the request's generation, bits 0..7 the phase.
constexpr uint32_t kIdle = 0;  // no request yet (or reset in a forked child)
constexpr uint32_t kPending = 1;
constexpr uint32_t kRunning = 2;
constexpr uint32_t kDone = 3;
constexpr uint32_t kWithdrawn = 4;
constexpr uint32_t kGenMask = 0xffffff;
constexpr uint32_t state_of(uint32_t gen, uint32_t phase) { return (gen << 8) | phase; }
constexpr uint32_t phase_of(uint32_t st) { return st & 0xff; }
constexpr uint32_t gen_of(uint32_t st) { return st >> 8; }

// The handler's answer when the thread it runs on no longer owns the CPU
// (ownership moved between the requester's look at owners_ and delivery).
// Positive, so it can never be mistaken for a swap_cpu result.
constexpr int kNotOwner = 1;

constexpr int kDoorbellCookie = 0x52425357;  // "RBSW" in si_value
constexpr size_t kMaxEntries = 256;          // live buffers with mailboxes

struct Request {
  // The futex word. Written by the requester (PENDING, WITHDRAWN) and the
  // handler (RUNNING, DONE); see the top of this file.
  std::atomic<uint32_t> state{0};
  uint32_t gen = 0;  // requester-only
  // Written by the requester before the release store of PENDING, read by
  // the handler after its acquire CAS.
  RingBuffer* live = nullptr;
  RingBuffer* spare = nullptr;
  uint32_t cpu = 0;
  // Written by the handler before the release store of DONE.
  int result = 0;
};

struct CpuMailbox {
  Request req;
  // One requester per CPU at a time. A plain mutex taken with try_lock and
  // a sleep: ThreadSanitizer does not see pthread_mutex_clocklock, which
  // std::timed_mutex uses.
  std::mutex requesters;
  // The owner last found to block the doorbell for good (three looks 100 us
  // apart): its next requests look once. The owner that answered the last
  // doorbell: its next request does not look (a /proc read, ~20 us). Under
  // `requesters`.
  int32_t blocking_owner = 0;
  int32_t answering_owner = 0;
  // The thread a doorbell was sent to for this CPU that no handler run has
  // taken yet (0: none). A request for that same thread sends no new one:
  // the pending doorbell serves it when it is delivered (the handler
  // serves every mailbox of the thread's CPUs). So at most one doorbell
  // per mailbox is ever pending: an owner that blocks the signal for good
  // does not pile up queued signals (SigQ), one per timed-out request.
  std::atomic<int32_t> rung{0};
};

// The mailboxes of one live RingBuffer. Never freed: a doorbell handler may
// read an entry at any time. swap_release_mailboxes makes it reusable.
struct Entry {
  std::atomic<uint32_t> rb_id{0};  // RingBuffer::id(), 0 when free
  uint32_t ncpus = 0;
  std::unique_ptr<CpuMailbox[]> boxes;
};

std::mutex g_registry_mu;  // requesters only (and the fork child handler)
std::atomic<Entry*> g_entries[kMaxEntries];
std::atomic<size_t> g_nentries{0};

std::mutex g_install_mu;
std::atomic<int> g_signo{0};
struct sigaction g_old_action;  // written before our handler is installed

long futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* ts) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, ts, nullptr, 0);
}

// Runs on the owner thread, in the doorbell handler (every signal blocked):
// takes the request PENDING in `r`, if any, and answers it.
void serve(Request& r) {
  // Only a filter, the CAS decides. A doorbell is sent after the store of
  // its PENDING, and the kernel's signal delivery (the signal queue's
  // lock) orders the handler it causes after the send, so that handler's
  // load sees the PENDING (or a later state).
  // seq_cst: the second half of a Dekker pair with post_request (its
  // seq_cst store of PENDING, then its load of `rung`), after the
  // handler's seq_cst clearing of `rung`: either this load sees the
  // PENDING, or the requester sees `rung` cleared and rings again.
  uint32_t st = r.state.load(std::memory_order_seq_cst);
  if (phase_of(st) != kPending) return;  // idle, running, done or withdrawn
  const uint32_t gen = gen_of(st);
  // acquire: pairs with the release store of PENDING in post_request; the
  // request's live/spare/cpu are visible. Fails if the requester withdrew
  // meanwhile (or withdrew and posted anew: that request has its own
  // doorbell): then the handler does nothing.
  if (!r.state.compare_exchange_strong(st, state_of(gen, kRunning), std::memory_order_acquire,
                                       std::memory_order_relaxed))
    return;
  int rc;
  // A thread in the middle of changing its bindings (bind_thread moving it
  // from one slot to another, unbind, exit) is not a stable owner: a swap
  // run now would refresh an entry the interrupted change is rewriting.
  // The requester looks again.
  if (detail::tls_state.changing || r.live->current_cpu() != static_cast<int>(r.cpu))
    rc = kNotOwner;  // not (or no longer) the owner: the requester re-routes
  else
    rc = r.live->swap_cpu(*r.spare, r.cpu);  // S2..S4
  r.result = rc;
  // release: publishes result and the swap's stores; pairs with the acquire
  // loads in post_request and wait_done.
  r.state.store(state_of(gen, kDone), std::memory_order_release);
  futex(&r.state, FUTEX_WAKE_PRIVATE, 1, nullptr);
}

void chain(int sig, siginfo_t* si, void* ctx) {
  const struct sigaction& old = g_old_action;
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction) old.sa_sigaction(sig, si, ctx);
  } else if (old.sa_handler != SIG_IGN && old.sa_handler != SIG_DFL) {
    old.sa_handler(sig);
  }
}

// The doorbell. Installed with a full sa_mask: nothing interrupts it, so the
// swap it runs is atomic with respect to every writer of the owner's CPUs.
void doorbell_handler(int sig, siginfo_t* si, void* ctx) {
  const int saved_errno = errno;
  const bool ours = si != nullptr && si->si_code == SI_QUEUE &&
                    si->si_value.sival_int == kDoorbellCookie && si->si_pid == getpid();
  // Serve every mailbox of a CPU this thread owns, whichever signal got us
  // here: doorbells may merge with the application's signals or each other.
  // acquire: pairs with the release stores in mailbox_for (entry published).
  const size_t n = g_nentries.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; i++) {
    Entry* e = g_entries[i].load(std::memory_order_acquire);  // as above
    if (!e) continue;
    // relaxed: a stale id (the entry was just released or reused) only
    // makes us find no CPU, or take a request of the buffer now using the
    // entry: serve re-checks ownership (kNotOwner: the requester re-routes).
    const uint32_t id = e->rb_id.load(std::memory_order_relaxed);
    if (id == 0) continue;
    const int32_t cpu = detail::thread_cpu(id);
    if (cpu < 0 || static_cast<uint32_t>(cpu) >= e->ncpus) continue;
    // seq_cst: this doorbell is taken, before we look at the request (the
    // Dekker pair with post_request, see serve).
    e->boxes[cpu].rung.store(0, std::memory_order_seq_cst);
    serve(e->boxes[cpu].req);
  }
  if (!ours) chain(sig, si, ctx);
  errno = saved_errno;
}

// pthread_atfork child handler: only the forking thread exists, outside any
// of this file's code (swap_cpu_marshalled and install_swap_doorbell are not
// for signal handlers, and the doorbell handler can fork only through the
// chained application handler, after it is done with the records). A lock held
// by another parent thread would never be released, and its request would
// never be answered (ringbuf's own atfork handler frees that thread's slots):
// every lock is made anew, every request record idle. No signal is pending
// in a child, so no late doorbell looks at the records. An entry the
// registry was building at the fork is not published (g_nentries) and is
// forgotten; `gen` keeps counting.
void after_fork_in_child() {
  pthread_mutex_init(g_registry_mu.native_handle(), nullptr);
  pthread_mutex_init(g_install_mu.native_handle(), nullptr);
  const size_t n = g_nentries.load(std::memory_order_relaxed);  // no other thread
  for (size_t i = 0; i < n; i++) {
    Entry* e = g_entries[i].load(std::memory_order_relaxed);
    for (uint32_t c = 0; c < e->ncpus; c++) {
      pthread_mutex_init(e->boxes[c].requesters.native_handle(), nullptr);
      e->boxes[c].req.state.store(state_of(e->boxes[c].req.gen, kIdle),
                                  std::memory_order_relaxed);
      e->boxes[c].rung.store(0, std::memory_order_relaxed);  // no signal is pending in a child
    }
  }
}

// Registers after_fork_in_child, once: before the first mailbox or doorbell
// exists, so every lock it resets is covered.
void register_fork_handler() {
  static const bool registered = pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0;
  (void)registered;
}

Entry* mailbox_for(const RingBuffer& live) {
  register_fork_handler();
  std::lock_guard<std::mutex> g(g_registry_mu);
  const size_t n = g_nentries.load(std::memory_order_relaxed);  // written under the mutex
  Entry* free_fit = nullptr;
  for (size_t i = 0; i < n; i++) {
    Entry* e = g_entries[i].load(std::memory_order_relaxed);  // written under the mutex
    if (e->rb_id.load(std::memory_order_relaxed) == live.id()) return e;
    if (!free_fit && e->rb_id.load(std::memory_order_relaxed) == 0 && e->ncpus >= live.max_cpus())
      free_fit = e;
  }
  if (free_fit) {
    for (uint32_t c = 0; c < free_fit->ncpus; c++) {  // another ring's owners
      free_fit->boxes[c].blocking_owner = 0;
      free_fit->boxes[c].answering_owner = 0;
      free_fit->boxes[c].rung.store(0, std::memory_order_relaxed);  // under the registry mutex
    }
    free_fit->rb_id.store(live.id(), std::memory_order_relaxed);  // see doorbell_handler
    return free_fit;
  }
  if (n == kMaxEntries) return nullptr;
  std::unique_ptr<Entry> e(new (std::nothrow) Entry);
  if (!e) return nullptr;
  // A mailbox per slot the ring may ever make (its limit): the handler
  // indexes them without a lock.
  e->ncpus = live.max_cpus();
  e->boxes.reset(new (std::nothrow) CpuMailbox[live.max_cpus()]);
  if (!e->boxes) return nullptr;
  e->rb_id.store(live.id(), std::memory_order_relaxed);
  // release (both): the handler, loading them with acquire, sees the entry
  // fully built.
  g_entries[n].store(e.release(), std::memory_order_release);
  g_nentries.store(n + 1, std::memory_order_release);
  return g_entries[n].load(std::memory_order_relaxed);
}

// Runs S2..S4 on the calling thread with every signal blocked.
int swap_here(RingBuffer& live, RingBuffer& spare, uint32_t cpu, bool remote = false) {
  // Every signal blocked: a handler of this thread that reads or disables
  // the CPU would spin on the reader lock or kSwapping we hold.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const int rc = remote ? live.swap_cpu_remote(spare, cpu) : live.swap_cpu(spare, cpu);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return rc;
}

using SteadyClock = std::chrono::steady_clock;

// Withdraws request `gen`. True if withdrawn; false if the handler has it
// (RUNNING or DONE): the caller must wait for DONE then.
bool withdraw(Request& r, uint32_t gen) {
  uint32_t expected = state_of(gen, kPending);
  // relaxed: on success no handler will read the request (its CAS fails);
  // on failure we read nothing before the acquire load of DONE.
  return r.state.compare_exchange_strong(expected, state_of(gen, kWithdrawn),
                                         std::memory_order_relaxed, std::memory_order_relaxed);
}

// Waits for DONE of a request the handler has taken (bounded: swap_cpu
// never waits). Returns its result.
int wait_done(Request& r, uint32_t gen) {
  for (;;) {
    // acquire: pairs with the release store of DONE in serve.
    const uint32_t st = r.state.load(std::memory_order_acquire);
    if (st == state_of(gen, kDone)) return r.result;
    timespec ts{0, 1000000};
    futex(&r.state, FUTEX_WAIT_PRIVATE, st, &ts);
  }
}

// Whether bit `signo` is set in the mask on the line `key` of thread
// `tid`'s /proc status (SigBlk: blocked; SigPnd: pending for the thread).
bool status_mask_has(int32_t tid, const char* key, int signo) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/status", static_cast<int>(tid));
  FILE* f = std::fopen(path, "re");
  if (!f) return false;
  char line[256];
  bool set = false;
  const size_t klen = std::strlen(key);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, klen) != 0) continue;
    const unsigned long long mask = std::strtoull(line + klen, nullptr, 16);
    set = signo >= 1 && signo <= 64 && ((mask >> (signo - 1)) & 1);
    break;
  }
  std::fclose(f);
  return set;
}

// True if thread `tid` of this process blocks signal `signo` (SigBlk in
// /proc/self/task/TID/status); false if that cannot be read.
bool blocks_signal(int32_t tid, int signo) { return status_mask_has(tid, "SigBlk:", signo); }

// One marshalled attempt to the owner thread `owner`.
int post_request(Entry* e, RingBuffer& live, RingBuffer& spare, uint32_t cpu, int32_t owner,
                 SteadyClock::time_point deadline, SwapTrace& t) {
  CpuMailbox& mb = e->boxes[cpu];
  Request& r = mb.req;
  const uint32_t gen = r.gen = (r.gen + 1) & kGenMask;
  r.live = &live;
  r.spare = &spare;
  r.cpu = cpu;
  r.result = 0;
  // seq_cst (a release and more): publishes the fields above, pairing with
  // the acquire CAS in serve; and the first half of the Dekker pair on
  // `rung` (see serve). The previous request is over (DONE seen, or
  // withdrawn): no handler reads the fields while we write them.
  r.state.store(state_of(gen, kPending), std::memory_order_seq_cst);
  siginfo_t si{};
  si.si_signo = g_signo.load(std::memory_order_relaxed);  // set before any request
  si.si_code = SI_QUEUE;
  si.si_pid = getpid();
  si.si_uid = getuid();
  si.si_value.sival_int = kDoorbellCookie;
  t.attempts++;
  // seq_cst: the Dekker pair with the handler's clearing (see serve). A
  // doorbell to this owner still pending serves this request: none sent.
  // "Still pending" is asked of /proc too (SigPnd), since a doorbell can
  // be used up without clearing `rung`: its handler ran while the thread
  // owned no CPU of ours, or the thread took it with sigwait. (Under an
  // emulator /proc shows the host thread: then we ring.)
  if (mb.rung.load(std::memory_order_seq_cst) == owner &&
      status_mask_has(owner, "SigPnd:", si.si_signo)) {
    t.doorbells_pending++;
  } else {
    // seq_cst: as above (the handler that takes this doorbell clears it).
    mb.rung.store(owner, std::memory_order_seq_cst);
    t.signals++;
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), owner, si.si_signo, &si) != 0) {
      const int err = errno;
      // seq_cst: as above; nothing was sent, so nothing is pending.
      mb.rung.store(0, std::memory_order_seq_cst);
      if (!withdraw(r, gen)) return wait_done(r, gen);
      // ESRCH: the owner is gone (it will have unbound); EAGAIN: the queued
      // signal limit. Both: look again after a pause.
      return err == ESRCH ? kNotOwner : -EBUSY;
    }
  }
  for (;;) {
    // acquire: pairs with the release store of DONE in serve.
    const uint32_t st = r.state.load(std::memory_order_acquire);
    if (st == state_of(gen, kDone)) return r.result;
    const auto now = SteadyClock::now();
    if (phase_of(st) == kPending) {
      if (now >= deadline) return withdraw(r, gen) ? -ETIMEDOUT : wait_done(r, gen);
      if (live.cpu_owner(cpu) != owner) {  // the owner left: re-route
        if (!withdraw(r, gen)) return wait_done(r, gen);
        int32_t expected = owner;
        // seq_cst: as the other accesses of `rung` (see serve). Its
        // doorbell, if any, finds no CPU of ours on that thread.
        mb.rung.compare_exchange_strong(expected, 0, std::memory_order_seq_cst);
        return kNotOwner;
      }
    }
    // Sleep until the handler's wake, at most 10 ms (to re-check the owner).
    const auto left = std::min<SteadyClock::duration>(deadline - now, std::chrono::milliseconds(10));
    const auto ns = std::max<int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(left).count(), 1000);
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    futex(&r.state, FUTEX_WAIT_PRIVATE, st, &ts);
  }
}

}  // namespace

int install_swap_doorbell(int signo) {
  if (signo == 0) signo = SIGRTMIN + kDefaultDoorbellOffset;
  if (!((signo >= SIGRTMIN && signo <= SIGRTMAX) || signo == SIGUSR1 || signo == SIGUSR2))
    return -EINVAL;
  register_fork_handler();
  std::lock_guard<std::mutex> g(g_install_mu);
  const int cur = g_signo.load(std::memory_order_relaxed);  // written under the mutex
  if (cur != 0) return cur == signo ? 0 : -EBUSY;
  struct sigaction sa {};
  sa.sa_sigaction = doorbell_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigfillset(&sa.sa_mask);  // nothing may interrupt the swap
  // The action to chain is saved before ours is in place, so a handler never
  // sees it half written. If it is our own handler already (a forked child
  // of a parent that was installing at the fork), the one saved then stays:
  // never chain to ourselves.
  struct sigaction old {};
  if (sigaction(signo, nullptr, &old) != 0) return -errno;
  if (!((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == doorbell_handler)) g_old_action = old;
  if (sigaction(signo, &sa, nullptr) != 0) return -errno;
  g_signo.store(signo, std::memory_order_relaxed);  // requesters read it after install
  return 0;
}

int swap_doorbell_signal() { return g_signo.load(std::memory_order_relaxed); }

namespace {
// Whether the doorbell's signal still has our handler: an application may
// have replaced it since (sigaction, signal). A doorbell sent then would
// kill the process (SIG_DFL of a real-time signal), be dropped (SIG_IGN)
// or reach the application's handler.
bool doorbell_is_ours(int signo) {
  struct sigaction cur {};
  if (sigaction(signo, nullptr, &cur) != 0) return false;
  return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == doorbell_handler;
}
}  // namespace

void swap_release_mailboxes(const RingBuffer& live) {
  std::lock_guard<std::mutex> g(g_registry_mu);
  const size_t n = g_nentries.load(std::memory_order_relaxed);  // under the mutex
  for (size_t i = 0; i < n; i++) {
    Entry* e = g_entries[i].load(std::memory_order_relaxed);
    if (e->rb_id.load(std::memory_order_relaxed) == live.id())
      e->rb_id.store(0, std::memory_order_relaxed);  // see doorbell_handler
  }
}

// -EBUSY answers retried at once before the exponential backoff (S5).
constexpr uint32_t kImmediateRetries = 32;
// After a doorbell timed out: how long the swap without a signal is retried.
constexpr auto kRemoteGrace = std::chrono::milliseconds(20);

int swap_cpu_marshalled(RingBuffer& live, RingBuffer& spare, uint32_t cpu,
                        std::chrono::milliseconds timeout, SwapTrace* trace, SwapPath path) {
  SwapTrace local;
  SwapTrace& t = trace ? *trace : local;
  t = SwapTrace{};
  // S2's first check, early: the CPU indexes the mailboxes.
  if (cpu >= live.ncpus() || &live == &spare) return -EINVAL;
  // The spare grows on the requester's side: a slot the live ring made on
  // demand gets its counterpart (mapped) here, never in the owner's handler.
  if (cpu >= spare.max_cpus()) return -EINVAL;
  if (const int rc = spare.reserve_cpus(cpu + 1); rc != 0) return rc;
  if (g_signo.load(std::memory_order_relaxed) == 0) {
    const int rc = install_swap_doorbell(0);
    if (rc != 0 && rc != -EBUSY) return rc;
  }
  Entry* e = mailbox_for(live);
  if (!e) return -ENOMEM;
  auto deadline = SteadyClock::now() + timeout;
  std::unique_lock<std::mutex> lk(e->boxes[cpu].requesters, std::defer_lock);
  while (!lk.try_lock()) {
    if (SteadyClock::now() >= deadline) return -ETIMEDOUT;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  auto backoff = std::chrono::microseconds(20);
  bool remote = false;       // swap without a signal from now on
  int32_t looked_at = 0;     // the owner whose signal mask was read
  for (;;) {
    int rc;
    const int32_t owner = live.cpu_owner(cpu);
    if (live.current_cpu() == static_cast<int>(cpu)) {
      // The requester is the owner: in place, every signal blocked.
      t.attempts++;
      t.in_place++;
      rc = swap_here(live, spare, cpu);
    } else if (owner == 0) {
      // No owner: claim the slot for the duration, so no writer can start.
      if (live.claim_cpu_for(cpu) == 0) {
        t.attempts++;
        t.in_place++;
        rc = swap_here(live, spare, cpu);
        live.release_cpu_for(cpu);
      } else {
        rc = kNotOwner;  // someone took it meanwhile: look again
      }
    } else if (owner < 0) {
      rc = -EBUSY;  // claimed by an Iterator or another claim_cpu_for
    } else {
      t.owner = owner;
      if (!remote && !doorbell_is_ours(g_signo.load(std::memory_order_relaxed))) {
        // The application replaced the doorbell's handler: never send it.
        if (path != SwapPath::kAuto || RingBuffer::membarrier_status() != 0) return -ENOSYS;
        remote = true;
      }
      if (path == SwapPath::kAuto && !remote && owner != looked_at &&
          owner != e->boxes[cpu].answering_owner) {
        looked_at = owner;
        // Blocked at three looks 100 us apart (one, for an owner found
        // blocking before): not just the end of a doorbell handler that
        // answered the last request (its mask is full while it runs), which
        // a marshalled swap serves without a refused event.
        const int signo = g_signo.load(std::memory_order_relaxed);
        int32_t& known = e->boxes[cpu].blocking_owner;
        remote = blocks_signal(owner, signo);
        for (int look = 0; remote && known != owner && look < 2; look++) {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
          remote = blocks_signal(owner, signo);
        }
        known = remote ? owner : 0;
        if (remote && RingBuffer::membarrier_status() != 0) return -ENOSYS;
      }
      if (remote) {
        t.attempts++;
        t.remote++;
        rc = swap_here(live, spare, cpu, /*remote=*/true);
      } else {
        rc = post_request(e, live, spare, cpu, owner, deadline, t);
        e->boxes[cpu].answering_owner = rc == -ETIMEDOUT || rc == kNotOwner ? 0 : owner;
        if (rc == -ETIMEDOUT && path == SwapPath::kAuto) {
          // The owner did not answer (the signal ignored, or not delivered
          // in time): go on without a signal for a little longer.
          if (RingBuffer::membarrier_status() != 0) return -ETIMEDOUT;
          remote = true;
          deadline = SteadyClock::now() + kRemoteGrace;
          continue;
        }
      }
    }
    if (rc == kNotOwner) {
      t.not_owner++;
      if (SteadyClock::now() >= deadline) return -ETIMEDOUT;
      std::this_thread::yield();
      continue;
    }
    if (rc != -EBUSY) return rc;
    if (remote && SteadyClock::now() >= deadline) return t.signals ? -ETIMEDOUT : -EBUSY;
    // S5: busy (a writer inside W2..W6, or a reader): retry. A writer is
    // busy for tens of nanoseconds at a time, and a round trip takes
    // microseconds, so the first retries go straight back: an owner writing
    // flat out is inside W2..W6 most of the time, and a sleep, however
    // short, costs the timer slack (50 us by default) each time. After
    // kImmediateRetries, back off exponentially (a reader holding the lock
    // for long, an owner stuck in a handler).
    t.busy++;
    if (t.busy <= kImmediateRetries) {
      if (SteadyClock::now() >= deadline) return -EBUSY;
      std::this_thread::yield();
      continue;
    }
    if (SteadyClock::now() + backoff >= deadline) return -EBUSY;
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::microseconds>(backoff * 2, std::chrono::milliseconds(5));
  }
}

}  // namespace rbtrace
