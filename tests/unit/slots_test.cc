// Unit tests of CPU slots: claiming on first write, giving back at thread
// exit, explicit bind/unbind, refusal when no slot is free, and reuse (so
// that memory stays bounded however many threads come and go). Threads run
// in lock step (atomic steps), so every test is deterministic.
#include <gtest/gtest.h>

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

int32_t my_tid() { return static_cast<int32_t>(syscall(SYS_gettid)); }

std::unique_ptr<RingBuffer> make(uint32_t ncpus) {
  Options o;
  o.ncpus = ncpus;
  o.page_size = 4096;
  o.pages_per_cpu = 2;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  EXPECT_TRUE(rb) << err.message;
  return rb;
}

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
    const uint32_t v = 1;
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
    const uint32_t v = 2;
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
      const uint32_t v = 10 + i;
      EXPECT_EQ(rb->write(&v, sizeof v), 0);
      cpus[i] = rb->current_cpu();
      ready++;
      s.wait(i == 0 ? 1 : 3);  // owner 0 leaves at step 1, owner 1 at step 3
    });
  }
  while (ready.load() != 2) std::this_thread::yield();
  EXPECT_NE(cpus[0], cpus[1]);
  std::thread third([&] {
    const uint32_t v = 99;
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
  const uint32_t v = 5;
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
      const uint32_t v = static_cast<uint32_t>(i);
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
        const uint32_t v = 1;
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
    const uint32_t v = 1;
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
    uint32_t v = 7;
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
