// Unit tests of CPU slots: claiming on first write, giving back at thread
// exit, explicit bind/unbind, refusal when no slot is free, and reuse (so
// that memory stays bounded however many threads come and go). Threads run
// in lock step (atomic steps), so every test is deterministic.
#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <tuple>
#include <memory>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

int32_t my_tid() { return static_cast<int32_t>(syscall(SYS_gettid)); }

// A ring of 2-page CPUs: `ncpus` made at create, up to `max_cpus`, within
// `budget` bytes (0: no budget).
std::unique_ptr<RingBuffer> make_growing(uint32_t ncpus, uint32_t max_cpus, uint64_t budget = 0) {
  Options o;
  o.ncpus = ncpus;
  o.max_cpus = max_cpus;
  o.max_buffer_bytes = budget;
  o.page_size = 4096;
  o.pages_per_cpu = 2;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  EXPECT_TRUE(rb) << err.message;
  return rb;
}

// `ncpus` slots and no more (the limit is what these tests are about; the
// slots made on demand are tested below, SlotsOnDemand).
std::unique_ptr<RingBuffer> make(uint32_t ncpus) { return make_growing(ncpus, ncpus); }

// A step counter two threads use to run in lock step.
struct Steps {
  std::atomic<int> v{0};
  void set(int s) { v.store(s); }
  void wait(int s) const {
    while (v.load() < s) std::this_thread::yield();
  }
};

uint64_t events_on(RingBuffer& rb, uint32_t cpu) {
  PageEvent e;
  uint64_t n = 0;
  while (rb.consume(cpu, &e) == 0) n++;
  return n;
}

// An unbound thread claims the first free CPU on its first write (it owns
// it: cpu_owner is its tid, current_cpu the slot); at exit the slot is given
// back, and the next thread gets the same slot.
TEST(Slots, FirstWriteClaimsAFreeCpuAndExitFreesIt) {
  auto rb = make(2);
  int32_t tid1 = 0;
  int cpu1 = -2;
  std::thread t1([&] {
    EXPECT_EQ(rb->current_cpu(), -1);
    const uint64_t v = 1;
    EXPECT_EQ(rb->write(&v, sizeof v), 0);
    tid1 = my_tid();
    cpu1 = rb->current_cpu();
    EXPECT_GE(cpu1, 0);
    EXPECT_EQ(rb->cpu_owner(static_cast<uint32_t>(cpu1)), tid1);
    EXPECT_EQ(rb->write(&v, sizeof v), 0);  // same slot again
    EXPECT_EQ(rb->current_cpu(), cpu1);
  });
  t1.join();
  ASSERT_GE(cpu1, 0);
  EXPECT_EQ(rb->cpu_owner(static_cast<uint32_t>(cpu1)), 0);  // freed at exit
  EXPECT_EQ(rb->stats(static_cast<uint32_t>(cpu1)).entries, 2u);

  int cpu2 = -2;
  std::thread t2([&] {
    const uint64_t v = 2;
    EXPECT_EQ(rb->write(&v, sizeof v), 0);
    cpu2 = rb->current_cpu();
    EXPECT_EQ(rb->cpu_owner(static_cast<uint32_t>(cpu2)), my_tid());
  });
  t2.join();
  EXPECT_EQ(cpu2, cpu1);  // reused
  EXPECT_EQ(rb->cpu_owner(static_cast<uint32_t>(cpu2)), 0);
  EXPECT_EQ(events_on(*rb, static_cast<uint32_t>(cpu1)), 3u);
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
}

// ncpus = 2 and three live writer threads: two get a slot, the third's writes
// are refused (-EBUSY) and each refusal is counted in no_cpu_dropped. Once a
// slot holder exits, the third thread's next write claims the freed slot.
TEST(Slots, NoFreeCpuRefusesAndCounts) {
  auto rb = make(2);
  Steps s;
  std::atomic<int> ready{0};
  std::vector<std::thread> owners;
  owners.reserve(2);
  std::vector<int> cpus(2, -1);
  for (int i = 0; i < 2; i++) {
    owners.emplace_back([&, i] {
      const uint64_t v = 10 + i;
      EXPECT_EQ(rb->write(&v, sizeof v), 0);
      cpus[i] = rb->current_cpu();
      ready++;
      s.wait(i == 0 ? 1 : 3);  // owner 0 leaves at step 1, owner 1 at step 3
    });
  }
  while (ready.load() != 2) std::this_thread::yield();
  EXPECT_NE(cpus[0], cpus[1]);
  std::thread third([&] {
    const uint64_t v = 99;
    for (int i = 0; i < 5; i++) EXPECT_EQ(rb->write(&v, sizeof v), -EBUSY);
    EXPECT_EQ(rb->current_cpu(), -1);
    EXPECT_EQ(rb->no_cpu_dropped(), 5u);
    s.set(1);
    owners[0].join();  // owner 0 exits: its slot is free
    EXPECT_EQ(rb->write(&v, sizeof v), 0);
    EXPECT_EQ(rb->current_cpu(), cpus[0]);
    s.set(3);
  });
  third.join();
  owners[1].join();
  EXPECT_EQ(rb->no_cpu_dropped(), 5u);
  // The refusals are not write attempts on any CPU.
  EXPECT_EQ(rb->stats(0).lost() + rb->stats(1).lost(), 0u);
  EXPECT_EQ(rb->stats(0).entries + rb->stats(1).entries, 3u);
  EXPECT_EQ(rb->cpu_owner(0), 0);
  EXPECT_EQ(rb->cpu_owner(1), 0);
}

