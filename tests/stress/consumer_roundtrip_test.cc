// consumer_roundtrip_test.cc - the consumer end to end, exact: >= 10 million
// events over 4 CPUs go through the ring, the consumer (io_uring and
// pwritev), spool files and published trace.dat files; per CPU,
//   write attempts == ring entries + ring refusals
//   ring entries   == events in the published files + consumer losses
//                     (+ overrun in overwrite mode)
// and every payload read back from the files is bit-identical to what was
// written, in order. The files are read with an independent walker
// (tests/consumer_common.h).
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "rbtrace_test/consumer_common.h"
#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CONSUMER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CONSUMER_SANITIZED 1
#endif
#endif

namespace {

using rbtrace::IoBackendKind;

// Events per case: the full 10 million in a normal build; a tenth under the
// sanitizers (CI runs this binary under ASan and TSan too, ~10x slower).
// RBTRACE_ROUNDTRIP_EVENTS overrides.
#ifdef CONSUMER_SANITIZED
constexpr uint64_t kScaleDiv = 10;
#else
constexpr uint64_t kScaleDiv = 1;
#endif

struct Case {
  IoBackendKind backend;
  rbtrace::Mode mode;
  uint32_t page_size;
  uint64_t events_per_cpu;
  bool vectored = false;  // io_uring: consecutive pages as one WRITEV
};

class RoundTrip : public ::testing::TestWithParam<Case> {};

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : dflt;
}

