// The snapshot engine as a flight recorder: overwrite mode, no consumer;
// take() swaps every CPU on its owner thread, dumps the swapped-out buffers
// into a trace.dat that the validating reader accepts, and resets them as
// the spare. Checked exactly: each CPU's file holds the newest events,
// contiguous, ending at the last one written; events + overrun == written;
// the next snapshot holds exactly what was written after the previous one.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/tracedat_reader.h"

RBTRACE_EVENT(snaptest, rec, ((uint64_t, seq))((uint32_t, cpu)))

using namespace rbtrace;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kCpus = 2;

// Owner threads that write `n` events on request and otherwise wait,
// bound, answering doorbells.
class Owners {
 public:
  explicit Owners(RingBuffer& rb) : rb_(rb) {
    for (uint32_t c = 0; c < kCpus; c++) threads_.emplace_back([this, c] { loop(c); });
  }
  ~Owners() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void write(uint64_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    todo_ = n;
    round_++;
    done_ = 0;
    cv_.notify_all();
    cv_.wait(lk, [&] { return done_ == kCpus; });
  }
  uint64_t written(uint32_t c) const { return seq_[c]; }

 private:
  void loop(uint32_t c) {
    ASSERT_EQ(rb_.bind_thread(c), 0);
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || round_ != seen; });
      if (stop_) break;
      seen = round_;
      const uint64_t n = todo_;
      lk.unlock();
      for (uint64_t i = 0; i < n; i++) {
        ASSERT_EQ(rbtrace_events::snaptest_rec::emit(rb_, seq_[c] + 1, c), 0);
        seq_[c]++;
      }
      lk.lock();
      done_++;
      cv_.notify_all();
    }
    lk.unlock();
    rb_.unbind_thread();
  }
  RingBuffer& rb_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t todo_ = 0, round_ = 0;
  uint32_t done_ = 0;
  uint64_t seq_[kCpus] = {};
};

struct CpuSeqs {
  std::vector<uint64_t> seqs;
};

std::vector<CpuSeqs> read_file(int fd, std::string* stats0) {
  std::string err;
  auto r = TraceDatReader::open_fd(fd, &err);
  EXPECT_TRUE(r) << err;
  std::vector<CpuSeqs> out(kCpus);
  if (!r) return out;
  EXPECT_EQ(r->ncpus(), kCpus);
  EXPECT_EQ(r->process_pid(), getpid());  // the dump names this process
  TraceRecord rec;
  int rc;
  while ((rc = r->next(&rec)) == 1) {
    EXPECT_TRUE(rec.event && rec.event->name == "rec");
    uint64_t seq;
    uint32_t cpu;
    std::memcpy(&seq, rec.data + 8, 8);
    std::memcpy(&cpu, rec.data + 16, 4);
    EXPECT_EQ(cpu, rec.cpu);
    if (rec.cpu < kCpus) out[rec.cpu].seqs.push_back(seq);
  }
  EXPECT_EQ(rc, 0) << r->error();
  if (stats0 && !r->cpus().empty()) *stats0 = r->cpus()[0].stats;
  return out;
}

// The flight recorder the tests below take snapshots of: kCpus CPUs of 8
// pages of 4 KiB, overwrite mode.
Options flight_recorder() {
  Options o;
  o.ncpus = kCpus;
  o.page_size = 4096;
  o.pages_per_cpu = 8;
  o.mode = Mode::kOverwrite;
  return o;
}

