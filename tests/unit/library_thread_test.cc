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

// Signals no thread can block: SIGKILL, SIGSTOP, and glibc's two internal
// ones (32 and 33: cancellation and set*id), which pthread_sigmask leaves
// unblocked whatever it is asked.
bool unblockable(int sig) { return sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33; }

// The blocked mask of thread `tid` of this process, from /proc (SigBlk).
uint64_t sigblk_of(pid_t tid) {
  const std::string s = rbtrace_test::read_file("/proc/self/task/" + std::to_string(tid) + "/status");
  const size_t at = s.find("SigBlk:");
  if (at == std::string::npos) return 0;
  return std::strtoull(s.c_str() + at + 7, nullptr, 16);
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

// Every blockable signal 1..64 is in `mask` (bit sig-1, as /proc prints it).
void expect_all_blocked(uint64_t mask, const std::string& who) {
  for (int sig = 1; sig <= 64; sig++) {
    if (unblockable(sig)) continue;
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
  std::thread t = start_library_thread("rbtrace-a-long-name-cut", [&] {
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, nullptr, &cur);
    for (int sig = 1; sig <= 64; sig++)
      if (sigismember(&cur, sig) == 1) mask |= uint64_t{1} << (sig - 1);
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

  expect_all_blocked(mask, "library thread");
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

  const auto threads = threads_by_name();
  for (const char* n : {"rbtrace-drain", "rbtrace-publish", "rbtrace-control"}) {
    auto it = threads.find(n);
    ASSERT_NE(it, threads.end()) << n << " not found among the process's threads";
    expect_all_blocked(sigblk_of(it->second), n);
  }
  server.reset();
  EXPECT_EQ(consumer->stop(), 0);
  consumer.reset();
  std::system(("rm -rf '" + tmp.path + "'/rec '" + tmp.path + "'/ctl").c_str());
}
