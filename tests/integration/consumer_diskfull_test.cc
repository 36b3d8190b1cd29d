// consumer_diskfull_test.cc - a full disk. (1) A 2 MiB tmpfs mounted for the
// test (we run as root; a failing mount fails the test); (2) RLIMIT_FSIZE
// with SIGXFSZ ignored, in a child. In both: the application keeps writing,
// the consumer counts the pages it could not write, gives one clear
// message, and the files already published stay intact (valid, and
// unchanged after the disk filled up); per CPU the accounting is exact:
//   committed == events in published files + consumer losses.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "rbtrace_test/consumer_common.h"
#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"

namespace {

using namespace std::chrono_literals;

struct Result {
  std::string problem;  // "" when every check held
  uint64_t committed = 0, in_files = 0, lost = 0, pages_failed = 0, files = 0, msgs = 0;
  std::string first_msg;
};

// Records into `dir` for `seconds` with writers that never stop, then
// checks. Runs in this process or in a child.
// Backends under test: 0 io_uring (WRITE_FIXED), 1 io_uring vectored
// (WRITEV), 2 pwritev.
rbtrace::IoBackendKind kind_of(int b) {
  return b == 2 ? rbtrace::IoBackendKind::kPwritev : rbtrace::IoBackendKind::kIoUring;
}
const char* name_of(int b) { return b == 0 ? "io_uring" : b == 1 ? "io_uring_vec" : "pwritev"; }

// One CPU slot (and no more), `pages` pages, producer/consumer: nothing is
// overwritten, so every event written must reach the files.
rbtrace::Options one_cpu_pc(uint32_t pages) {
  rbtrace::Options o;
  o.ncpus = 1;
  o.max_cpus = 1;
  o.pages_per_cpu = pages;
  o.mode = rbtrace::Mode::kProducerConsumer;
  return o;
}

Result record_until_full(const std::string& dir, int be, uint64_t seg_bytes, double seconds) {
  Result res;
  constexpr uint32_t kCpus = 2;
  rbtrace::Options o;
  o.ncpus = kCpus;
  o.pages_per_cpu = 16;
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  std::vector<std::string> msgs;
  std::mutex mm;
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.backend = kind_of(be);
  co.io_uring_vectored = be == 1;
  co.segment_bytes = seg_bytes;
  co.period_us = 1000;
  co.fsync = false;
  co.on_message = [&](const std::string& m) {
    std::lock_guard<std::mutex> g(mm);
    msgs.push_back(m);
  };
  rbtrace::Error err;
  auto c = rbtrace::Consumer::create(*rb, co, &err);
  if (!c) {
    res.problem = "create: " + err.message;
    return res;
  }
  std::atomic<bool> stop{false};
  std::vector<uint64_t> ok(kCpus);
  // Published files are checksummed as they appear, to prove later that the
  // full disk did not touch them.
  std::map<std::string, std::string> snapshot;
  std::vector<std::thread> ws;
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    ws.emplace_back([&, cpu] {
      rb->bind_thread(cpu);
      unsigned char p[ctest::kPayload];
      uint64_t s = 0;
      // relaxed: a stop flag only.
      while (!stop.load(std::memory_order_relaxed)) {
        ctest::make_payload(p, cpu, s);
        if (rb->write(p, ctest::kPayload) == 0) s++;
        else std::this_thread::sleep_for(20us);
      }
      ok[cpu] = s;
      rb->unbind_thread();
    });
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds)) {
    std::this_thread::sleep_for(50ms);
    for (const auto& f : c->published()) {
      if (snapshot.count(f)) continue;
      std::string d;
      ctest::read_file(f, &d);
      snapshot[f] = d;
    }
  }
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : ws) t.join();
  c->stop();  // may report an error: the disk is full
  const auto cs = c->stats();
  std::vector<int64_t> seqs(kCpus, -1);
  std::vector<uint64_t> in_files(kCpus);
  for (const auto& f : c->published()) {
    ctest::Trace t;
    std::string bad = ctest::walk_trace(f, &t, &seqs);
    if (!bad.empty()) {
      res.problem = f + ": " + bad;
      return res;
    }
    for (uint32_t k = 0; k < kCpus; k++) in_files[k] += t.cpus[k].nevents;
    std::string d;
    ctest::read_file(f, &d);
    if (snapshot.count(f) && snapshot[f] != d) {
      res.problem = f + " changed after it was published";
      return res;
    }
  }
  for (uint32_t k = 0; k < kCpus; k++) {
    const rbtrace::CpuStats s = rb->stats(k);
    if (s.entries != ok[k]) res.problem = "entries != successful writes";
    if (s.entries != s.read) res.problem = "not everything committed was taken";
    if (s.read != in_files[k] + cs.events_lost[k])
      res.problem = "cpu " + std::to_string(k) + ": read " + std::to_string(s.read) +
                    " != in files " + std::to_string(in_files[k]) + " + lost " +
                    std::to_string(cs.events_lost[k]);
    res.committed += s.entries;
    res.in_files += in_files[k];
    res.lost += cs.events_lost[k];
  }
  res.pages_failed = cs.pages_failed;
  res.files = c->published().size();
  std::lock_guard<std::mutex> g(mm);
  res.msgs = msgs.size();
  if (!msgs.empty()) res.first_msg = msgs.front();
  return res;
}

