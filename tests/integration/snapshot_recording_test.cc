// A snapshot takes nothing from a recording (issue 11, part 5): a ring with
// a Consumer recording to disk and a Snapshot attached; two writers emit
// numbered events while 500 snapshots are taken, every 10th into /dev/full
// (it fails on the full device). At the end the recording holds every event
// each writer was told was written, exactly once and in order, and every
// snapshot that succeeded is a valid trace.dat with events in it.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/consumer_common.h"

RBTRACE_EVENT(snaprec, ev, ((uint32_t, cpu))((uint64_t, seq)))

namespace {

constexpr uint32_t kCpus = 2;
constexpr int kSnapshots = 500;

// The value of field `name` of `rec`, or -1.
int64_t field(const rbtrace::TraceRecord& rec, const char* name) {
  for (const auto& f : rec.event->fields) {
    if (f.name != name) continue;
    rbtrace::TraceValue v;
    std::string err;
    if (!rbtrace::TraceDatReader::field_value(rec, f, &v, &err)) return -1;
    return static_cast<int64_t>(v.u);
  }
  return -1;
}

}  // namespace

TEST(SnapshotRecording, FiveHundredSnapshotsTakeNothingFromTheRecording) {
  const std::string dir = ctest::make_temp_dir("/tmp", "snaprec");
  rbtrace::Options o;
  o.ncpus = kCpus;
  o.pages_per_cpu = 64;
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(rb);
  rbtrace::Error e;
  auto snap = rbtrace::Snapshot::attach(*rb, &e);
  ASSERT_TRUE(snap) << e.message;
  rbtrace::ConsumerOptions co;
  co.dir = dir + "/rec";
  co.fsync = false;
  // Rotate often (segments of 2 MiB): snapshots land across segment
  // boundaries, and the final flush finds pages handed back and not yet
  // read (it once stopped one page per CPU short of them: its bound did
  // not count them).
  co.segment_bytes = 2u << 20;
  co.on_message = [](const std::string& m) { std::fprintf(stderr, "consumer: %s\n", m.c_str()); };
  auto consumer = rbtrace::Consumer::create(*rb, co, &e);
  ASSERT_TRUE(consumer) << e.message;
  ASSERT_TRUE(rb->recorded());

  std::atomic<bool> stop{false};
  std::atomic<int> bound{0};
  uint64_t written[kCpus] = {}, refused[kCpus] = {};
  std::vector<std::thread> writers;
  for (uint32_t c = 0; c < kCpus; c++) {
    writers.emplace_back([&, c] {
      ASSERT_EQ(rb->bind_thread(c), 0);
      bound.fetch_add(1);
      uint64_t next = 1;  // the sequence number advances only when written
      while (!stop.load(std::memory_order_relaxed)) {
        if (rbtrace_events::snaprec_ev::emit(*rb, c, next) == 0) {
          next++;
        } else {
          refused[c]++;
          std::this_thread::sleep_for(std::chrono::microseconds(100));  // full, or swapped under us
        }
        if ((next & 63) == 0) std::this_thread::yield();
      }
      written[c] = next - 1;
      rb->unbind_thread();
    });
  }
  while (bound.load() < static_cast<int>(kCpus)) std::this_thread::yield();

  int ok = 0, failed = 0, valid = 0;
  uint64_t snapshot_events = 0;
  for (int i = 0; i < kSnapshots; i++) {
    const bool full_disk = i % 10 == 9;
    const std::string path = dir + "/snap-" + std::to_string(i) + ".dat";
    const int fd = full_disk ? open("/dev/full", O_WRONLY | O_CLOEXEC)
                             : open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    std::string err;
    rbtrace::SnapshotResult res;
    const int rc = snap->take(fd, -1, &err, &res, std::chrono::milliseconds(2000));
    if (full_disk) {
      EXPECT_NE(rc, 0) << "a snapshot into /dev/full succeeded";
      failed += rc != 0;
    } else {
      ASSERT_EQ(rc, 0) << "snapshot " << i << ": " << err;
      ok++;
      auto r = rbtrace::TraceDatReader::open_fd(fd, &err);
      if (r) {
        rbtrace::TraceRecord rec;
        uint64_t n = 0;
        while (r->next(&rec) == 1) n++;
        if (r->error().empty()) valid++;
        snapshot_events += n;
      } else {
        ADD_FAILURE() << "snapshot " << i << " unreadable: " << err;
      }
      unlink(path.c_str());
    }
    close(fd);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  stop.store(true);
  for (auto& t : writers) t.join();
  ASSERT_EQ(consumer->stop(), 0);
  EXPECT_FALSE(rb->recorded());

  // The recording: per CPU, 1..written exactly once, in order.
  uint64_t next[kCpus] = {1, 1};
  uint64_t dup_or_gap = 0, events = 0;
  std::string err;
  for (const std::string& f : consumer->published()) {
    auto r = rbtrace::TraceDatReader::open(f, &err);
    ASSERT_TRUE(r) << f << ": " << err;
    for (uint32_t c = 0; c < kCpus; c++) {
      rbtrace::TraceRecord rec;
      while (r->next_on_cpu(c, &rec) == 1) {
        if (!rec.event || rec.event->name != "ev") continue;
        events++;
        const int64_t seq = field(rec, "seq");
        if (seq != static_cast<int64_t>(next[c])) {
          if (dup_or_gap++ < 5)
            ADD_FAILURE() << "CPU " << c << ": sequence " << seq << " where " << next[c]
                          << " was due (" << f << ")";
          next[c] = static_cast<uint64_t>(seq) + 1;
          continue;
        }
        next[c]++;
      }
    }
    EXPECT_TRUE(r->error().empty()) << r->error();
  }
  for (uint32_t c = 0; c < kCpus; c++)
    EXPECT_EQ(next[c] - 1, written[c]) << "CPU " << c << ": the recording ends early";
  EXPECT_EQ(dup_or_gap, 0u);
  EXPECT_EQ(events, written[0] + written[1]);
  EXPECT_EQ(ok + failed, kSnapshots);
  EXPECT_EQ(failed, kSnapshots / 10);
  EXPECT_EQ(valid, ok);
  EXPECT_GT(snapshot_events, 0u);
  std::printf("snapshot recording: %d snapshots (%d into /dev/full, failed), %llu events "
              "recorded (%llu + %llu), %llu refused, %llu events in the snapshots, %zu files\n",
              kSnapshots, failed, static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(written[0]),
              static_cast<unsigned long long>(written[1]),
              static_cast<unsigned long long>(refused[0] + refused[1]),
              static_cast<unsigned long long>(snapshot_events), consumer->published().size());
  ctest::remove_tree(dir + "/rec");
  ctest::remove_tree(dir);
}