// bind_thread: a CPU owned by another live thread is -EBUSY; binding to the
// CPU one already owns is fine; unbind_thread frees it for others; binding
// to another CPU moves there and frees the old one.
TEST(Slots, BindRulesAndUnbind) {
  auto rb = make(3);
  Steps s;
  int32_t other_tid = 0;
  std::thread other([&] {
    EXPECT_EQ(rb->bind_thread(1), 0);
    other_tid = my_tid();
    s.set(1);
    s.wait(2);
    rb->unbind_thread();
    EXPECT_EQ(rb->current_cpu(), -1);
    s.set(3);
    s.wait(4);
  });
  s.wait(1);
  EXPECT_EQ(rb->cpu_owner(1), other_tid);
  EXPECT_EQ(rb->bind_thread(1), -EBUSY);
  EXPECT_EQ(rb->current_cpu(), -1);
  EXPECT_EQ(rb->cpu_owner(1), other_tid);
  EXPECT_EQ(rb->bind_thread(0), 0);
  EXPECT_EQ(rb->bind_thread(0), 0);  // again: fine
  EXPECT_EQ(rb->current_cpu(), 0);
  EXPECT_EQ(rb->cpu_owner(0), my_tid());
  s.set(2);
  s.wait(3);
  EXPECT_EQ(rb->cpu_owner(1), 0);  // unbound
  EXPECT_EQ(rb->bind_thread(1), 0);  // move from 0 to 1
  EXPECT_EQ(rb->current_cpu(), 1);
  EXPECT_EQ(rb->cpu_owner(1), my_tid());
  EXPECT_EQ(rb->cpu_owner(0), 0);
  const uint64_t v = 5;
  EXPECT_EQ(rb->write(&v, sizeof v), 0);
  EXPECT_EQ(rb->stats(1).entries, 1u);
  rb->unbind_thread();
  EXPECT_EQ(rb->cpu_owner(1), 0);
  EXPECT_EQ(rb->current_cpu(), -1);
  rb->unbind_thread();  // unbinding an unbound thread is harmless
  s.set(4);
  other.join();
  for (uint32_t c = 0; c < 3; c++) EXPECT_EQ(rb->cpu_owner(c), 0);
}

// Many short-lived threads, one after the other, on a single CPU slot: each
// claims the slot and gives it back at exit, so none is refused.
TEST(Slots, ShortLivedThreadsReuseTheSlot) {
  auto rb = make(1);
  const int kThreads = 200;
  for (int i = 0; i < kThreads; i++) {
    std::thread t([&, i] {
      const uint64_t v = static_cast<uint32_t>(i);
      EXPECT_EQ(rb->write(&v, sizeof v), 0);
      EXPECT_EQ(rb->current_cpu(), 0);
    });
    t.join();
    ASSERT_EQ(rb->cpu_owner(0), 0) << "thread " << i << " kept the slot";
  }
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
  EXPECT_EQ(rb->stats(0).entries, static_cast<uint64_t>(kThreads));
  PageEvent e;
  uint32_t next = 0;
  while (rb->consume(0, &e) == 0) EXPECT_EQ(load_u32(e.data), next++);
  EXPECT_EQ(next, static_cast<uint32_t>(kThreads));
}

// A thread that writes into several ring buffers (a tracer's live and spare
// buffers, say) gives back its slot in every one of them at exit.
TEST(Slots, ExitFreesTheSlotsOfEveryBuffer) {
  for (int nbuf = 1; nbuf <= 8; nbuf++) {
    SCOPED_TRACE(nbuf);
    std::vector<std::unique_ptr<RingBuffer>> rbs;
    for (int i = 0; i < nbuf; i++) rbs.push_back(make(1));
    std::thread t([&] {
      for (auto& rb : rbs) {
        const uint64_t v = 1;
        EXPECT_EQ(rb->write(&v, sizeof v), 0);
        EXPECT_EQ(rb->cpu_owner(0), my_tid());
      }
    });
    t.join();
    for (int i = 0; i < nbuf; i++) EXPECT_EQ(rbs[i]->cpu_owner(0), 0) << "buffer " << i;
  }
}

// A thread can hold slots in at most kMaxBindingsPerThread buffers: one more
// is refused (bind: -ENOSPC; write: -EBUSY, counted) without taking the slot.
TEST(Slots, TooManyBuffersPerThreadIsRefused) {
  std::vector<std::unique_ptr<RingBuffer>> rbs;
  for (int i = 0; i <= detail::kMaxBindingsPerThread; i++) rbs.push_back(make(1));
  std::thread t([&] {
    for (int i = 0; i < detail::kMaxBindingsPerThread; i++) EXPECT_EQ(rbs[i]->bind_thread(0), 0);
    RingBuffer& extra = *rbs.back();
    EXPECT_EQ(extra.bind_thread(0), -ENOSPC);
    EXPECT_EQ(extra.cpu_owner(0), 0);
    const uint64_t v = 1;
    EXPECT_EQ(extra.write(&v, sizeof v), -EBUSY);
    EXPECT_EQ(extra.no_cpu_dropped(), 1u);
    EXPECT_EQ(extra.cpu_owner(0), 0);
    // Giving one back makes room.
    rbs[0]->unbind_thread();
    EXPECT_EQ(extra.write(&v, sizeof v), 0);
    EXPECT_EQ(extra.cpu_owner(0), my_tid());
  });
  t.join();
  for (auto& rb : rbs) EXPECT_EQ(rb->cpu_owner(0), 0);
}

}  // namespace