class DiskFull : public ::testing::TestWithParam<int> {};

TEST_P(DiskFull, SmallTmpfs) {
  const std::string dir = ctest::make_temp_dir("/tmp", "diskfull");
  ASSERT_FALSE(dir.empty());
  ASSERT_EQ(mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=2m"), 0)
      << "mount -t tmpfs -o size=2m: " << std::strerror(errno) << " (the test needs root)";
  Result r = record_until_full(dir, GetParam(), 256 * 1024, 2.0);
  umount2(dir.c_str(), MNT_DETACH);
  rmdir(dir.c_str());
  std::printf("[diskfull tmpfs %s] committed %llu, in %llu files %llu, lost %llu, pages failed "
              "%llu, %llu messages: %s\n",
              name_of(GetParam()), static_cast<unsigned long long>(r.committed),
              static_cast<unsigned long long>(r.files), static_cast<unsigned long long>(r.in_files),
              static_cast<unsigned long long>(r.lost),
              static_cast<unsigned long long>(r.pages_failed),
              static_cast<unsigned long long>(r.msgs), r.first_msg.c_str());
  EXPECT_EQ(r.problem, "");
  EXPECT_GT(r.files, 0u) << "something fitted before the disk was full";
  EXPECT_GT(r.lost, 0u) << "the disk filled up: losses must be counted";
  EXPECT_GT(r.pages_failed + r.lost, 0u);
  EXPECT_GE(r.msgs, 1u);
  EXPECT_LE(r.msgs, 20u) << "a message per episode, not per page";
  EXPECT_NE(r.first_msg.find("No space left on device"), std::string::npos) << r.first_msg;
}

// `ulimit -f`: the spool files pass the limit and writes fail with EFBIG;
// the consumer counts and reports it and the application runs on, whether
// SIGXFSZ is ignored or left at its default action (which kills a process
// whose thread takes it: rbtrace's threads block it, so the write fails
// instead).
void file_size_limit(int backend, bool ignore_sigxfsz) {
  const std::string dir = ctest::make_temp_dir("/tmp", "fsize");
  ASSERT_FALSE(dir.empty());
  int pfd[2];
  ASSERT_EQ(pipe(pfd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(pfd[0]);
    signal(SIGXFSZ, ignore_sigxfsz ? SIG_IGN : SIG_DFL);
    rlimit rl{200 * 1024, 200 * 1024};
    setrlimit(RLIMIT_FSIZE, &rl);
    // Segments of 1 MiB: the spool files pass 200 KiB and writes fail with
    // EFBIG; the consumer keeps going (and keeps failing), the app runs.
    Result r = record_until_full(dir, backend, 1 << 20, 1.0);
    std::string out = r.problem + "\n" + std::to_string(r.committed) + " " +
                      std::to_string(r.lost) + " " + std::to_string(r.pages_failed) + " " +
                      std::to_string(r.msgs) + "\n" + r.first_msg + "\n";
    (void)!write(pfd[1], out.data(), out.size());
    _exit(0);
  }
  close(pfd[1]);
  std::string out;
  char b[4096];
  ssize_t n;
  while ((n = read(pfd[0], b, sizeof b)) > 0) out.append(b, static_cast<size_t>(n));
  close(pfd[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child died: status " << status
      << (WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ ? " (SIGXFSZ)" : "");
  std::printf("[diskfull rlimit %s, SIGXFSZ %s] %s", name_of(backend),
              ignore_sigxfsz ? "ignored" : "default", out.c_str());
  const size_t nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  EXPECT_EQ(out.substr(0, nl), "");
  unsigned long long committed = 0, lost = 0, failed = 0, msgs = 0;
  ASSERT_EQ(std::sscanf(out.c_str() + nl + 1, "%llu %llu %llu %llu", &committed, &lost, &failed,
                        &msgs),
            4);
  EXPECT_GT(committed, 0u);
  EXPECT_GT(lost, 0u);
  EXPECT_GT(failed, 0u);
  EXPECT_GE(msgs, 1u);
  EXPECT_NE(out.find("File too large"), std::string::npos);
  ctest::remove_tree(dir);
}

TEST_P(DiskFull, FileSizeLimit) { file_size_limit(GetParam(), true); }
TEST_P(DiskFull, FileSizeLimitWithSigxfszAtItsDefault) { file_size_limit(GetParam(), false); }

// A file system that stops answering: the drain thread's first page write
// blocks (the write hook: a stand-in for a hung NFS server) until the test
// lets it go. stop() gives up after stop_timeout_ms with -ETIMEDOUT and a
// message; the ring is destroyed while the thread is still stuck (it must
// not touch it again: its memory is unmapped, a touch faults); once let
// go, the threads end, the session's lock is released, and recover
// publishes every event the consumer had taken, seqs 0..n-1 in order.
int g_hang_fd = -1;
std::atomic<int> g_hang_calls{0};
void hang_once() {
  if (g_hang_calls.fetch_add(1) != 0) return;
  uint64_t v;
  while (read(g_hang_fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

TEST_P(DiskFull, StopGivesUpOnAFileSystemThatHangsAndRecoverGetsWhatWasTaken) {
  const std::string dir = ctest::make_temp_dir("/tmp", "hang");
  ASSERT_FALSE(dir.empty());
  g_hang_fd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(g_hang_fd, 0);
  g_hang_calls = 0;
  auto rb = rbtrace::RingBuffer::create(one_cpu_pc(32));
  ASSERT_TRUE(rb);
  std::vector<std::string> msgs;
  std::mutex mm;
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.backend = kind_of(GetParam());
  co.io_uring_vectored = GetParam() == 1;
  co.fsync = false;
  co.stop_timeout_ms = 300;
  co.on_message = [&](const std::string& m) {
    std::lock_guard<std::mutex> g(mm);
    msgs.push_back(m);
  };
  rbtrace::set_consumer_write_hook(hang_once);
  auto c = rbtrace::Consumer::create(*rb, co);
  ASSERT_TRUE(c);
  constexpr uint64_t kEvents = 1500;  // several pages, fewer than the ring holds
  std::thread w([&] {
    ASSERT_EQ(rb->bind_thread(0), 0);
    unsigned char p[ctest::kPayload];
    for (uint64_t s = 0; s < kEvents; s++) {
      ctest::make_payload(p, 0, s);
      ASSERT_EQ(rb->write(p, ctest::kPayload), 0);
    }
    rb->unbind_thread();
  });
  w.join();
  // The drain thread takes full pages on its own (every period_us): wait
  // until its first page write hangs, so that stop() finds it stuck.
  for (int i = 0; i < 10000 && g_hang_calls.load() == 0; i++) std::this_thread::sleep_for(1ms);
  ASSERT_GE(g_hang_calls.load(), 1) << "the drain thread took no page in 10 s";
  // A flush is bounded the same way (the control server's one thread calls
  // it): it returns, the write still hangs.
  EXPECT_EQ(c->flush(), -ETIMEDOUT);
  EXPECT_EQ(c->stop(), -ETIMEDOUT);  // the first write never returned
  EXPECT_EQ(c->stop(), -ETIMEDOUT);  // and says so again
  EXPECT_EQ(c->flush(), -ESRCH);
  {
    std::lock_guard<std::mutex> g(mm);
    ASSERT_FALSE(msgs.empty());
    EXPECT_NE(msgs.back().find("gave up"), std::string::npos) << msgs.back();
    EXPECT_NE(msgs.back().find("without progress"), std::string::npos) << msgs.back();
    EXPECT_NE(msgs.back().find("rbtrace recover"), std::string::npos) << msgs.back();
  }
  EXPECT_GE(g_hang_calls.load(), 1);
  const std::string lock = c->spool_dir() + "/lock";
  rb.reset();  // the application is done with its ring; the thread is still stuck

  // The file system answers again.
  const uint64_t one = 1;
  ASSERT_EQ(write(g_hang_fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  // The threads end and release the lock (bounded wait: they have nothing
  // left that blocks).
  bool released = false;
  for (int i = 0; i < 2000 && !released; i++) {
    const int fd = open(lock.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;  // the session was cleaned up: not expected here
    released = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd);
    if (!released) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(released) << "the session's lock was not released after the threads ended";
  const rbtrace::ConsumerStats st = c->stats();
  ASSERT_EQ(st.events_read.size(), 1u);
  const uint64_t taken = st.events_read[0];
  EXPECT_GT(taken, 0u);

  rbtrace::RecoverResult r;
  std::string err;
  ASSERT_EQ(rbtrace::recover_spool(dir, &r, &err), 0) << err;
  EXPECT_EQ(r.sessions_live, 0u);
  std::vector<int64_t> seqs(1, -1);
  uint64_t n = 0;
  for (const std::string& f : ctest::traces(dir)) {  // published by the thread, or recovered
    ctest::Trace t;
    ASSERT_EQ(ctest::walk_trace(f, &t, &seqs), "") << f;
    for (auto& cpu : t.cpus) n += cpu.nevents;
  }
  EXPECT_EQ(n, taken) << "every event the consumer took is in a file";
  EXPECT_EQ(seqs[0] + 1, static_cast<int64_t>(taken)) << "and they are the first ones, in order";
  rbtrace::set_consumer_write_hook(nullptr);
  close(g_hang_fd);
  c.reset();  // kept alive inside (its threads used it); destroying the handle is fine
  ctest::remove_tree(dir);
}

// stop_timeout_ms bounds the time without progress, not the whole stop: a
// slow disk that keeps writing (a page every 20 ms, 60 pages to go, 1.2 s in
// all) is waited for with a 500 ms bound, and nothing is lost.
TEST(StopTimeout, ASlowDiskThatKeepsWritingIsWaitedFor) {
  const std::string dir = ctest::make_temp_dir("/tmp", "slowstop");
  ASSERT_FALSE(dir.empty());
  auto rb = rbtrace::RingBuffer::create(one_cpu_pc(64));
  ASSERT_TRUE(rb);
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.fsync = false;
  co.period_us = 10 * 1000 * 1000;  // the periodic pass stays out of it: stop() drains
  co.slow_us_per_page = 20 * 1000;
  co.stop_timeout_ms = 500;
  std::vector<std::string> msgs;
  std::mutex mm;
  co.on_message = [&](const std::string& m) {
    std::lock_guard<std::mutex> g(mm);
    msgs.push_back(m);
  };
  auto c = rbtrace::Consumer::create(*rb, co);
  ASSERT_TRUE(c);
  uint64_t written = 0;
  std::thread w([&] {
    ASSERT_EQ(rb->bind_thread(0), 0);
    unsigned char p[ctest::kPayload];
    // About 60 pages of 204 events (4 KiB pages, 20-byte events).
    for (uint64_t s = 0; s < 60 * 204; s++) {
      ctest::make_payload(p, 0, s);
      if (rb->write(p, ctest::kPayload) == 0) written++;
    }
    rb->unbind_thread();
  });
  w.join();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c->stop(), 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    std::lock_guard<std::mutex> g(mm);
    EXPECT_TRUE(msgs.empty()) << msgs.front();
  }
  std::vector<int64_t> seqs(1, -1);
  uint64_t n = 0;
  for (const std::string& f : c->published()) {
    ctest::Trace t;
    ASSERT_EQ(ctest::walk_trace(f, &t, &seqs), "") << f;
    for (auto& cpu : t.cpus) n += cpu.nevents;
  }
  EXPECT_EQ(n, written);
  EXPECT_EQ(seqs[0] + 1, static_cast<int64_t>(written));
  std::printf("[slow stop] %llu events in %.2f s of stop() with a 500 ms bound without progress\n",
              static_cast<unsigned long long>(written), secs);
  ctest::remove_tree(dir);
}

// Issue 12, the lost tail page: a flush that found the page pool empty
// waited one period for a completion and, if none came, went on to the next
// CPU, leaving that CPU's remaining pages (its partial tail page at stop())
// in the ring, neither read nor counted (stress_consumer_roundtrip saw
// 2,048 events short, one 64 KiB page, under load). Forced here with the
// reap hook: until stop()'s flush begins no completion ever arrives, so the
// drain thread fills the 16-page pool and takes nothing more; from the
// flush on, every other wait "times out" with nothing. The flush starts
// with the pool in flight and 25 pages more in the ring, and must take
// every one.
std::atomic<int> g_reap_phase{0};
std::atomic<uint64_t> g_reap_calls{0}, g_reap_timeouts{0};
bool slow_completions(bool in_flush) {
  if (in_flush) g_reap_phase = 1;
  if (g_reap_phase.load() == 0) {
    std::this_thread::sleep_for(1ms);  // nothing completes (and no busy loop)
    return true;
  }
  if (g_reap_calls++ % 2 == 1) return false;
  g_reap_timeouts++;
  return true;
}

TEST_P(DiskFull, AFlushWaitsForItsPagesWhenTheDiskIsSlowerThanAPeriod) {
  const std::string dir = ctest::make_temp_dir("/tmp", "slowreap");
  ASSERT_FALSE(dir.empty());
  auto rb = rbtrace::RingBuffer::create(one_cpu_pc(64));
  ASSERT_TRUE(rb);
  // About 40 full pages and a partial one (4 KiB pages, 20-byte events),
  // all in the ring before the consumer starts.
  constexpr uint64_t kEvents = 40 * 204 + 100;
  std::thread w([&] {
    ASSERT_EQ(rb->bind_thread(0), 0);
    unsigned char p[ctest::kPayload];
    for (uint64_t s = 0; s < kEvents; s++) {
      ctest::make_payload(p, 0, s);
      ASSERT_EQ(rb->write(p, ctest::kPayload), 0) << s;
    }
    rb->unbind_thread();
  });
  w.join();
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.backend = kind_of(GetParam());
  co.io_uring_vectored = GetParam() == 1;
  co.fsync = false;
  co.pool_pages = 16;    // the smallest pool
  co.period_us = 1000;   // the wait a flush used to give up after
  std::vector<std::string> msgs;
  std::mutex mm;
  co.on_message = [&](const std::string& m) {
    std::lock_guard<std::mutex> g(mm);
    msgs.push_back(m);
  };
  g_reap_phase = 0;
  g_reap_calls = 0;
  g_reap_timeouts = 0;
  struct HookGuard {  // removed whatever way the test ends
    HookGuard() { rbtrace::set_consumer_reap_hook(slow_completions); }
    ~HookGuard() { rbtrace::set_consumer_reap_hook(nullptr); }
  } guard;
  auto c = rbtrace::Consumer::create(*rb, co);
  ASSERT_TRUE(c);
  // The drain thread takes pages until the pool is empty, then waits for
  // completions that (per the hook) never come.
  for (int i = 0; i < 10000 && c->stats().pages_read < 16; i++) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(c->stats().pages_read, 16u) << "the pool should be in flight, nothing completed";
  EXPECT_EQ(c->stop(), 0);
  EXPECT_GT(g_reap_timeouts.load(), 0u) << "the flush never met a wait that timed out";
  {
    std::lock_guard<std::mutex> g(mm);
    EXPECT_TRUE(msgs.empty()) << msgs.front();
  }
  const rbtrace::CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, kEvents);
  EXPECT_EQ(s.entries, s.read + s.overrun) << "stop() left pages in the ring";
  std::vector<int64_t> seqs(1, -1);
  uint64_t n = 0;
  for (const std::string& f : c->published()) {
    ctest::Trace t;
    ASSERT_EQ(ctest::walk_trace(f, &t, &seqs), "") << f;
    for (auto& cpu : t.cpus) n += cpu.nevents;
  }
  EXPECT_EQ(n, kEvents);
  EXPECT_EQ(seqs[0] + 1, static_cast<int64_t>(kEvents)) << "every event, in order";
  ctest::remove_tree(dir);
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskFull, ::testing::Values(0, 1, 2),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(name_of(i.param));
                         });

}  // namespace
