// consumer_basic_test.cc - the consumer's contract piece by piece: flush
// drains partial pages, rotation by size and by time, watermark wake-up,
// both publish paths (O_TMPFILE and private name + link), backend choice by
// environment variable, fixed buffers, cmdlines and stats in the file, and
// recovery's refusals (live session, corrupt sidecar).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace_test/consumer_common.h"
#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"

RBTRACE_EVENT(ctest, hello, ((uint64_t, seq))((rbtrace::str, text)))

namespace {

using namespace std::chrono_literals;

struct Fixture {
  std::string dir;
  std::unique_ptr<rbtrace::RingBuffer> rb;
  std::vector<std::string> msgs;
  std::mutex mm;

  explicit Fixture(const char* tag, uint32_t ncpus = 2, uint32_t page = 4096) {
    dir = ctest::make_temp_dir("/tmp", tag);
    rbtrace::Options o;
    o.ncpus = ncpus;
    o.max_cpus = ncpus;  // no slots on demand here (see the thread-pool tests)
    o.page_size = page;
    o.pages_per_cpu = 16;
    o.mode = rbtrace::Mode::kProducerConsumer;
    rb = rbtrace::RingBuffer::create(o);
  }
  ~Fixture() { ctest::remove_tree(dir); }
  rbtrace::ConsumerOptions opts() {
    rbtrace::ConsumerOptions co;
    co.dir = dir;
    co.fsync = false;
    co.on_message = [this](const std::string& m) {
      std::lock_guard<std::mutex> g(mm);
      msgs.push_back(m);
    };
    return co;
  }
  // Writes n payload events on `cpu` from a thread bound to it.
  void write(uint32_t cpu, uint64_t first, uint64_t n) {
    std::thread t([&] {
      ASSERT_EQ(rb->bind_thread(cpu), 0);
      unsigned char p[ctest::kPayload];
      for (uint64_t s = first; s < first + n; s++) {
        ctest::make_payload(p, cpu, s);
        ASSERT_EQ(rb->write(p, ctest::kPayload), 0);
      }
      rb->unbind_thread();
    });
    t.join();
  }
  uint64_t events_in(const std::vector<std::string>& files, std::vector<int64_t>* seqs) {
    uint64_t n = 0;
    for (const auto& f : files) {
      ctest::Trace t;
      EXPECT_EQ(ctest::walk_trace(f, &t, seqs), "") << f;
      for (auto& c : t.cpus) n += c.nevents;
    }
    return n;
  }
};

TEST(Consumer, FlushDrainsPartialPagesAndStopIsIdempotent) {
  Fixture fx("flush");
  ASSERT_TRUE(fx.rb);
  auto co = fx.opts();
  co.period_us = 1000000;  // the timer would not fire during the test
  rbtrace::Error err;
  auto c = rbtrace::Consumer::create(*fx.rb, co, &err);
  ASSERT_TRUE(c) << err.message;
  fx.write(0, 0, 10);
  fx.write(1, 0, 3);
  ASSERT_EQ(c->flush(), 0);
  auto files = c->published();
  ASSERT_EQ(files.size(), 1u);
  std::vector<int64_t> seqs(2, -1);
  EXPECT_EQ(fx.events_in(files, &seqs), 13u);
  EXPECT_EQ(seqs[0], 9);
  EXPECT_EQ(seqs[1], 2);
  // More events on the same (partly read) pages, then stop.
  fx.write(0, 10, 5);
  ASSERT_EQ(c->stop(), 0);
  ASSERT_EQ(c->stop(), 0);
  files = c->published();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(fx.events_in({files[1]}, &seqs), 5u);
  EXPECT_EQ(seqs[0], 14);
  // Nothing left behind but the published files.
  EXPECT_TRUE(ctest::list(fx.dir + "/spool").empty());
  EXPECT_TRUE(ctest::list(fx.dir + "/tmp").empty());
  EXPECT_EQ(c->flush(), -ESRCH);
}

TEST(Consumer, RotationBySize) {
  Fixture fx("rotsize");
  auto co = fx.opts();
  co.segment_bytes = 64 * 1024;
  co.period_us = 500;
  auto c = rbtrace::Consumer::create(*fx.rb, co);
  ASSERT_TRUE(c);
  // ~1.2 MiB of events in bursts the ring can hold: each burst waits until
  // the consumer has drained its CPU's full pages (a loaded machine may
  // delay the consumer well past any fixed pause; producer/consumer mode
  // would then drop the burst's tail). Left unread: at most the partial
  // tail page, so 15 of the 16 pages (15 x 204 events) are free.
  const uint64_t per_page = (4096 - rbtrace::kPageHeaderSize) / (ctest::kPayload + 4);
  for (int i = 0; i < 20; i++) {
    const uint32_t cpu = static_cast<uint32_t>(i % 2);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      const rbtrace::CpuStats st = fx.rb->stats(cpu);
      if (st.entries - st.read < per_page) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the consumer did not drain cpu " << cpu;
      std::this_thread::sleep_for(1ms);
    }
    fx.write(cpu, static_cast<uint64_t>(i / 2) * 3000, 3000);
  }
  ASSERT_EQ(c->stop(), 0);
  const auto files = c->published();
  EXPECT_GE(files.size(), 10u);
  std::vector<int64_t> seqs(2, -1);
  EXPECT_EQ(fx.events_in(files, &seqs), 60000u);
  EXPECT_EQ(c->stats().events_published[0] + c->stats().events_published[1], 60000u);
}