namespace {
// A thread that wrote into as many buffers as it can hold bindings for, all
// destroyed since, can still write into a new one: dead bindings are pruned.
TEST(Slots, BindingsToDestroyedBuffersArePruned) {
  std::thread t([] {
    for (int round = 0; round < 3; round++) {
      std::vector<std::unique_ptr<rbtrace::RingBuffer>> bufs;
      rbtrace::Options o;
      o.ncpus = 1;
      o.pages_per_cpu = 2;
      for (int i = 0; i < rbtrace::detail::kMaxBindingsPerThread; i++) {
        bufs.push_back(rbtrace::RingBuffer::create(o));
        ASSERT_TRUE(bufs.back());
        uint64_t v = i;
        ASSERT_EQ(bufs.back()->write(&v, sizeof v), 0) << "round " << round << " buffer " << i;
      }
      // Destroyed by another thread, so this thread's bindings stay behind.
      std::thread([&bufs] { bufs.clear(); }).join();
    }
  });
  t.join();
}
}  // namespace

namespace {
// fork(): the child's events carry the child's tid, the forking thread
// keeps its CPU under that tid, and slots of threads that do not exist in
// the child are free again.
TEST(Slots, ForkMovesTheForkingThreadsSlotsAndFreesTheRest) {
  rbtrace::Options o;
  o.ncpus = 2;
  auto rb = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(0), 0);
  std::atomic<bool> bound{false}, done{false};
  std::thread other([&] {
    rb->bind_thread(1);
    bound = true;
    while (!done) std::this_thread::yield();
    rb->unbind_thread();
  });
  while (!bound) std::this_thread::yield();
  pid_t pid = fork();
  if (pid == 0) {
    const int32_t me = static_cast<int32_t>(syscall(SYS_gettid));
    int bad = 0;
    if (rb->cpu_owner(0) != me) bad |= 1;
    if (rb->cpu_owner(1) != 0) bad |= 2;
    uint64_t v = 7;
    if (rb->write(&v, sizeof v) != 0) bad |= 4;
    rbtrace::PageEvent ev;
    // Drain what the parent wrote before fork (nothing) and our event.
    if (rb->consume(0, &ev) != 0) bad |= 8;
    if (rb->bind_thread(1) != 0) bad |= 16;  // the other thread's slot is free
    _exit(bad);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  done = true;
  other.join();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  rb->unbind_thread();
}
}  // namespace