TEST_P(RoundTrip, ExactPerCpuAndBitIdentical) {
  const Case c = GetParam();
  constexpr uint32_t kCpus = 4;
  const uint64_t per_cpu =
      env_u64("RBTRACE_ROUNDTRIP_EVENTS", c.events_per_cpu * kCpus / kScaleDiv) / kCpus;
  const std::string dir = ctest::make_temp_dir("/dev/shm", "roundtrip");
  ASSERT_FALSE(dir.empty());

  rbtrace::Options o;
  o.ncpus = kCpus;
  o.page_size = c.page_size;
  o.pages_per_cpu = 128;
  o.mode = c.mode;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  ASSERT_TRUE(rb) << err.message;

  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.backend = c.backend;
  co.io_uring_vectored = c.vectored;
  co.period_us = 1000;
  co.segment_bytes = (32ull << 20) / kScaleDiv;  // several segments: rotation by size
  co.fsync = false;
  std::vector<std::string> msgs;
  std::mutex mm;
  co.on_message = [&](const std::string& m) {
    std::lock_guard<std::mutex> g(mm);
    msgs.push_back(m);
  };
  auto cons = rbtrace::Consumer::create(*rb, co, &err);
  ASSERT_TRUE(cons) << err.message;
  EXPECT_STREQ(cons->stats().backend, ctest::backend_name(c.backend)) << cons->stats().backend_note;
  if (c.backend == IoBackendKind::kIoUring && !c.vectored) {
    EXPECT_GT(cons->stats().registered_buffers, 0u) << cons->stats().backend_note;
  }

  std::vector<uint64_t> attempts(kCpus), ok(kCpus);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> writers;
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    writers.emplace_back([&, cpu] {
      ASSERT_EQ(rb->bind_thread(cpu), 0);
      unsigned char p[ctest::kPayload];
      uint64_t seq = 0, tries = 0;
      while (seq < per_cpu) {
        ctest::make_payload(p, cpu, seq);
        tries++;
        if (rb->write(p, ctest::kPayload) == 0) {
          seq++;
        } else {
          // Full (producer/consumer): the ring refused and counted it; this
          // test's writer chooses to give the consumer a moment.
          std::this_thread::yield();
        }
      }
      attempts[cpu] = tries;
      ok[cpu] = seq;
      rb->unbind_thread();
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_EQ(cons->stop(), 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const rbtrace::ConsumerStats cs = cons->stats();
  const auto files = cons->published();
  EXPECT_GE(files.size(), 2u) << "rotation by size should give several files";
  {
    std::lock_guard<std::mutex> g(mm);
    EXPECT_TRUE(msgs.empty()) << msgs.front();
  }

  // Read everything back.
  std::vector<uint64_t> in_files(kCpus), missed_stored(kCpus);
  std::vector<int64_t> seqs(kCpus, -1);
  std::string last_stats[kCpus];
  for (const std::string& f : files) {
    ctest::Trace t;
    const std::string bad = ctest::walk_trace(f, &t, &seqs);
    ASSERT_EQ(bad, "") << f;
    ASSERT_EQ(t.ncpus, kCpus);
    ASSERT_EQ(t.page_size, c.page_size);
    for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
      in_files[cpu] += t.cpus[cpu].nevents;
      missed_stored[cpu] += t.cpus[cpu].missed_stored;
      if (!t.cpus[cpu].stats.empty()) last_stats[cpu] = t.cpus[cpu].stats;
    }
  }
  EXPECT_EQ(ctest::traces(dir).size(), files.size());
  EXPECT_TRUE(ctest::list(dir + "/spool").empty()) << "spool left behind";

  // What stop() left in the ring, if anything (it must be nothing): said
  // per CPU so that a failure of the identity below tells a page left
  // behind (drained here) from one miscounted.
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    rbtrace::DataPage* pg = rb->alloc_read_page();
    ASSERT_NE(pg, nullptr);
    uint32_t left = 0;
    for (int full = 1; full >= 0; full--)
      while (rb->read_page(&pg, cpu, full != 0) > 0) left++;
    rb->free_read_page(pg);
    EXPECT_EQ(left, 0u) << "cpu " << cpu << ": pages still in the ring after stop()";
  }

  uint64_t total_written = 0, total_files = 0;
  for (uint32_t cpu = 0; cpu < kCpus; cpu++) {
    const rbtrace::CpuStats s = rb->stats(cpu);
    SCOPED_TRACE("cpu " + std::to_string(cpu));
    EXPECT_EQ(attempts[cpu], s.entries + s.dropped + s.commit_overrun + s.nested_dropped + s.disabled);
    EXPECT_EQ(ok[cpu], s.entries);
    EXPECT_EQ(s.entries, s.read + s.overrun) << "everything committed was drained";
    EXPECT_EQ(s.read, cs.events_read[cpu]);
    EXPECT_EQ(in_files[cpu], cs.events_published[cpu]);
    // The round trip: written == in files + counted losses.
    EXPECT_EQ(s.entries, in_files[cpu] + s.overrun + cs.events_lost[cpu]);
    EXPECT_EQ(cs.events_lost[cpu], 0u) << "no I/O failure expected here";
    if (c.mode == rbtrace::Mode::kProducerConsumer) {
      // Nothing committed was lost: the seqs are exactly 0..ok-1.
      EXPECT_EQ(seqs[cpu] + 1, static_cast<int64_t>(ok[cpu]));
    }
    // Losses reported inside the pages never exceed the counted ones.
    EXPECT_LE(missed_stored[cpu], s.lost());
    // The last file's stats carry the ring's counters.
    EXPECT_EQ(ctest::stat_value(last_stats[cpu], "dropped events"), static_cast<int64_t>(s.dropped));
    total_written += s.entries;
    total_files += in_files[cpu];
  }
  EXPECT_GE(total_written, per_cpu * kCpus);
  std::printf("[roundtrip] %s %s page %u: %llu events written, %llu in %zu files, %.2f s, "
              "%llu pages (%llu fixed writes)\n",
              cs.backend, c.mode == rbtrace::Mode::kOverwrite ? "overwrite" : "pc", c.page_size,
              static_cast<unsigned long long>(total_written),
              static_cast<unsigned long long>(total_files), files.size(), secs,
              static_cast<unsigned long long>(cs.pages_written),
              static_cast<unsigned long long>(cs.fixed_writes));
  ctest::remove_tree(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, RoundTrip,
    ::testing::Values(
        Case{IoBackendKind::kIoUring, rbtrace::Mode::kProducerConsumer, 4096, 2500000},
        Case{IoBackendKind::kPwritev, rbtrace::Mode::kProducerConsumer, 4096, 2500000},
        Case{IoBackendKind::kIoUring, rbtrace::Mode::kProducerConsumer, 4096, 1000000, true},
        Case{IoBackendKind::kIoUring, rbtrace::Mode::kOverwrite, 65536, 500000},
        Case{IoBackendKind::kPwritev, rbtrace::Mode::kOverwrite, 65536, 500000}),
    [](const ::testing::TestParamInfo<Case>& i) {
      return std::string(ctest::backend_name(i.param.backend)) + (i.param.vectored ? "_vec" : "") +
             (i.param.mode == rbtrace::Mode::kOverwrite ? "_overwrite_" : "_pc_") +
             std::to_string(i.param.page_size / 1024) + "k";
    });

}  // namespace