TEST(Consumer, RotationByTime) {
  Fixture fx("rottime");
  auto co = fx.opts();
  co.segment_seconds = 1;
  co.period_us = 2000;
  auto c = rbtrace::Consumer::create(*fx.rb, co);
  ASSERT_TRUE(c);
  // Full pages now and then over 3.2 s (a segment opens with its first page).
  for (int i = 0; i < 16; i++) {
    fx.write(0, static_cast<uint64_t>(i) * 400, 400);
    std::this_thread::sleep_for(200ms);
  }
  const size_t before_stop = c->published().size();
  ASSERT_EQ(c->stop(), 0);
  EXPECT_GE(before_stop, 2u) << "segments older than 1 s are published without a flush";
  std::vector<int64_t> seqs(2, -1);
  EXPECT_EQ(fx.events_in(c->published(), &seqs), 16u * 400);
}

TEST(Consumer, WatermarkWakesTheConsumerTimerDoesNot) {
  for (uint32_t wm : {0u, 2u}) {
    SCOPED_TRACE("watermark " + std::to_string(wm));
    Fixture fx("watermark");
    auto co = fx.opts();
    co.period_us = 3000000;  // 3 s timer
    co.watermark_pages = wm;
    auto c = rbtrace::Consumer::create(*fx.rb, co);
    ASSERT_TRUE(c);
    std::this_thread::sleep_for(100ms);  // let it fall asleep
    const auto t0 = std::chrono::steady_clock::now();
    fx.write(0, 0, 1000);  // ~5 pages
    while (c->stats().pages_read == 0 && std::chrono::steady_clock::now() - t0 < 2s)
      std::this_thread::sleep_for(1ms);
    const bool woke = c->stats().pages_read > 0;
    EXPECT_EQ(woke, wm != 0);
    ASSERT_EQ(c->stop(), 0);
    std::vector<int64_t> seqs(2, -1);
    EXPECT_EQ(fx.events_in(c->published(), &seqs), 1000u);
  }
}

// Whether the file system of `dir` collapses ranges (fallocate
// FALLOC_FL_COLLAPSE_RANGE): a 3-block probe file, its middle block removed.
bool collapses(const std::string& dir) {
  const std::string p = dir + "/collapse-probe";
  const int fd = open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  unlink(p.c_str());
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && st.st_blksize > 0 &&
            ftruncate(fd, 3 * static_cast<off_t>(st.st_blksize)) == 0 &&
            fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, st.st_blksize, st.st_blksize) == 0;
  close(fd);
  return ok;
}