// ---------------------------------------------------------------------------
// Writes after the thread's slots were given back at exit (issue 9, item 2).
//
// A thread gives its slots back from rbtrace's pthread-key destructor. glibc
// (nptl/nptl_deallocate_tsd.c) runs the destructors in rounds, up to
// PTHREAD_DESTRUCTOR_ITERATIONS (4): each round walks the keys in index
// order, clears each non-null value and calls its destructor; another round
// follows only if a destructor set some value again. Signals are blocked
// only after the last round. So a write that comes after rbtrace's
// destructor (from a later destructor, or from a signal handler running on
// the exiting thread) must not leave the thread owning a slot. The order is
// made certain, whatever the key indices: the test's destructor does nothing
// in round 1 but set its value again, so it runs in round 2, after
// rbtrace's destructor ran in round 1 (the thread wrote before setting the
// test's key, so rbtrace's value was set). The destructor checks that the
// thread's binding is indeed gone before it writes (current_cpu() == -1).
// ---------------------------------------------------------------------------
namespace {

struct LateWrite {
  RingBuffer* rb = nullptr;
  pthread_key_t key{};
  bool via_signal = false;      // write from a SIGUSR1 handler, else directly
  std::atomic<int> rounds{0};   // destructor calls
  std::atomic<int> cpu_at_write{-2};  // current_cpu() just before the late write
  std::atomic<int> rc{1};       // the late write's result
  std::atomic<int> cpu_after{-2};     // current_cpu() after it
};
LateWrite* g_late = nullptr;

void late_write_now() {
  const uint64_t v = 0x1a7e;
  g_late->rc.store(g_late->rb->write(&v, sizeof v));
  g_late->cpu_after.store(g_late->rb->current_cpu());
}

void late_signal_handler(int) {
  const int saved = errno;
  late_write_now();
  errno = saved;
}

void late_write_destructor(void* arg) {
  LateWrite* l = static_cast<LateWrite*>(arg);
  if (l->rounds.fetch_add(1) == 0) {
    // Round 1: rbtrace's destructor may come before or after us in this
    // round. Come back in the next one.
    pthread_setspecific(l->key, l);
    return;
  }
  // Round 2: rbtrace's destructor ran in round 1.
  l->cpu_at_write.store(l->rb->current_cpu());
  if (l->via_signal)
    pthread_kill(pthread_self(), SIGUSR1);  // delivered before pthread_kill returns
  else
    late_write_now();
}

// Runs one thread that writes, then writes again after its slots were given
// back at exit; returns that thread's tid.
int32_t run_late_writer(LateWrite& l) {
  int32_t tid = 0;
  g_late = &l;
  EXPECT_EQ(pthread_key_create(&l.key, late_write_destructor), 0);
  std::thread t([&] {
    const uint64_t v = 1;
    EXPECT_EQ(l.rb->write(&v, sizeof v), 0);  // claims the slot; sets rbtrace's key
    EXPECT_GE(l.rb->current_cpu(), 0);
    tid = my_tid();
    pthread_setspecific(l.key, &l);
  });
  t.join();
  pthread_key_delete(l.key);
  g_late = nullptr;
  return tid;
}

void expect_late_write_left_no_slot(RingBuffer& rb, const LateWrite& l, int32_t tid) {
  // Preconditions: the interleaving happened as designed.
  ASSERT_EQ(l.rounds.load(), 2) << "the test's key destructor did not run in two rounds";
  ASSERT_EQ(l.cpu_at_write.load(), -1)
      << "rbtrace's destructor had not given the slot back before the late write";
  ASSERT_NE(l.rc.load(), 1) << "the late write did not run";
  // The late write may be refused (-EBUSY) or succeed, but the thread is gone
  // now: it must not own the slot.
  EXPECT_TRUE(l.rc.load() == 0 || l.rc.load() == -EBUSY) << "late write returned " << l.rc.load();
  EXPECT_EQ(rb.cpu_owner(0), 0) << "slot 0 is owned by " << rb.cpu_owner(0)
                                << ", the exited thread " << tid
                                << " (late write returned " << l.rc.load()
                                << ", current_cpu() after it " << l.cpu_after.load() << ")";
  // And the next thread can write (ncpus = 1: a leaked slot is every slot).
  int rc = 1, cpu = -2;
  std::thread([&] {
    const uint64_t v = 2;
    rc = rb.write(&v, sizeof v);
    cpu = rb.current_cpu();
  }).join();
  EXPECT_EQ(rc, 0) << "a new thread cannot write after the leak";
  EXPECT_EQ(cpu, 0);
  EXPECT_EQ(rb.cpu_owner(0), 0);
}

// A pthread-key destructor that writes after rbtrace's destructor ran.
TEST(Slots, WriteFromALaterKeyDestructorLeavesNoSlot) {
  auto rb = make(1);
  LateWrite l;
  l.rb = rb.get();
  const int32_t tid = run_late_writer(l);
  expect_late_write_left_no_slot(*rb, l, tid);
}

// A signal handler that writes on a thread whose slots were given back at
// exit (raised from a later key destructor, so it runs in that window for
// certain).
TEST(Slots, WriteFromASignalHandlerAfterExitReleaseLeavesNoSlot) {
  auto rb = make(1);
  struct sigaction sa {}, old {};
  sa.sa_handler = late_signal_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  LateWrite l;
  l.rb = rb.get();
  l.via_signal = true;
  const int32_t tid = run_late_writer(l);
  sigaction(SIGUSR1, &old, nullptr);
  expect_late_write_left_no_slot(*rb, l, tid);
}

// A slot whose owner is gone without giving it back (here: a thread that
// ends with the raw exit system call, so no key destructor runs; the same
// state the late writes above leave behind) is taken over by a claim that
// finds no free slot.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SLOTS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SLOTS_SANITIZED 1
#endif
#endif
// Not under TSan or ASan, whose thread bookkeeping expects threads to end
// through pthread (ASan: "CHECK failed: asan_thread.cpp ... AsanTSDGet()"
// when the next thread starts).
#ifndef SLOTS_SANITIZED
std::atomic<int32_t> g_dead_tid{0};
RingBuffer* g_dead_rb = nullptr;
void* write_then_raw_exit(void*) {
  const uint64_t v = 1;
  if (g_dead_rb->write(&v, sizeof v) == 0) g_dead_tid.store(my_tid());
  syscall(SYS_exit, 0);  // the thread ends here, without its destructors
  return nullptr;
}

TEST(Slots, ClaimTakesOverTheSlotOfAThreadThatNoLongerExists) {
  auto rb = make(1);
  g_dead_rb = rb.get();
  g_dead_tid.store(0);
  // A plain pthread (no std::thread state object that would leak with it).
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, nullptr, write_then_raw_exit, nullptr), 0);
  ASSERT_EQ(pthread_join(th, nullptr), 0);  // the kernel clears the tid word at exit
  const int32_t dead = g_dead_tid.load();
  ASSERT_NE(dead, 0) << "the first write failed";
  ASSERT_EQ(rb->cpu_owner(0), dead);  // left behind, as designed
  // The kernel clears the tid word (join returns) a little before the thread
  // is gone from the tid table; wait for that.
  for (int i = 0; i < 5000 && syscall(SYS_tgkill, getpid(), dead, 0) == 0; i++) usleep(1000);
  ASSERT_NE(syscall(SYS_tgkill, getpid(), dead, 0), 0) << "thread " << dead << " still exists";
  int rc = 1;
  std::thread([&] {
    const uint64_t v = 2;
    rc = rb->write(&v, sizeof v);
    if (rc == 0) {
      EXPECT_EQ(rb->cpu_owner(0), my_tid());
    }
  }).join();
  EXPECT_EQ(rc, 0) << "the slot of exited thread " << dead << " was not taken over";
  EXPECT_EQ(rb->cpu_owner(0), 0);
  EXPECT_EQ(rb->no_cpu_dropped(), rc == 0 ? 0u : 1u);
}