TEST(SnapshotEngine, FlightRecorderDumpsTheNewestEventsOfEveryCpu) {
  auto snap = Snapshot::create(flight_recorder());
  ASSERT_TRUE(snap);
  Owners owners(snap->live());
  owners.write(20000);  // ~10 times the buffer: most is overwritten

  const int fd = memfd_create("snap1", MFD_CLOEXEC);
  std::string err;
  SnapshotResult res;
  ASSERT_EQ(snap->take(fd, -1, &err, &res), 0) << err;
  ASSERT_EQ(res.cpus.size(), kCpus);
  std::string stats0;
  auto got = read_file(fd, &stats0);
  close(fd);
  for (uint32_t c = 0; c < kCpus; c++) {
    const SnapshotCpu& sc = res.cpus[c];
    EXPECT_EQ(sc.swap_result, 0);
    EXPECT_GE(sc.trace.signals, 1u) << "the swap did not go through the owner";
    const auto& s = got[c].seqs;
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s.back(), owners.written(c)) << "the newest event is missing";
    for (size_t i = 1; i < s.size(); i++) ASSERT_EQ(s[i], s[i - 1] + 1) << "cpu " << c;
    EXPECT_EQ(sc.stats.entries, owners.written(c));
    EXPECT_EQ(s.size() + sc.stats.overrun, owners.written(c));
    EXPECT_EQ(sc.stats.read, s.size());
    EXPECT_GE(sc.pages, 6u);
  }
  EXPECT_NE(stats0.find("overrun: "), std::string::npos) << stats0;

  // The live buffers are the reset spares: a snapshot now is empty...
  const int fd2 = memfd_create("snap2", MFD_CLOEXEC);
  ASSERT_EQ(snap->take(fd2, -1, &err, &res), 0) << err;
  auto empty = read_file(fd2, nullptr);
  close(fd2);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_TRUE(empty[c].seqs.empty());
  // ...and after 100 more events per CPU, holds exactly those.
  const uint64_t before0 = owners.written(0);
  owners.write(100);
  const int fd3 = memfd_create("snap3", MFD_CLOEXEC);
  ASSERT_EQ(snap->take(fd3, 0, &err, &res), 0) << err;  // CPU 0 only
  ASSERT_EQ(res.cpus.size(), 1u);
  auto third = read_file(fd3, nullptr);
  close(fd3);
  ASSERT_EQ(third[0].seqs.size(), 100u);
  EXPECT_EQ(third[0].seqs.front(), before0 + 1);
  EXPECT_TRUE(third[1].seqs.empty());
  // Totals since start add up every generation.
  EXPECT_EQ(snap->total_stats(0).entries, owners.written(0));
  EXPECT_EQ(snap->total_stats(1).entries, owners.written(1));
  EXPECT_EQ(snap->snapshots_taken(), 3u);
  EXPECT_EQ(snap->take(-1, 5, &err, &res), -EINVAL);
}

// take() writes the pages straight into an empty regular file (at their
// final offsets, the header last) and through the memfd spool into
// anything else; a pipe takes the second way. Both give the same trace: the
// newest events of each CPU, contiguous, events + overrun == written.
TEST(SnapshotEngine, APipeGetsTheSameTraceAsAFile) {
  auto snap = Snapshot::create(flight_recorder());
  ASSERT_TRUE(snap);
  Owners owners(snap->live());
  for (int round = 0; round < 2; round++) {
    owners.write(20000);
    int fd = memfd_create("snapfile", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::string err;
    SnapshotResult res;
    if (round == 0) {
      ASSERT_EQ(snap->take(fd, -1, &err, &res), 0) << err;  // a regular file: direct
    } else {
      int p[2];
      ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
      std::thread drain([&] {  // the pipe's bytes into the memfd
        char buf[65536];
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) ASSERT_EQ(write(fd, buf, n), n);
      });
      const int rc = snap->take(p[1], -1, &err, &res);
      close(p[1]);
      drain.join();
      close(p[0]);
      ASSERT_EQ(rc, 0) << err;
    }
    auto got = read_file(fd, nullptr);
    close(fd);
    SCOPED_TRACE(round == 0 ? "file" : "pipe");
    ASSERT_EQ(res.cpus.size(), kCpus);
    for (uint32_t c = 0; c < kCpus; c++) {
      const auto& seqs = got[c].seqs;
      ASSERT_FALSE(seqs.empty());
      EXPECT_EQ(seqs.back(), owners.written(c));
      for (size_t i = 1; i < seqs.size(); i++) ASSERT_EQ(seqs[i], seqs[i - 1] + 1) << "cpu " << c;
      EXPECT_EQ(seqs.size(), res.cpus[c].stats.read);
      EXPECT_EQ(res.cpus[c].stats.read + res.cpus[c].stats.overrun, res.cpus[c].stats.entries);
    }
  }
}