// Every byte written once (DESIGN.md): where the file system collapses
// ranges, the segment file the drain thread wrote becomes the published
// trace, compacted in place (its CPUs' pages back to back after the header,
// no hole left); where it cannot (tmpfs), the trace is a copy, and the
// stats say which. Both files read the same.
TEST(Consumer, SegmentsArePublishedInPlaceWhereTheFileSystemCollapses) {
  for (const auto& [base, direct] : {std::pair{"/tmp", false}, std::pair{"/tmp", true},
                                     std::pair{"/dev/shm", false}}) {
    SCOPED_TRACE(std::string(base) + (direct ? " O_DIRECT" : ""));
    const std::string dir = ctest::make_temp_dir(base, "inplace");
    ASSERT_FALSE(dir.empty()) << base;
    const bool in_place = collapses(dir);
    Fixture fx("inplace-ring");
    auto co = fx.opts();
    co.dir = dir + "/out";
    co.segment_bytes = 40 * 4096;  // a few segments, some with one CPU only
    co.period_us = 500;
    co.direct_io = direct;
    auto c = rbtrace::Consumer::create(*fx.rb, co);
    ASSERT_TRUE(c);
    uint64_t written = 0;
    for (int i = 0; i < 6; i++) {
      const uint32_t cpu = i % 3 == 2 ? 1 : 0;
      fx.write(cpu, written, 2500);
      written += 2500;
      ASSERT_EQ(c->flush(), 0);
    }
    ASSERT_EQ(c->stop(), 0);
    const rbtrace::ConsumerStats st = c->stats();
    ASSERT_GT(st.segments_published, 3u);
    if (in_place) {
      EXPECT_EQ(st.segments_in_place, st.segments_published) << st.backend_note;
    } else {
      EXPECT_EQ(st.segments_in_place, 0u);
      EXPECT_NE(st.backend_note.find("cannot collapse ranges"), std::string::npos)
          << st.backend_note;
    }
    if (direct) {
      EXPECT_EQ(st.backend_note.find("O_DIRECT"), std::string::npos)
          << "ext4 takes O_DIRECT: " << st.backend_note;
    }
    uint64_t events = 0;
    for (const std::string& f : c->published()) {
      std::string err;
      auto r = rbtrace::TraceDatReader::open(f, &err);
      ASSERT_TRUE(r) << f << ": " << err;
      // As write_trace_dat lays a trace out: the first CPU's data at the
      // header's page-rounded end, each CPU right after the one before,
      // the file ending with the last one's data.
      uint64_t at = r->cpus()[0].offset, data = 0;
      EXPECT_LT(at, 1u << 20) << f;
      for (const rbtrace::TraceCpuData& d : r->cpus()) {
        EXPECT_EQ(d.offset, at) << f;
        at = d.offset + d.size;
        data += d.size;
      }
      EXPECT_EQ(r->file_size(), at) << f;
      struct stat fs;
      ASSERT_EQ(stat(f.c_str(), &fs), 0);
      EXPECT_EQ(static_cast<uint64_t>(fs.st_size), at) << f << ": no hole left at the end";
      EXPECT_GE(static_cast<uint64_t>(fs.st_blocks) * 512, data) << f << ": the pages are there";
      EXPECT_EQ(fs.st_mode & 0777, 0600u) << f;
      rbtrace::TraceRecord rec;
      int n;
      while ((n = r->next(&rec)) > 0) events++;
      EXPECT_EQ(n, 0) << f << ": " << r->error();
    }
    EXPECT_EQ(events, written);
    EXPECT_TRUE(ctest::list(co.dir + "/spool").empty());
    ctest::remove_tree(dir);
  }
}