// Slots leaked by threads that ended without their destructors are taken
// back before the ring makes its 65th slot (C3: every 64th slot made), so
// such leaks do not each cost a new mapped slot up to the limit: 64 leaked
// slots, then a thread whose claim finds them all owned reuses one.
TEST(Slots, LeakedSlotsAreTakenBackBeforeTheRingGrowsOn) {
  auto rb = make_growing(1, 200);
  g_dead_rb = rb.get();
  for (int i = 0; i < 64; i++) {
    g_dead_tid.store(0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, nullptr, write_then_raw_exit, nullptr), 0);
    ASSERT_EQ(pthread_join(th, nullptr), 0);
    const int32_t dead = g_dead_tid.load();
    ASSERT_NE(dead, 0) << "leaker " << i << ": the first write failed";
    for (int k = 0; k < 5000 && syscall(SYS_tgkill, getpid(), dead, 0) == 0; k++) usleep(1000);
    ASSERT_NE(syscall(SYS_tgkill, getpid(), dead, 0), 0) << "thread " << dead << " still exists";
  }
  ASSERT_EQ(rb->ncpus(), 64u);  // one leaked slot each
  int rc = 1, cpu = -1;
  std::thread([&] {
    const uint64_t v = 2;
    rc = rb->write(&v, sizeof v);
    cpu = rb->current_cpu();
  }).join();
  EXPECT_EQ(rc, 0);
  EXPECT_GE(cpu, 0);
  EXPECT_EQ(rb->ncpus(), 64u) << "made a slot instead of taking back a leaked one";
  uint32_t owned = 0;
  for (uint32_t c = 0; c < rb->ncpus(); c++) owned += rb->cpu_owner(c) != 0;
  EXPECT_EQ(owned, 0u) << "the slots of the exited threads were all taken back";
}
#endif

}  // namespace

namespace {
// A signal handler that writes while its thread's first write is inside the
// claim of a slot (claim_cpu -> add_binding), forced at the hook point
// TestHookPoint::kClaimBinding: the slot is owned and the binding's cpu and
// buffer are stored, its rb_id and the count are not. The hook raises a
// signal on the thread, whose handler writes, as a timer handler would.
// Writers are async-signal-safe (README), so: no crash (W0 must not take a
// half-written binding); the thread's write succeeds; the handler's is
// refused (-EBUSY, counted in no_cpu_dropped) rather than claiming a second
// slot into the binding entry the interrupted claim is filling (which mixes
// up the two bindings); the thread owns exactly one slot; and once it
// exited no slot is owned by it. Run in a
// child process, so a crash fails the test rather than the whole binary.
// A storm hits the same window only by chance (stress_thread_exit under
// ASan, about one run in two before the fix).
struct ClaimRace {
  RingBuffer* rb = nullptr;
  volatile sig_atomic_t hits = 0;
  volatile int handler_rc = 1;
};
ClaimRace g_claim;

void claim_race_handler(int) {
  const uint64_t v = 0x7a9;
  g_claim.handler_rc = g_claim.rb->write(&v, sizeof v);
}

void claim_race_hook(TestHookPoint p, RingBuffer& rb, uint32_t) {
  if (p != TestHookPoint::kClaimBinding || &rb != g_claim.rb || g_claim.hits != 0) return;
  g_claim.hits = 1;
  pthread_kill(pthread_self(), SIGUSR1);  // the handler runs before this returns
}

enum : int {
  kClaimOk = 0,
  kClaimNoHit = 10,
  kClaimMainWrite = 11,
  kClaimHandlerWrite = 12,
  kClaimSlotLeft = 13,
  kClaimNextThread = 14,
  kClaimTwoSlots = 15,
};

int claim_race_child() {
  auto rb = make(2);
  if (!rb) return kClaimMainWrite;
  g_claim.rb = rb.get();
  struct sigaction sa {};
  sa.sa_handler = claim_race_handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  set_test_hook(claim_race_hook);
  int main_rc = 1;
  int owned = 0;
  std::thread t([&] {
    const uint64_t v = 1;
    main_rc = rb->write(&v, sizeof v);
    const int32_t me = static_cast<int32_t>(syscall(SYS_gettid));
    for (uint32_t c = 0; c < rb->ncpus(); c++) owned += rb->cpu_owner(c) == me;
    if (rb->write(&v, sizeof v) != 0) main_rc = 2;
  });
  t.join();
  set_test_hook(nullptr);
  if (g_claim.hits != 1) return kClaimNoHit;
  if (main_rc != 0) return kClaimMainWrite;
  if (g_claim.handler_rc != -EBUSY || rb->no_cpu_dropped() != 1) return kClaimHandlerWrite;
  if (owned != 1) return kClaimTwoSlots;
  if (rb->cpu_owner(0) != 0 || rb->cpu_owner(1) != 0) return kClaimSlotLeft;
  // Both slots are usable by the next threads.
  int rcs[2] = {1, 1};
  std::atomic<int> wrote{0};
  std::vector<std::thread> next;
  for (int i = 0; i < 2; i++) {
    next.emplace_back([&, i] {
      const uint64_t v = 2;
      rcs[i] = rb->write(&v, sizeof v);
      wrote++;
      while (wrote.load() < 2) std::this_thread::yield();
    });
  }
  for (auto& n : next) n.join();
  if (rcs[0] != 0 || rcs[1] != 0) return kClaimNextThread;
  return kClaimOk;
}

TEST(Slots, SignalHandlerWritingDuringTheFirstClaim) {
  fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(claim_race_child());
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << WTERMSIG(status)
                                 << " (SIGSEGV: the handler's write used the half-written "
                                    "binding of the claim it interrupted)";
  EXPECT_EQ(WEXITSTATUS(status), kClaimOk)
      << "see kClaim*: 10 the hook did not run, 11 the thread's writes failed, 12 the "
         "handler's write was not refused with -EBUSY (counted), 13 a slot is still owned "
         "after the thread exited, 14 the next two threads could not both write, 15 the "
         "thread owned more than one slot";
}
}  // namespace

