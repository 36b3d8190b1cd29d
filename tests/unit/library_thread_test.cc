// Threads of rbtrace's own (rbtrace/library_thread.h): every signal blocked
// from their first instruction, never a CPU slot; and the consumer's drain
// and publish threads and the control server are such threads (issue 11,
// part 4).
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace_test/test_files.h"

using namespace rbtrace;
using namespace std::chrono_literals;

namespace {

// The blocked mask of thread `tid` of this process, from /proc (SigBlk).
uint64_t sigblk_of(pid_t tid) {
  const std::string s = rbtrace_test::read_file("/proc/self/task/" + std::to_string(tid) + "/status");
  const size_t at = s.find("SigBlk:");
  if (at == std::string::npos) return 0;
  return std::strtoull(s.c_str() + at + 7, nullptr, 16);
}

// A mask as bits sig-1, 1..64.
uint64_t bits_of(const sigset_t& set) {
  uint64_t m = 0;
  for (int sig = 1; sig <= 64; sig++)
    if (sigismember(&set, sig) == 1) m |= uint64_t{1} << (sig - 1);
  return m;
}

// What "every signal blocked" is on this system: a thread asks for all
// (sigfillset) and reads back what it got (glibc keeps its two internal
// signals; an emulator may keep some more), seen from inside (`self`) and
// through /proc (`proc`, which under an emulator shows the host thread).
struct AllBlocked {
  uint64_t self = 0, proc = 0;
};
AllBlocked probe_all_blocked() {
  AllBlocked a;
  std::thread t([&] {
    sigset_t all, got;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    pthread_sigmask(SIG_SETMASK, nullptr, &got);
    a.self = bits_of(got);
    a.proc = sigblk_of(static_cast<pid_t>(gettid()));
  });
  t.join();
  return a;
}

// name -> tid of the threads of this process.
std::map<std::string, pid_t> threads_by_name() {
  std::map<std::string, pid_t> m;
  DIR* d = opendir("/proc/self/task");
  if (!d) return m;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string comm = rbtrace_test::read_file(std::string("/proc/self/task/") + e->d_name + "/comm");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    m[comm] = static_cast<pid_t>(std::atoi(e->d_name));
  }
  closedir(d);
  return m;
}

// `mask` is `want` (every signal this system lets a thread block).
void expect_all_blocked(uint64_t mask, uint64_t want, const std::string& who) {
  EXPECT_NE(want, 0u) << "the probe blocked nothing";
  for (int sig = 1; sig <= 64; sig++) {
    if (!((want >> (sig - 1)) & 1)) continue;
    EXPECT_TRUE(mask >> (sig - 1) & 1) << who << ": signal " << sig << " is not blocked";
  }
}

}  // namespace

TEST(LibraryThread, BlocksEverySignalAndClaimsNoSlot) {
  Options o;
  o.ncpus = 2;
  o.pages_per_cpu = 4;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  // The creator's own mask is left as it was.
  sigset_t before, after;
  pthread_sigmask(SIG_SETMASK, nullptr, &before);

  uint64_t mask = 0;
  int write_rc = 1, bind_rc = 1;
  bool library = false;
  std::string name;
  const AllBlocked all = probe_all_blocked();
  std::thread t = start_library_thread("rbtrace-a-long-name-cut", [&] {
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, nullptr, &cur);
    mask = bits_of(cur);
    library = is_library_thread();
    unsigned char payload[16] = {};
    write_rc = rb->write(payload, sizeof payload);
    bind_rc = rb->bind_thread(0);
    char n[32] = {};
    pthread_getname_np(pthread_self(), n, sizeof n);
    name = n;
  });
  t.join();
  pthread_sigmask(SIG_SETMASK, nullptr, &after);
  for (int sig = 1; sig <= 64; sig++)
    EXPECT_EQ(sigismember(&before, sig), sigismember(&after, sig)) << "caller's signal " << sig;

  expect_all_blocked(mask, all.self, "library thread");
  EXPECT_TRUE(library);
  EXPECT_FALSE(is_library_thread());  // this thread is the application's
  EXPECT_EQ(name, "rbtrace-a-long-");  // 15 bytes kept
  EXPECT_EQ(write_rc, -EBUSY);
  EXPECT_EQ(bind_rc, -EBUSY);
  EXPECT_EQ(rb->no_cpu_dropped(), 1u);
  for (uint32_t c = 0; c < o.ncpus; c++) EXPECT_EQ(rb->cpu_owner(c), 0) << "cpu " << c;
  // An application thread still claims as before.
  std::thread app([&] {
    unsigned char payload[16] = {};
    EXPECT_EQ(rb->write(payload, sizeof payload), 0);
    rb->unbind_thread();
  });
  app.join();
  EXPECT_EQ(rb->no_cpu_dropped(), 1u);
}

// The consumer's two threads and the control server's are library threads,
// whatever the mask of the thread that started them.
TEST(LibraryThread, ConsumerAndControlServerThreads) {
  rbtrace_test::TempDir tmp;
  ASSERT_FALSE(tmp.path.empty());
  Options o;
  o.ncpus = 2;
  o.pages_per_cpu = 8;
  o.mode = Mode::kProducerConsumer;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ConsumerOptions co;
  co.dir = tmp.path + "/rec";
  co.fsync = false;
  co.on_message = [](const std::string&) {};
  Error cerr;
  auto consumer = Consumer::create(*rb, co, &cerr);
  ASSERT_TRUE(consumer) << cerr.message;

  Options so_ring;
  so_ring.ncpus = 2;
  so_ring.pages_per_cpu = 4;
  auto snap = Snapshot::create(so_ring);
  ASSERT_TRUE(snap);
  control::ServerOptions so;
  so.dir = tmp.path + "/ctl";
  Error err;
  auto server = control::Server::start(*snap, so, &err);
  ASSERT_TRUE(server) << err.message;

  // Through /proc, compared with a thread that blocked everything (under
  // an emulator /proc shows host masks: the comparison still holds).
  const AllBlocked all = probe_all_blocked();
  const auto threads = threads_by_name();
  for (const char* n : {"rbtrace-drain", "rbtrace-publish", "rbtrace-control"}) {
    auto it = threads.find(n);
    ASSERT_NE(it, threads.end()) << n << " not found among the process's threads";
    expect_all_blocked(sigblk_of(it->second), all.proc, n);
  }
  server.reset();
  EXPECT_EQ(consumer->stop(), 0);
  consumer.reset();
  std::system(("rm -rf '" + tmp.path + "'/rec '" + tmp.path + "'/ctl").c_str());
}
