// A thread pool of 256 threads (64 x this machine's CPU count), all alive at
// once, each emitting a known number of events through RBTRACE_EVENT into a
// ring with default Options and a consumer recording to disk (issue 11,
// "Show", part 1: CPU slots on demand):
//   - every event is in the files, under its own writer's tid, and every
//     thread is named there;
//   - `trace-cmd report` reads the files and counts the same events per
//     thread and the same CPU count;
//   - the accounting is exact: written == in the files, per CPU, with the
//     refusals counter at 0.
// The same pool with a slot limit of 8: the threads that found no slot are
// refused on every event, and that count is in the file (CPU 0's stats,
// `rbtrace report`) and in `rbtrace stat PID`.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/consumer_common.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(pool, job, ((int32_t, tid))((uint32_t, k)))

namespace {

constexpr uint32_t kThreads = 256;
constexpr uint32_t kEvents = 200;

using rbtrace_test::Proc;
using rbtrace_test::run;

// The pool: kThreads threads, all alive until every one has emitted its
// kEvents. Returns the tids; *refused counts the emits that failed.
std::vector<int32_t> run_pool(rbtrace::RingBuffer& rb, uint64_t* refused) {
  std::vector<int32_t> tids(kThreads, 0);
  std::atomic<uint32_t> done{0};
  std::atomic<bool> leave{false};
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> pool;
  pool.reserve(kThreads);
  for (uint32_t i = 0; i < kThreads; i++) {
    pool.emplace_back([&, i] {
      const std::string name = "pool-" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      const int32_t tid = static_cast<int32_t>(gettid());
      tids[i] = tid;
      for (uint32_t k = 0; k < kEvents; k++)
        if (rbtrace_events::pool_job::emit(rb, tid, k) != 0) bad.fetch_add(1);
      done.fetch_add(1);
      while (!leave.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  }
  while (done.load() != kThreads) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Every thread is alive here: each holds its slot.
  leave.store(true);
  for (auto& t : pool) t.join();
  *refused = bad.load();
  return tids;
}

struct FileCounts {
  std::map<int32_t, uint64_t> per_tid;  // events of the pool, by common_pid
  uint64_t wrong_tid = 0;               // field tid != common_pid
  uint64_t unnamed = 0;                 // pool tids the file does not name
  uint32_t max_cpus_in_file = 0;
  uint64_t no_slot = 0;                 // CPU 0's "no slot dropped"
  std::vector<uint64_t> per_cpu;        // events per CPU, all files
};

FileCounts read_files(const std::vector<std::string>& files, const std::vector<int32_t>& tids) {
  FileCounts fc;
  std::string err;
  for (const std::string& f : files) {
    auto r = rbtrace::TraceDatReader::open(f, &err);
    EXPECT_TRUE(r) << f << ": " << err;
    if (!r) continue;
    fc.max_cpus_in_file = std::max(fc.max_cpus_in_file, r->ncpus());
    if (fc.per_cpu.size() < r->ncpus()) fc.per_cpu.resize(r->ncpus(), 0);
    fc.no_slot += rbtrace::no_slot_dropped_in(r->cpus()[0].stats);
    std::map<int32_t, uint64_t> here;
    rbtrace::TraceRecord rec;
    while (r->next(&rec) == 1) {
      if (!rec.event || rec.event->name != "job") continue;
      const rbtrace::TraceField* ftid = nullptr;
      for (const auto& fld : rec.event->fields)
        if (fld.name == "tid") ftid = &fld;
      EXPECT_NE(ftid, nullptr);
      if (!ftid) break;
      rbtrace::TraceValue v;
      EXPECT_TRUE(rbtrace::TraceDatReader::field_value(rec, *ftid, &v, &err)) << err;
      if (v.i != rec.pid) fc.wrong_tid++;
      fc.per_tid[rec.pid]++;
      here[rec.pid]++;
      fc.per_cpu[rec.cpu]++;
    }
    EXPECT_TRUE(r->error().empty()) << r->error();
    for (uint32_t i = 0; i < kThreads; i++)
      if (here.count(tids[i]) && r->comm(tids[i]) != "pool-" + std::to_string(i)) fc.unnamed++;
  }
  return fc;
}

// The consumer makes subdirectories (spool, tmp): removed with the tree.
struct Dir {
  std::string path = ctest::make_temp_dir("/tmp", "pool");
  ~Dir() { ctest::remove_tree(path); }
};

rbtrace::ConsumerOptions consumer_options(const std::string& dir) {
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.fsync = false;
  co.on_message = [](const std::string& m) { std::fprintf(stderr, "consumer: %s\n", m.c_str()); };
  return co;
}

}  // namespace

TEST(ThreadPool, EveryThreadTracesWithDefaultOptions) {
  const Dir dir;
  ASSERT_FALSE(dir.path.empty());
  auto rb = rbtrace::RingBuffer::create(rbtrace::Options{});  // default options
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->ncpus(), 4u);
  ASSERT_GE(rb->max_cpus(), kThreads);
  auto consumer = rbtrace::Consumer::create(*rb, consumer_options(dir.path));
  ASSERT_TRUE(consumer);
  uint64_t refused = 0;
  const std::vector<int32_t> tids = run_pool(*rb, &refused);
  EXPECT_EQ(refused, 0u);
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
  // All alive at once: one slot each (the 4 made at create among them).
  EXPECT_EQ(rb->ncpus(), kThreads);
  ASSERT_EQ(consumer->stop(), 0);
  ASSERT_FALSE(consumer->published().empty());

  const FileCounts fc = read_files(consumer->published(), tids);
  uint64_t total = 0;
  uint64_t short_threads = 0;
  for (uint32_t i = 0; i < kThreads; i++) {
    const auto it = fc.per_tid.find(tids[i]);
    const uint64_t n = it == fc.per_tid.end() ? 0 : it->second;
    short_threads += n != kEvents;
    total += n;
  }
  EXPECT_EQ(total, uint64_t{kThreads} * kEvents);
  EXPECT_EQ(short_threads, 0u);
  EXPECT_EQ(fc.wrong_tid, 0u) << "events attributed to another thread";
  EXPECT_EQ(fc.unnamed, 0u) << "threads the file does not name";
  EXPECT_EQ(fc.no_slot, 0u);
  EXPECT_EQ(fc.max_cpus_in_file, kThreads);
  // The identity, per CPU: written (entries) == read by the consumer ==
  // in the files; nothing overwritten or refused.
  const rbtrace::ConsumerStats cs = consumer->stats();
  for (uint32_t c = 0; c < rb->ncpus(); c++) {
    const rbtrace::CpuStats s = rb->stats(c);
    EXPECT_EQ(s.entries, kEvents) << "CPU " << c;
    EXPECT_EQ(s.lost(), 0u) << "CPU " << c;
    EXPECT_EQ(s.read, s.entries) << "CPU " << c;
    ASSERT_LT(c, cs.events_published.size());
    EXPECT_EQ(cs.events_published[c], s.entries) << "CPU " << c;
    EXPECT_EQ(cs.events_lost[c], 0u) << "CPU " << c;
    EXPECT_EQ(fc.per_cpu[c], s.entries) << "CPU " << c;
  }

  // trace-cmd reads the same: its CPU count, and per pool thread the same
  // number of events.
  ASSERT_EQ(access(RBTRACE_TRACE_CMD, X_OK), 0) << RBTRACE_TRACE_CMD << " is needed";
  std::map<int32_t, uint64_t> tc_per_pid;
  std::map<int32_t, uint32_t> index_of;
  for (uint32_t i = 0; i < kThreads; i++) index_of[tids[i]] = i;
  for (const std::string& f : consumer->published()) {
    const Proc p = run(dir.path, {RBTRACE_TRACE_CMD, "report", f});
    ASSERT_EQ(p.status, 0) << p.err.substr(0, 2000);
    std::istringstream in(p.out);
    std::string line;
    bool cpus_line = false;
    while (std::getline(in, line)) {
      if (line.rfind("cpus=", 0) == 0) {
        cpus_line = true;
        EXPECT_EQ(line, "cpus=" + std::to_string(kThreads)) << f;
        continue;
      }
      const size_t at = line.find(": job:");
      if (at == std::string::npos) continue;
      // "<comm>-<pid> [cpu] ts: job: tid=N k=M"
      const size_t br = line.find(" [");
      const size_t dash = line.rfind('-', br);
      ASSERT_NE(dash, std::string::npos) << line;
      const int32_t pid = std::stoi(line.substr(dash + 1, br - dash - 1));
      EXPECT_NE(line.find("tid=" + std::to_string(pid) + " "), std::string::npos) << line;
      // trace-cmd names the thread as it was named when it claimed a slot.
      const auto who = index_of.find(pid);
      ASSERT_NE(who, index_of.end()) << line;
      std::string comm = line.substr(0, dash);
      comm.erase(0, comm.find_first_not_of(' '));
      EXPECT_EQ(comm, "pool-" + std::to_string(who->second)) << line;
      tc_per_pid[pid]++;
    }
    EXPECT_TRUE(cpus_line) << f;
  }
  EXPECT_EQ(tc_per_pid, fc.per_tid);
  std::printf("thread pool: %u threads x %u events, default Options: %u slots made (limit %u), "
              "%llu events in %zu files, 0 refused\n",
              kThreads, kEvents, rb->ncpus(), rb->max_cpus(),
              static_cast<unsigned long long>(total), consumer->published().size());
}

TEST(ThreadPool, ALimitOf8RefusesAndTheFileAndStatSayHowMany) {
  const Dir dir;
  ASSERT_FALSE(dir.path.empty());
  rbtrace::Options o;
  o.max_cpus = 8;
  auto rb = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->max_cpus(), 8u);
  auto snap = rbtrace::Snapshot::attach(*rb);
  ASSERT_TRUE(snap);
  rbtrace::Error err;
  auto server = rbtrace::control::Server::start(*snap, rbtrace::control::ServerOptions{}, &err);
  ASSERT_TRUE(server) << err.message;
  auto consumer = rbtrace::Consumer::create(*rb, consumer_options(dir.path));
  ASSERT_TRUE(consumer);
  uint64_t refused = 0;
  const std::vector<int32_t> tids = run_pool(*rb, &refused);
  EXPECT_EQ(rb->ncpus(), 8u);
  EXPECT_EQ(refused, uint64_t{kThreads - 8} * kEvents);
  EXPECT_EQ(rb->no_cpu_dropped(), refused);

  // rbtrace stat PID says it.
  const Proc st = run(dir.path, {RBTRACE_CLI, "stat", std::to_string(getpid())});
  ASSERT_EQ(st.status, 0) << st.out << st.err;
  EXPECT_NE(st.out.find("refused for want of a CPU slot (all CPUs): " + std::to_string(refused) +
                        " events"),
            std::string::npos)
      << st.out;
  EXPECT_NE(st.out.find("8 CPUs"), std::string::npos) << st.out;

  ASSERT_EQ(consumer->stop(), 0);
  const FileCounts fc = read_files(consumer->published(), tids);
  uint64_t total = 0;
  for (const auto& [tid, n] : fc.per_tid) {
    EXPECT_EQ(n, kEvents) << "tid " << tid;
    total += n;
  }
  EXPECT_EQ(fc.per_tid.size(), 8u);
  EXPECT_EQ(total, uint64_t{8} * kEvents);
  EXPECT_EQ(fc.wrong_tid, 0u);
  EXPECT_EQ(fc.unnamed, 0u);
  // Each file carries the ring's count when it was closed: the last one
  // has them all.
  std::string e2;
  auto last = rbtrace::TraceDatReader::open(consumer->published().back(), &e2);
  ASSERT_TRUE(last) << e2;
  EXPECT_EQ(rbtrace::no_slot_dropped_in(last->cpus()[0].stats), refused);
  const Proc rep = run(dir.path, {RBTRACE_CLI, "report", consumer->published().back()});
  ASSERT_EQ(rep.status, 0) << rep.err.substr(0, 2000);
  EXPECT_NE(rep.out.find("[" + std::to_string(refused) + " EVENTS REFUSED: NO FREE CPU SLOT (all CPUs)]"),
            std::string::npos);
  std::printf("thread pool: %u threads x %u events, limit 8: %llu events in the files, %llu "
              "refused (in the file, the report and rbtrace stat)\n",
              kThreads, kEvents, static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(refused));
}