// Names at claim (issue 11, part 3): a thread's first write and bind_thread
// record (tid, comm); a reader gets them in order with its own cursor, even
// after the threads are gone; a reader that falls more than kThreadNames
// behind is told how many it missed.
TEST(Slots, ThreadNamesAreRecordedAtClaimAndBind) {
  auto rb = make(1);
  ASSERT_TRUE(rb);
  std::vector<int32_t> tids;
  for (const char* n : {"nm-first", "nm-second-name"}) {
    std::thread t([&] {
      ASSERT_EQ(pthread_setname_np(pthread_self(), n), 0);
      tids.push_back(my_tid());
      uint64_t v = 1;
      ASSERT_EQ(rb->write(&v, sizeof v), 0);  // claims CPU 0
    });
    t.join();  // exits: the slot is free for the next one
  }
  std::thread b([&] {
    ASSERT_EQ(pthread_setname_np(pthread_self(), "nm-binder"), 0);
    tids.push_back(my_tid());
    ASSERT_EQ(rb->bind_thread(0), 0);
    rb->unbind_thread();
  });
  b.join();

  uint64_t cursor = 0;
  std::vector<RingBuffer::ThreadName> got;
  EXPECT_EQ(rb->read_thread_names(&cursor, &got), 0u);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(cursor, 3u);
  const char* want[] = {"nm-first", "nm-second-name", "nm-binder"};
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(got[i].tid, tids[i]) << i;
    EXPECT_STREQ(got[i].comm, want[i]) << i;
  }
  // Nothing new: nothing read, the cursor stays.
  got.clear();
  EXPECT_EQ(rb->read_thread_names(&cursor, &got), 0u);
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(cursor, 3u);

  // kThreadNames + 100 more binds on this thread: a reader from the start
  // gets the newest kThreadNames and the count of the ones overwritten.
  char own_name[16] = {};
  pthread_getname_np(pthread_self(), own_name, sizeof own_name);
  ASSERT_EQ(pthread_setname_np(pthread_self(), "nm-rebinder"), 0);
  const uint32_t more = RingBuffer::kThreadNames + 100;
  for (uint32_t i = 0; i < more; i++) {
    ASSERT_EQ(rb->bind_thread(0), 0);
    rb->unbind_thread();
  }
  uint64_t fresh = 0;
  got.clear();
  EXPECT_EQ(rb->read_thread_names(&fresh, &got), 3u + more - RingBuffer::kThreadNames);
  ASSERT_EQ(got.size(), RingBuffer::kThreadNames);
  EXPECT_EQ(fresh, 3u + more);
  EXPECT_EQ(got.back().tid, my_tid());
  EXPECT_STREQ(got.back().comm, "nm-rebinder");
  // The first reader, 3 records in, missed 3 fewer.
  got.clear();
  EXPECT_EQ(rb->read_thread_names(&cursor, &got), more - RingBuffer::kThreadNames);
  EXPECT_EQ(got.size(), RingBuffer::kThreadNames);
  pthread_setname_np(pthread_self(), own_name);  // as it was
}

// ===========================================================================
// Slots on demand: beyond Options::ncpus, up to the limit
// ===========================================================================

namespace {

// Each event carries its writer's tid and a sequence number.
struct TidEvent {
  int32_t tid;
  uint32_t seq;
};

}  // namespace

// The limit: max_cpus, else the default (or ncpus if larger), lowered to
// what max_buffer_bytes pays for; bad combinations are refused with a
// message that says what is wrong.
TEST(SlotsOnDemand, TheLimitComesFromMaxCpusAndTheBudget) {
  auto d = make_growing(2, 0);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->max_cpus(), kDefaultMaxCpus);
  EXPECT_EQ(d->options().max_cpus, kDefaultMaxCpus);
  EXPECT_EQ(d->ncpus(), 2u);  // made by create: the rest on demand
  auto big = make_growing(kDefaultMaxCpus + 5, 0);
  ASSERT_TRUE(big);
  EXPECT_EQ(big->max_cpus(), kDefaultMaxCpus + 5);
  auto l = make_growing(2, 9);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->max_cpus(), 9u);
  const uint64_t slot = 3 * 4096;  // (pages_per_cpu + 1) pages
  auto b = make_growing(2, 0, 5 * slot + 100);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->max_cpus(), 5u);
  auto both = make_growing(2, 4, 5 * slot);
  ASSERT_TRUE(both);
  EXPECT_EQ(both->max_cpus(), 4u);  // the smaller

  for (auto [ncpus, max, budget, what] :
       {std::tuple<uint32_t, uint32_t, uint64_t, const char*>{4, 3, 0, "max_cpus"},
        {4, kMaxCpus + 1, 0, "max_cpus"},
        {4, 0, 3 * slot, "max_buffer_bytes"}}) {
    Options o;
    o.ncpus = ncpus;
    o.max_cpus = max;
    o.max_buffer_bytes = budget;
    o.pages_per_cpu = 2;
    Error err;
    EXPECT_FALSE(RingBuffer::create(o, &err));
    EXPECT_EQ(err.code, EINVAL);
    EXPECT_NE(err.message.find(what), std::string::npos) << err.message;
  }
}