// A file size limit (RLIMIT_FSIZE) counts the one-file layout's holes:
// under one the spool is a file per CPU, each at most a segment, and
// every event is published.
TEST(Consumer, AFileSizeLimitGivesAFilePerCpu) {
  struct rlimit old_lim;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
  struct rlimit lim = old_lim;
  lim.rlim_cur = 256ULL << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  Fixture fx("fsize");
  auto co = fx.opts();
  auto c = rbtrace::Consumer::create(*fx.rb, co);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_lim), 0);  // the choice is made at create
  ASSERT_TRUE(c);
  fx.write(0, 0, 3000);
  fx.write(1, 0, 3000);
  ASSERT_EQ(c->stop(), 0);
  const rbtrace::ConsumerStats st = c->stats();
  EXPECT_NE(st.backend_note.find("file size limit"), std::string::npos) << st.backend_note;
  EXPECT_EQ(st.segments_in_place, 0u);
  std::vector<int64_t> seqs(2, -1);
  EXPECT_EQ(fx.events_in(c->published(), &seqs), 6000u);
  EXPECT_EQ(seqs[0], 2999);
  EXPECT_EQ(seqs[1], 2999);
}

TEST(Consumer, PublishPathsTmpfileAndPrivate) {
  for (auto how : {rbtrace::PublishKind::kTmpFile, rbtrace::PublishKind::kPrivate}) {
    Fixture fx("publish");
    auto co = fx.opts();
    co.publish = how;
    co.fsync = true;
    auto c = rbtrace::Consumer::create(*fx.rb, co);
    ASSERT_TRUE(c);
    fx.write(1, 0, 100);
    ASSERT_EQ(c->stop(), 0);
    ASSERT_EQ(c->published().size(), 1u);
    std::vector<int64_t> seqs(2, -1);
    EXPECT_EQ(fx.events_in(c->published(), &seqs), 100u);
    EXPECT_TRUE(ctest::list(fx.dir + "/tmp").empty()) << "private name left behind";
    struct stat st;
    ASSERT_EQ(stat(c->published()[0].c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 1u);
  }
}

// Traces are the owner's to read unless file_mode says otherwise, on both
// publish paths, whatever the umask lets through; a directory the consumer
// creates is searchable by the same people; a mode beyond 0666 or without
// the owner's read and write is refused.
TEST(Consumer, TracesAreTheOwnersUnlessFileModeSaysOtherwise) {
  const mode_t old_umask = umask(022);
  for (auto how : {rbtrace::PublishKind::kTmpFile, rbtrace::PublishKind::kPrivate}) {
    for (unsigned want : {0600u, 0640u, 0644u}) {
      SCOPED_TRACE(std::to_string(want));
      Fixture fx("mode");
      auto co = fx.opts();
      co.dir = fx.dir + "/made";  // created by the consumer
      co.publish = how;
      co.file_mode = want;
      auto c = rbtrace::Consumer::create(*fx.rb, co);
      ASSERT_TRUE(c);
      fx.write(0, 0, 10);
      ASSERT_EQ(c->stop(), 0);
      ASSERT_EQ(c->published().size(), 1u);
      struct stat st;
      ASSERT_EQ(stat(c->published()[0].c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, want);
      ASSERT_EQ(stat(co.dir.c_str(), &st), 0);
      const unsigned dir_want = want == 0600 ? 0700u : want == 0640 ? 0750u : 0755u;
      EXPECT_EQ(st.st_mode & 07777, dir_want);
    }
  }
  umask(old_umask);
  Fixture fx("badmode");
  for (unsigned bad : {0400u, 0200u, 0700u, 04600u, 0606u | 01000u}) {
    auto co = fx.opts();
    co.file_mode = bad;
    rbtrace::Error err;
    EXPECT_FALSE(rbtrace::Consumer::create(*fx.rb, co, &err)) << bad;
    EXPECT_EQ(err.code, EINVAL);
    EXPECT_NE(err.message.find("file_mode"), std::string::npos) << err.message;
  }
}

TEST(Consumer, BackendFromEnvironmentAndFixedBuffers) {
  {
    Fixture fx("env");
    setenv("RBTRACE_IO_BACKEND", "pwritev", 1);
    auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
    unsetenv("RBTRACE_IO_BACKEND");
    ASSERT_TRUE(c);
    EXPECT_STREQ(c->stats().backend, "pwritev");
  }
  {
    Fixture fx("fixed");
    auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
    ASSERT_TRUE(c);
    EXPECT_STREQ(c->stats().backend, "io_uring") << c->stats().backend_note;
    // Pool + every ring page: 2 CPUs x 17 pages + the pool.
    EXPECT_GE(c->stats().registered_buffers, 2u * 17);
    fx.write(0, 0, 2000);
    ASSERT_EQ(c->stop(), 0);
    const auto s = c->stats();
    EXPECT_GT(s.pages_written, 0u);
    // A run of pages is one WRITEV (not fixed); a lone page (here the last,
    // partial one, taken by the flush's second pass) is a WRITE_FIXED.
    EXPECT_GT(s.fixed_writes, 0u);
    EXPECT_LE(s.fixed_writes, s.pages_written);
  }
}

TEST(Consumer, FixedBuffersStopAtTheFirstSwap) {
  Fixture fx("swap");
  rbtrace::Options o = fx.rb->options();
  auto spare = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(spare);
  auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
  ASSERT_TRUE(c);
  ASSERT_STREQ(c->stats().backend, "io_uring") << c->stats().backend_note;
  fx.write(0, 0, 2000);
  ASSERT_EQ(c->flush(), 0);
  const auto before = c->stats();
  EXPECT_GT(before.fixed_writes, 0u);  // the lone partial page (see above)
  // Nobody owns CPU 0 now: the swap may run here (ring_buffer.h).
  ASSERT_EQ(fx.rb->swap_cpu(*spare, 0), 0);
  fx.write(0, 2000, 2000);
  ASSERT_EQ(c->stop(), 0);
  const auto s = c->stats();
  EXPECT_NE(s.backend_note.find("swapped"), std::string::npos) << s.backend_note;
  EXPECT_EQ(s.fixed_writes, before.fixed_writes) << "no fixed write after the swap";
  EXPECT_GT(s.pages_written, before.pages_written);
  std::vector<int64_t> seqs(2, -1);
  EXPECT_EQ(fx.events_in(c->published(), &seqs), 4000u);
  EXPECT_EQ(seqs[0], 3999);
}

TEST(Consumer, CmdlinesAndStatsReachTheFile) {
  Fixture fx("cmdlines");
  auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
  ASSERT_TRUE(c);
  std::atomic<bool> flushed{false}, written{false};
  std::atomic<int> writer_tid{0};
  std::thread t([&] {
    ASSERT_EQ(pthread_setname_np(pthread_self(), "rbt-writer-7"), 0);
    writer_tid.store(static_cast<int>(gettid()), std::memory_order_relaxed);
    ASSERT_EQ(fx.rb->bind_thread(1), 0);
    for (uint64_t i = 0; i < 50; i++)
      ASSERT_EQ(rbtrace_events::ctest_hello::emit(*fx.rb, i, "hi"), 0);
    // release: pairs with the acquire load below; the events are written.
    written.store(true, std::memory_order_release);
    // Alive until the consumer has seen its records (the name is read from
    // /proc/self/task/TID/comm by the consumer thread).
    // acquire: pairs with the release store below (a plain hand-shake).
    while (!flushed.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
    fx.rb->unbind_thread();
  });
  // acquire: pairs with the release store in the writer thread.
  while (!written.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(c->flush(), 0);
  // release: pairs with the acquire load in the writer thread.
  flushed.store(true, std::memory_order_release);
  t.join();
  ASSERT_EQ(c->stop(), 0);
  ASSERT_EQ(c->published().size(), 1u);
  ctest::Trace tr;
  ASSERT_EQ(ctest::walk_trace(c->published()[0], &tr), "");
  EXPECT_EQ(tr.cpus[1].nevents, 50u);
  EXPECT_NE(tr.cmdlines.find(" rbt-writer-7\n"), std::string::npos)
      << tr.cmdlines << "writer tid " << writer_tid.load(std::memory_order_relaxed) << ", pid "
      << getpid();
  EXPECT_EQ(ctest::stat_value(tr.cpus[1].stats, "entries"), 50);
  EXPECT_EQ(ctest::stat_value(tr.cpus[1].stats, "segment events"), 50);
}

TEST(Recover, LeavesLiveSessionsAloneAndRejectsCorruptSidecars) {
  Fixture fx("recover");
  auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
  ASSERT_TRUE(c);
  fx.write(0, 0, 10);
  rbtrace::RecoverResult r;
  std::string err;
  EXPECT_EQ(rbtrace::recover_spool(fx.dir, &r, &err), 0) << err;
  EXPECT_EQ(r.sessions_live, 1u);
  EXPECT_TRUE(r.published.empty());
  ASSERT_EQ(c->stop(), 0);

  // A fake dead session with a corrupt sidecar: a clear error, no file.
  const std::string s = fx.dir + "/spool/20000101-000000-1";
  ASSERT_EQ(mkdir(s.c_str(), 0700), 0);
  std::ofstream(s + "/000001.meta") << "rbtrace-spool 1\nsession 20000101-000000-1\nsegment 1\n"
                                       "checksum 0000000000000000\n";
  std::ofstream(s + "/000001.cpu0") << std::string(4096, 'x');
  rbtrace::RecoverResult r2;
  EXPECT_EQ(rbtrace::recover_spool(fx.dir, &r2, &err), -EINVAL);
  EXPECT_NE(err.find("checksum"), std::string::npos) << err;
  EXPECT_EQ(ctest::traces(fx.dir).size(), 1u) << "only the consumer's own file";
  // A hostile sidecar cannot crash it either: truncate at every length.
  std::string good;
  ASSERT_TRUE(ctest::read_file(s + "/000001.meta", &good));
  for (size_t n = 0; n < good.size(); n++) {
    std::ofstream(s + "/000001.meta", std::ios::trunc) << good.substr(0, n);
    rbtrace::RecoverResult r3;
    EXPECT_NE(rbtrace::recover_spool(fx.dir, &r3, &err), 0);
  }
}

// One Consumer per ring: a second one (an application's own and one the
// control socket would start) is refused with EBUSY until the first has
// stopped; then a new one records.
TEST(ConsumerContract, OneConsumerPerRing) {
  Fixture fx("one", 1);
  ASSERT_TRUE(fx.rb);
  rbtrace::Error err;
  auto first = rbtrace::Consumer::create(*fx.rb, fx.opts(), &err);
  ASSERT_TRUE(first) << err.message;
  auto second = rbtrace::Consumer::create(*fx.rb, fx.opts(), &err);
  EXPECT_FALSE(second);
  EXPECT_EQ(err.code, EBUSY);
  EXPECT_NE(err.message.find("already has a consumer"), std::string::npos) << err.message;
  ASSERT_EQ(first->stop(), 0);
  auto third = rbtrace::Consumer::create(*fx.rb, fx.opts(), &err);
  ASSERT_TRUE(third) << err.message;
  ASSERT_EQ(third->stop(), 0);
  third.reset();
  first.reset();
}

}  // namespace

// Events refused because their thread found no free CPU slot are in no
// CPU's counters; the file carries their ring-wide count in CPU 0's CPUSTAT
// (tracedat.h, ring_stats_text) and `rbtrace report` prints it last.
TEST(Consumer, RefusalsForWantOfASlotReachTheFile) {
  Fixture fx("noslot", 1);
  auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());
  ASSERT_TRUE(c);
  std::atomic<bool> bound{false}, done{false};
  std::thread owner([&] {
    ASSERT_EQ(fx.rb->bind_thread(0), 0);
    unsigned char p[ctest::kPayload];
    ctest::make_payload(p, 0, 0);
    ASSERT_EQ(fx.rb->write(p, ctest::kPayload), 0);
    // release: pairs with the test thread's acquire load of `bound` (the
    // slot is ours before it looks).
    bound.store(true, std::memory_order_release);
    // acquire: pairs with the test thread's release store of `done`.
    while (!done.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
    fx.rb->unbind_thread();
  });
  // acquire: pairs with the owner's release store of `bound`.
  while (!bound.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
  std::thread other([&] {  // the one slot is taken: every event is refused
    unsigned char p[ctest::kPayload] = {};
    for (int i = 0; i < 7; i++) EXPECT_EQ(fx.rb->write(p, ctest::kPayload), -EBUSY);
  });
  other.join();
  EXPECT_EQ(fx.rb->no_cpu_dropped(), 7u);
  // release: pairs with the owner's acquire load of `done`.
  done.store(true, std::memory_order_release);
  owner.join();
  ASSERT_EQ(c->stop(), 0);
  ASSERT_EQ(c->published().size(), 1u);
  ctest::Trace tr;
  ASSERT_EQ(ctest::walk_trace(c->published()[0], &tr), "");
  EXPECT_EQ(tr.cpus[0].nevents, 1u);
  EXPECT_EQ(ctest::stat_value(tr.cpus[0].stats, "no slot dropped (all CPUs)"), 7) << tr.cpus[0].stats;
  EXPECT_EQ(ctest::stat_value(tr.cpus[0].stats, "entries"), 1);

  std::string err;
  auto r = rbtrace::TraceDatReader::open(c->published()[0], &err);
  ASSERT_TRUE(r) << err;
  EXPECT_EQ(rbtrace::no_slot_dropped_in(r->cpus()[0].stats), 7u);
  char* text = nullptr;
  size_t len = 0;
  FILE* m = open_memstream(&text, &len);
  ASSERT_EQ(rbtrace::write_report_text(*r, m, {}, &err), 0) << err;
  std::fclose(m);
  const std::string report(text, len);
  std::free(text);
  EXPECT_NE(report.find("\n[7 EVENTS REFUSED: NO FREE CPU SLOT (all CPUs)]\n"), std::string::npos)
      << report;
}

// Threads that write and exit before the consumer ever looks are still
// named in the file: their names were recorded when they claimed a slot
// (issue 11, part 3), not read from /proc later (where they are gone).
TEST(Consumer, ShortLivedThreadsAreNamed) {
  Fixture fx("names", 2);
  std::vector<int32_t> tids(12);
  for (size_t i = 0; i < tids.size(); i++) {
    std::thread t([&, i] {
      const std::string n = "short-" + std::to_string(i);
      ASSERT_EQ(pthread_setname_np(pthread_self(), n.c_str()), 0);
      tids[i] = static_cast<int32_t>(gettid());
      // Typed events: their common header carries the writer's tid.
      for (uint64_t k = 0; k < 3; k++) ASSERT_EQ(rbtrace_events::ctest_hello::emit(*fx.rb, k, "x"), 0);
    });
    t.join();
  }
  auto c = rbtrace::Consumer::create(*fx.rb, fx.opts());  // after they all exited
  ASSERT_TRUE(c);
  ASSERT_EQ(c->stop(), 0);
  ASSERT_EQ(c->published().size(), 1u);
  ctest::Trace tr;
  ASSERT_EQ(ctest::walk_trace(c->published()[0], &tr), "");
  for (size_t i = 0; i < tids.size(); i++) {
    const std::string line = std::to_string(tids[i]) + " short-" + std::to_string(i) + "\n";
    EXPECT_NE(("\n" + tr.cmdlines).find("\n" + line), std::string::npos)
        << line << "in:\n" << tr.cmdlines;
  }
}