// Files take() must not write by offset: one opened O_APPEND (pwrite would
// append, putting the pages before the header) goes through the spool and
// comes out valid. And a direct dump that fails (the file size limit,
// SIGXFSZ ignored) leaves the file empty, not a headless half; the retry
// on the same fd after the limit is lifted gives a valid trace.
TEST(SnapshotEngine, AnAppendModeFileAndAFailedDumpLeaveNoBrokenFile) {
  auto snap = Snapshot::create(flight_recorder());
  ASSERT_TRUE(snap);
  Owners owners(snap->live());
  char path[] = "/tmp/rbtrace-snapappend-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  owners.write(5000);
  std::string err;
  SnapshotResult res;
  ASSERT_EQ(snap->take(fd, -1, &err, &res), 0) << err;
  {
    const int rd = open(path, O_RDONLY | O_CLOEXEC);
    auto got = read_file(rd, nullptr);
    close(rd);
    for (uint32_t c = 0; c < kCpus; c++) {
      ASSERT_FALSE(got[c].seqs.empty());
      EXPECT_EQ(got[c].seqs.back(), owners.written(c));
    }
  }
  close(fd);

  fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  owners.write(5000);
  struct sigaction ign {}, old_sa {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGXFSZ, &ign, &old_sa), 0);
  rlimit old_lim {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
  rlimit lim = old_lim;
  lim.rlim_cur = 40000;  // less than the pages: the dump fails part way
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  const int rc = snap->take(fd, -1, &err, &res);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_lim), 0);
  ASSERT_EQ(sigaction(SIGXFSZ, &old_sa, nullptr), 0);
  EXPECT_EQ(rc, -EFBIG) << err;
  EXPECT_NE(err.find("writing the snapshot"), std::string::npos) << err;
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 0) << "a failed dump left bytes in the file";
  EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 0);
  owners.write(100);
  ASSERT_EQ(snap->take(fd, -1, &err, &res), 0) << err;  // the same fd, again
  auto got = read_file(fd, nullptr);
  close(fd);
  unlink(path);
  // The failed take swapped CPU 0 (its generation went with the failed
  // dump) and stopped at the failure: a CPU it did not reach kept its
  // events, and has them now, 100 more; where the limit cuts depends on
  // the header's size (the registered formats).
  for (uint32_t c = 0; c < kCpus; c++) {
    ASSERT_FALSE(got[c].seqs.empty()) << "cpu " << c;
    if (c == 0) {
      EXPECT_EQ(got[c].seqs.size(), 100u) << "cpu 0 was swapped by the failed take";
    }
    EXPECT_GE(got[c].seqs.size(), 100u) << "cpu " << c;
    EXPECT_EQ(got[c].seqs.back(), owners.written(c));
    for (size_t k = 1; k < got[c].seqs.size(); k++)
      ASSERT_EQ(got[c].seqs[k], got[c].seqs[k - 1] + 1) << "cpu " << c << " event " << k;
  }
}

}  // namespace

// Slots made on demand: a ring made with one slot, threads that claim three
// more, a snapshot: the spare grows on the requester's side (its slots are
// made and mapped there, never in a doorbell handler), every CPU is
// captured with exactly its thread's events, and the slots made but never
// written (one mapped, one not even mapped) are empty CPUs of the file.
TEST(SnapshotEngine, SlotsMadeOnDemandAreCapturedAndTheSpareGrows) {
  Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 4;
  auto snap = Snapshot::create(o);
  ASSERT_TRUE(snap);
  RingBuffer& live = snap->live();
  constexpr uint32_t kWriters = 4;
  std::atomic<uint32_t> written{0};
  std::atomic<bool> leave{false};
  std::vector<std::thread> ts;
  std::vector<int> cpus(kWriters, -1);
  for (uint32_t i = 0; i < kWriters; i++) {
    ts.emplace_back([&, i] {
      for (uint64_t k = 0; k < 10 + i; k++)
        EXPECT_EQ(rbtrace_events::snaptest_rec::emit(live, k + 1, 100 + i), 0);
      cpus[i] = live.current_cpu();
      written++;  // also after a failure: the test goes on, and fails, not hangs
      while (!leave.load()) std::this_thread::sleep_for(1ms);
    });
  }
  while (written.load() != kWriters) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(live.ncpus(), kWriters);
  // A thread binds to CPU kWriters + 1 and leaves without writing: that
  // slot is made and mapped, the one before it made only.
  std::thread binder([&] {
    ASSERT_EQ(live.bind_thread(kWriters + 1), 0);
    live.unbind_thread();
  });
  binder.join();
  ASSERT_EQ(live.ncpus(), kWriters + 2);
  ASSERT_EQ(live.cpu_buffer(kWriters), nullptr);
  const int fd = memfd_create("grow", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string err;
  SnapshotResult res;
  ASSERT_EQ(snap->take(fd, -1, &err, &res), 0) << err;  // owners swap in their handlers
  leave.store(true);
  for (auto& t : ts) t.join();
  ASSERT_EQ(res.cpus.size(), kWriters + 2);
  for (const SnapshotCpu& c : res.cpus) EXPECT_EQ(c.swap_result, 0) << "CPU " << c.cpu;
  lseek(fd, 0, SEEK_SET);
  auto r = TraceDatReader::open_fd(fd, &err);
  ASSERT_TRUE(r) << err;
  EXPECT_EQ(r->ncpus(), kWriters + 2);
  std::vector<uint64_t> per_cpu(kWriters + 2, 0);
  TraceRecord rec;
  while (r->next(&rec) == 1) {
    uint32_t tag;
    std::memcpy(&tag, rec.data + 16, 4);
    ASSERT_LT(rec.cpu, kWriters + 2);
    const uint32_t i = tag - 100;
    ASSERT_LT(i, kWriters);
    EXPECT_EQ(static_cast<int>(rec.cpu), cpus[i]) << "writer " << i;
    per_cpu[rec.cpu]++;
  }
  EXPECT_TRUE(r->error().empty()) << r->error();
  for (uint32_t i = 0; i < kWriters; i++) EXPECT_EQ(per_cpu[cpus[i]], 10u + i) << "writer " << i;
  EXPECT_EQ(per_cpu[kWriters], 0u);
  EXPECT_EQ(per_cpu[kWriters + 1], 0u);
  close(fd);
}