// Default options (4 slots made at create) and 12 threads alive at once,
// each writing 100 events: every thread gets a slot of its own, the ring
// makes 8 more, nothing is refused, and each CPU holds exactly the events
// of the one thread that wrote to it, in order.
TEST(SlotsOnDemand, ThreadsBeyondNcpusGetSlotsMadeForThem) {
  Options o;
  o.pages_per_cpu = 4;  // 100 events of 8 bytes fit
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->ncpus(), 4u);
  constexpr int kThreads = 12;
  std::atomic<int> written{0};
  Steps leave;
  std::vector<std::thread> ts;
  std::vector<int32_t> tids(kThreads);
  std::vector<int> cpus(kThreads, -1);
  for (int i = 0; i < kThreads; i++) {
    ts.emplace_back([&, i] {
      tids[i] = my_tid();
      for (uint32_t k = 0; k < 100; k++) {
        const TidEvent ev{tids[i], k};
        EXPECT_EQ(rb->write(&ev, sizeof ev), 0);
      }
      cpus[i] = rb->current_cpu();
      written++;
      leave.wait(1);  // alive until every thread has written
    });
  }
  while (written.load() != kThreads) std::this_thread::yield();
  EXPECT_EQ(rb->ncpus(), static_cast<uint32_t>(kThreads));
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
  leave.set(1);
  for (auto& t : ts) t.join();
  std::vector<int> seen(kThreads, 0);
  for (uint32_t c = 0; c < rb->ncpus(); c++) {
    int who = -1;
    for (int i = 0; i < kThreads; i++)
      if (cpus[i] == static_cast<int>(c)) who = i;
    ASSERT_GE(who, 0) << "CPU " << c << " was made for nobody";
    PageEvent e;
    uint32_t next = 0;
    while (rb->consume(c, &e) == 0) {
      TidEvent ev;
      ASSERT_EQ(e.length, sizeof ev);
      std::memcpy(&ev, e.data, sizeof ev);
      EXPECT_EQ(ev.tid, tids[who]) << "CPU " << c;
      EXPECT_EQ(ev.seq, next++);
    }
    EXPECT_EQ(next, 100u) << "CPU " << c;
    seen[who]++;
  }
  for (int i = 0; i < kThreads; i++) EXPECT_EQ(seen[i], 1) << "thread " << i;
}

// At the limit (max_cpus 3, one slot made at create, five threads alive):
// three threads write, two are refused on every event, each refusal
// counted in no_cpu_dropped; the slots stay three.
TEST(SlotsOnDemand, TheLimitRefusesAndCounts) {
  auto rb = make_growing(1, 3);
  ASSERT_TRUE(rb);
  std::atomic<int> done{0};
  std::atomic<int> ok{0};
  Steps leave;
  std::vector<std::thread> ts;
  for (int i = 0; i < 5; i++) {
    ts.emplace_back([&] {
      const uint64_t v = 7;
      int good = 0;
      for (int k = 0; k < 10; k++) good += rb->write(&v, sizeof v) == 0;
      EXPECT_TRUE(good == 0 || good == 10) << good;
      ok += good;
      done++;
      leave.wait(1);
    });
  }
  while (done.load() != 5) std::this_thread::yield();
  EXPECT_EQ(ok.load(), 30);
  EXPECT_EQ(rb->ncpus(), 3u);
  EXPECT_EQ(rb->no_cpu_dropped(), 20u);
  leave.set(1);
  for (auto& t : ts) t.join();
  uint64_t entries = 0;
  for (uint32_t c = 0; c < rb->ncpus(); c++) entries += rb->stats(c).entries;
  EXPECT_EQ(entries, 30u);
}

namespace {
// kClaimGrown, forced: the claim that made slot `cpu` finds it taken by a
// thread that came in meanwhile (started and run to its first event from
// inside the hook), so it makes another or, at the limit, is refused.
std::atomic<RingBuffer*> g_grow_rb{nullptr};
std::atomic<int> g_grow_hits{0};
std::atomic<int> g_thief_cpu{-2};
Steps* g_thief_leave = nullptr;
std::thread* g_thief = nullptr;
void grow_hook(TestHookPoint p, RingBuffer& rb, uint32_t cpu) {
  if (p != TestHookPoint::kClaimGrown || &rb != g_grow_rb.load()) return;
  if (g_grow_hits.fetch_add(1) != 0) return;  // the first growth only
  EXPECT_EQ(cpu, 1u);  // the claim made slot 1 (slot 0 is bound)
  std::atomic<bool> wrote{false};
  *g_thief = std::thread([&rb, &wrote] {
    const uint64_t v = 2;
    EXPECT_EQ(rb.write(&v, sizeof v), 0);  // takes the slot just made
    g_thief_cpu.store(rb.current_cpu());
    wrote.store(true);
    g_thief_leave->wait(1);
  });
  while (!wrote.load()) std::this_thread::yield();
}
}  // namespace

TEST(SlotsOnDemand, AClaimWhoseNewSlotIsTakenMakesAnotherOrIsRefused) {
  for (uint32_t limit : {3u, 2u}) {
    SCOPED_TRACE(limit);
    auto rb = make_growing(1, limit);
    ASSERT_TRUE(rb);
    Steps leave, thief_leave;
    std::thread thief;
    g_thief = &thief;
    g_thief_leave = &thief_leave;
    g_grow_hits.store(0);
    g_thief_cpu.store(-2);
    std::atomic<bool> bound{false};
    std::thread holder([&] {
      ASSERT_EQ(rb->bind_thread(0), 0);
      bound.store(true);
      leave.wait(1);
      rb->unbind_thread();
    });
    while (!bound.load()) std::this_thread::yield();
    g_grow_rb.store(rb.get());
    set_test_hook(grow_hook);
    std::thread claimer([&] {
      const uint64_t v = 1;
      const int rc = rb->write(&v, sizeof v);
      if (limit == 3) {
        EXPECT_EQ(rc, 0);
        EXPECT_EQ(rb->current_cpu(), 2);  // made a second slot
      } else {
        EXPECT_EQ(rc, -EBUSY);  // the limit: refused, counted
        EXPECT_EQ(rb->current_cpu(), -1);
      }
    });
    claimer.join();
    set_test_hook(nullptr);
    g_grow_rb.store(nullptr);
    EXPECT_EQ(g_thief_cpu.load(), 1);
    EXPECT_EQ(g_grow_hits.load(), limit == 3 ? 2 : 1);
    EXPECT_EQ(rb->ncpus(), limit);
    EXPECT_EQ(rb->no_cpu_dropped(), limit == 3 ? 0u : 1u);
    thief_leave.set(1);
    thief.join();
    leave.set(1);
    holder.join();
  }
}

// A thread whose first event comes from a signal handler makes and maps a
// new slot there (mmap is async-signal-safe); later events of the thread
// go to it without a system call.
TEST(SlotsOnDemand, AFirstEventInASignalHandlerMakesTheSlot) {
  static RingBuffer* srb = nullptr;
  static int handler_rc = 1;
  auto rb = make_growing(1, 4);
  ASSERT_TRUE(rb);
  srb = rb.get();
  struct sigaction sa {}, old{};
  sa.sa_handler = [](int) {
    const uint64_t v = 5;
    handler_rc = srb->write(&v, sizeof v);
  };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  std::atomic<bool> bound{false};
  Steps leave;
  std::thread holder([&] {  // slot 0 taken: the handler must make slot 1
    ASSERT_EQ(rb->bind_thread(0), 0);
    bound.store(true);
    leave.wait(1);
    rb->unbind_thread();
  });
  while (!bound.load()) std::this_thread::yield();
  std::thread t([&] {
    raise(SIGUSR2);
    EXPECT_EQ(handler_rc, 0);
    EXPECT_EQ(rb->current_cpu(), 1);
    const uint64_t v = 6;
    EXPECT_EQ(rb->write(&v, sizeof v), 0);
  });
  t.join();
  sigaction(SIGUSR2, &old, nullptr);
  leave.set(1);
  holder.join();
  EXPECT_EQ(rb->ncpus(), 2u);
  EXPECT_EQ(rb->stats(1).entries, 2u);
  EXPECT_EQ(events_on(*rb, 1), 2u);
}

// bind_thread to a CPU beyond those made makes the slots up to it;
// reserve_cpus makes and maps them without a thread; beyond the limit
// both are refused.
TEST(SlotsOnDemand, BindAndReserveMakeSlotsUpToTheLimit) {
  auto rb = make_growing(1, 6);
  ASSERT_TRUE(rb);
  std::thread t([&] {
    EXPECT_EQ(rb->bind_thread(6), -EINVAL);
    ASSERT_EQ(rb->bind_thread(3), 0);
    EXPECT_EQ(rb->current_cpu(), 3);
    const uint64_t v = 1;
    EXPECT_EQ(rb->write(&v, sizeof v), 0);
    rb->unbind_thread();
  });
  t.join();
  EXPECT_EQ(rb->ncpus(), 4u);
  EXPECT_EQ(rb->cpu_buffer(1), nullptr);  // made, not mapped: nobody wrote
  EXPECT_EQ(rb->stats(1).entries, 0u);
  PageEvent e;
  EXPECT_EQ(rb->consume(1, &e), -EAGAIN);
  EXPECT_EQ(events_on(*rb, 3), 1u);
  EXPECT_EQ(rb->reserve_cpus(7), -EINVAL);
  ASSERT_EQ(rb->reserve_cpus(5), 0);
  EXPECT_EQ(rb->ncpus(), 5u);
  for (uint32_t c = 0; c < 5; c++) EXPECT_NE(rb->cpu_buffer(c), nullptr) << c;
  EXPECT_EQ(rb->record_disable_cpu(4), 0);  // lands on the mapped buffer
  EXPECT_EQ(rb->record_enable_cpu(4), 0);
}
