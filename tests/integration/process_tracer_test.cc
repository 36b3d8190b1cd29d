// Integration: the process-wide tracer (rbtrace/tracer.h; issue 15, item 3).
// A library compiled without any rbtrace handle (tracedlib: links
// rbtrace::ringbuf only) traces into its host's process ring:
//   - a host that set nothing up: every tracepoint returns -ENODEV, nothing
//     is written (tracedlib_host, and tracedlib_autohost without
//     RBTRACE_RECORD);
//   - a host that made the process ring and a Consumer on it (in this
//     process): every event of the library's, on three threads, is in the
//     published files, exactly once;
//   - a host with no rbtrace code, linked with rbtrace::autostart and run
//     with RBTRACE_RECORD=DIR: the environment alone records it; a bad
//     variable is refused with its name and nothing is recorded; a forked
//     child's exit leaves the parent's recording alone.
// And the consumer's side of it: event types registered after a segment
// began (a library loaded later; autostart starts before the host's
// initializers) are in that segment's file, forced here by registering one
// between two writes.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/consumer_common.h"
#include "rbtrace_test/test_files.h"
#include "tracedlib.h"

using namespace rbtrace;

namespace {

// What the published traces of a directory hold, by event name.
struct Seen {
  std::map<std::string, uint64_t> count;  // "system:name" -> records
  std::set<uint64_t> item_n;              // tracedlib:item's n values
  uint64_t item_dups = 0;
  uint64_t bad_what = 0;
  uint64_t unknown = 0;                   // records without a format
  std::map<int32_t, int64_t> open_slices;  // per tid: begins - ends
  int64_t min_open = 0;                    // an end before its begin: < 0
  std::string error;
};

const TraceField* field(const TraceEventFormat& f, const char* name) {
  for (const TraceField& x : f.fields)
    if (x.name == name) return &x;
  return nullptr;
}

Seen read_traces(const std::vector<std::string>& files) {
  Seen s;
  for (const std::string& path : files) {
    std::string err;
    auto r = TraceDatReader::open(path, &err);
    if (!r) {
      s.error += path + ": " + err + "\n";
      continue;
    }
    TraceRecord rec;
    int rc;
    while ((rc = r->next(&rec)) == 1) {
      if (rec.event == nullptr) {
        s.unknown++;
        continue;
      }
      const std::string name = rec.event->system + ":" + rec.event->name;
      s.count[name]++;
      if (name == "tracedlib:item") {
        TraceValue n, what;
        std::string why;
        if (!TraceDatReader::field_value(rec, *field(*rec.event, "n"), &n, &why) ||
            !TraceDatReader::field_value(rec, *field(*rec.event, "what"), &what, &why)) {
          s.error += "tracedlib:item: " + why + "\n";
          continue;
        }
        if (!s.item_n.insert(n.u).second) s.item_dups++;
        if (what.s != "item") s.bad_what++;
      } else if (name == "rbtrace:slice_begin") {
        s.open_slices[rec.pid]++;
      } else if (name == "rbtrace:slice_end") {
        if (--s.open_slices[rec.pid] < s.min_open) s.min_open = s.open_slices[rec.pid];
      }
    }
    if (rc < 0) s.error += path + ": " + r->error() + "\n";
  }
  return s;
}

// Sets (or, with nullptr, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old, had_ = true;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

struct Scratch {
  std::string dir = ctest::make_temp_dir("/tmp", "proctracer");
  ~Scratch() { ctest::remove_tree(dir); }
};

constexpr uint64_t kCalls = 2000;

// ---- hosts in their own processes --------------------------------------------

TEST(ProcessTracer, ALibraryInAHostThatSetNothingUpWritesNothing) {
  Scratch s;
  ScopedEnv off("RBTRACE_RECORD", nullptr);
  // tracedlib_host checks that every call returned -ENODEV.
  rbtrace_test::Proc p = rbtrace_test::run(s.dir, {TRACEDLIB_HOST, "none", "1000"});
  EXPECT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out, "none ok\n");
  // Linked with rbtrace::autostart, but RBTRACE_RECORD is unset.
  p = rbtrace_test::run(s.dir, {TRACEDLIB_AUTOHOST, "none", "1000"});
  EXPECT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out, "none ok\n");
  EXPECT_EQ(p.err, "");
}

// Both link orders: autostart after the library (its constructor runs
// after the library's event types register) and before it (before they
// register, and its exit handler runs after their destructors would have:
// the event types are immortal, and the types registered after the
// consumer started join the open segment).
class EnvRecord : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(LinkOrders, EnvRecord,
                         ::testing::Values(TRACEDLIB_AUTOHOST, TRACEDLIB_AUTOHOST_FIRST));

TEST_P(EnvRecord, TheEnvironmentAloneRecordsALibrarysEvents) {
  Scratch s;
  const std::string out = s.dir + "/out";
  ScopedEnv rec("RBTRACE_RECORD", out.c_str());
  // A recording's defaults: producer mode, 256 pages per CPU (room for the
  // whole run whatever the drain thread's scheduling).
  ScopedEnv pages("RBTRACE_PAGES", nullptr);
  ScopedEnv mode("RBTRACE_MODE", nullptr);
  const std::string n = std::to_string(kCalls);
  rbtrace_test::Proc p = rbtrace_test::run(s.dir, {GetParam(), "record", n});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out, "record ok\n");
  EXPECT_EQ(p.err, "");
  const std::vector<std::string> files = ctest::traces(out);
  ASSERT_FALSE(files.empty()) << "no trace.dat in " << out;
  const Seen seen = read_traces(files);
  EXPECT_EQ(seen.error, "");
  EXPECT_EQ(seen.unknown, 0u) << "records of a type the file has no format for";
  EXPECT_EQ(seen.count.at("tracedlib:item"), kCalls);
  EXPECT_EQ(seen.item_n.size(), kCalls);
  EXPECT_EQ(*seen.item_n.rbegin(), kCalls - 1);
  EXPECT_EQ(seen.item_dups, 0u);
  EXPECT_EQ(seen.bad_what, 0u);
  EXPECT_EQ(seen.count.at("rbtrace:slice_begin"), kCalls);
  EXPECT_EQ(seen.count.at("rbtrace:slice_end"), kCalls);
  EXPECT_EQ(seen.count.at("rbtrace:counter"), kCalls);
  EXPECT_EQ(seen.min_open, 0);
}

TEST(ProcessTracer, AForkedChildsExitLeavesTheParentsRecordingAlone) {
  Scratch s;
  const std::string out = s.dir + "/out";
  ScopedEnv rec("RBTRACE_RECORD", out.c_str());
  ScopedEnv pages("RBTRACE_PAGES", "256");
  ScopedEnv mode("RBTRACE_MODE", "producer");
  const std::string n = std::to_string(kCalls);
  rbtrace_test::Proc p = rbtrace_test::run(s.dir, {TRACEDLIB_AUTOHOST, "fork", n});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out, "fork ok\n");
  // Nothing from the child's exit either (Consumer::stop refuses in a
  // child, -ECHILD, which the exit handler would report).
  EXPECT_EQ(p.err, "");
  const Seen seen = read_traces(ctest::traces(out));
  EXPECT_EQ(seen.error, "");
  // The parent's calls, all of them; none of the child's (n >= 1000000:
  // its copy of the ring has no consumer).
  EXPECT_EQ(seen.count.at("tracedlib:item"), kCalls);
  ASSERT_FALSE(seen.item_n.empty());
  EXPECT_EQ(*seen.item_n.rbegin(), kCalls - 1);
}

TEST(ProcessTracer, ABadVariableIsRefusedByNameAndNothingIsRecorded) {
  Scratch s;
  const std::string out = s.dir + "/out";
  ScopedEnv rec("RBTRACE_RECORD", out.c_str());
  {
    ScopedEnv pages("RBTRACE_PAGES", "many");
    rbtrace_test::Proc p = rbtrace_test::run(s.dir, {TRACEDLIB_AUTOHOST, "none", "10"});
    EXPECT_EQ(p.status, 0) << p.err;  // every call -ENODEV: no ring was made
    EXPECT_NE(p.err.find("RBTRACE_PAGES=many: expected pages per CPU"), std::string::npos)
        << p.err;
  }
  {
    ScopedEnv seg("RBTRACE_SEGMENT_MB", "-1");
    rbtrace_test::Proc p = rbtrace_test::run(s.dir, {TRACEDLIB_AUTOHOST, "none", "10"});
    EXPECT_EQ(p.status, 0) << p.err;
    EXPECT_NE(p.err.find("RBTRACE_SEGMENT_MB=-1: expected"), std::string::npos) << p.err;
  }
  EXPECT_TRUE(ctest::traces(out).empty());
}

// ---- options from the environment -------------------------------------------

TEST(ProcessTracer, OptionsFromTheEnvironment) {
  Options o;
  std::string why;
  {
    ScopedEnv a("RBTRACE_CPUS", "3"), b("RBTRACE_PAGES", "32"), c("RBTRACE_PAGE_SIZE", "16384"),
        d("RBTRACE_MODE", "producer"), e("RBTRACE_CLOCK", "mono"), f("RBTRACE_MAX_CPUS", "9");
    ASSERT_EQ(tracer::options_from_env(&o, &why), 0) << why;
    EXPECT_EQ(o.ncpus, 3u);
    EXPECT_EQ(o.pages_per_cpu, 32u);
    EXPECT_EQ(o.page_size, 16384u);
    EXPECT_EQ(o.mode, Mode::kProducerConsumer);
    EXPECT_EQ(o.clock, ClockKind::kMono);
    EXPECT_EQ(o.max_cpus, 9u);
  }
  struct Bad {
    const char* var;
    const char* value;
  };
  for (const Bad& b : {Bad{"RBTRACE_PAGE_SIZE", "5000"}, Bad{"RBTRACE_PAGE_SIZE", "2048"},
                       Bad{"RBTRACE_CPUS", "0"}, Bad{"RBTRACE_CPUS", "4097"},
                       Bad{"RBTRACE_PAGES", "1"}, Bad{"RBTRACE_PAGES", "12x"},
                       Bad{"RBTRACE_PAGES", ""}, Bad{"RBTRACE_MODE", "fast"},
                       Bad{"RBTRACE_CLOCK", "sundial"}}) {
    ScopedEnv v(b.var, b.value);
    Options before;
    Options x = before;
    why.clear();
    EXPECT_EQ(tracer::options_from_env(&x, &why), -EINVAL) << b.var << "=" << b.value;
    EXPECT_EQ(why.rfind(std::string(b.var) + "=" + b.value + ": expected ", 0), 0u) << why;
    EXPECT_EQ(x.ncpus, before.ncpus);  // untouched on failure
    EXPECT_EQ(x.page_size, before.page_size);
  }
  ConsumerOptions co;
  {
    ScopedEnv a("RBTRACE_RECORD", "/some/dir"), b("RBTRACE_SEGMENT_MB", "8"),
        c("RBTRACE_SEGMENT_SECONDS", "30"), d("RBTRACE_FILE_MODE", "0640"),
        e("RBTRACE_PREFIX", "app");
    ASSERT_EQ(consumer_options_from_env(&co, &why), 0) << why;
    EXPECT_EQ(co.dir, "/some/dir");
    EXPECT_EQ(co.segment_bytes, 8ull << 20);
    EXPECT_EQ(co.segment_seconds, 30u);
    EXPECT_EQ(co.file_mode, 0640u);
    EXPECT_EQ(co.prefix, "app");
  }
  {
    ScopedEnv d("RBTRACE_FILE_MODE", "0200");  // the owner could not read it
    EXPECT_EQ(consumer_options_from_env(&co, &why), -EINVAL);
    EXPECT_NE(why.find("RBTRACE_FILE_MODE=0200"), std::string::npos) << why;
  }
}

// ---- a host that sets the process ring up itself (this process) ------------

TEST(ProcessTracer, AHostThatMadeTheProcessRingRecordsTheLibrary) {
  // Before: nothing set up in this process.
  ASSERT_EQ(process_ring(), nullptr) << "another test of this binary made the process ring";
  EXPECT_EQ(tracedlib::work(1), -ENODEV);
  EXPECT_EQ(rbtrace::counter("x", 1), -ENODEV);

  Options o;
  o.ncpus = 3;
  o.pages_per_cpu = 256;
  o.mode = Mode::kProducerConsumer;
  Error err;
  RingBuffer* rb = tracer::init(o, &err);
  ASSERT_NE(rb, nullptr) << err.message;
  EXPECT_EQ(process_ring(), rb);
  // A second init: the same ring, EEXIST, its options kept.
  Options other = o;
  other.ncpus = 1;
  Error err2;
  EXPECT_EQ(tracer::init(other, &err2), rb);
  EXPECT_EQ(err2.code, EEXIST);
  EXPECT_EQ(rb->options().ncpus, 3u);

  Scratch s;
  ConsumerOptions co;
  co.dir = s.dir;
  co.fsync = false;
  auto c = Consumer::create(*rb, co, &err);
  ASSERT_TRUE(c) << err.message;
  std::vector<std::thread> ts;
  for (uint64_t t = 0; t < 3; t++) {
    ts.emplace_back([t] {
      for (uint64_t i = 0; i < kCalls; i++) EXPECT_EQ(tracedlib::work(t * kCalls + i), 0);
    });
  }
  for (std::thread& t : ts) t.join();
  ASSERT_EQ(c->stop(), 0);
  // Every file names this process (TraceDatInput::pid, the PROCMAPS option).
  const std::string comm = rbtrace_test::read_file("/proc/self/comm");
  for (const std::string& f : c->published()) {
    std::string why;
    auto r = TraceDatReader::open(f, &why);
    ASSERT_TRUE(r) << why;
    EXPECT_EQ(r->process_pid(), getpid());
    EXPECT_EQ(r->process_name() + "\n", comm);
  }
  const Seen seen = read_traces(c->published());
  EXPECT_EQ(seen.error, "");
  EXPECT_EQ(seen.unknown, 0u);
  EXPECT_EQ(seen.count.at("tracedlib:item"), 3 * kCalls);
  EXPECT_EQ(seen.item_n.size(), 3 * kCalls);
  EXPECT_EQ(seen.count.at("rbtrace:slice_begin"), 3 * kCalls);
  EXPECT_EQ(seen.count.at("rbtrace:slice_end"), 3 * kCalls);
  EXPECT_EQ(seen.min_open, 0);
  for (const auto& [tid, open] : seen.open_slices) EXPECT_EQ(open, 0) << "tid " << tid;
  EXPECT_EQ(seen.open_slices.size(), 3u);  // one per thread
}

// ---- formats registered after a segment began --------------------------------

TEST(ProcessTracer, EventTypesRegisteredAfterTheConsumerStartedAreInItsFiles) {
  Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 16;
  o.mode = Mode::kProducerConsumer;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  Scratch s;
  ConsumerOptions co;
  co.dir = s.dir;
  co.fsync = false;
  Error err;
  auto c = Consumer::create(*rb, co, &err);
  ASSERT_TRUE(c) << err.message;
  // A full page taken by the drain thread: the segment is open, with the
  // types registered so far (it opens with its first page).
  ASSERT_EQ(rb->bind_thread(0), 0);
  const uint32_t fill = rb->page_size() / 16 + 1;
  for (uint32_t i = 0; i < fill; i++) {
    Reservation f = rb->reserve(16);
    ASSERT_TRUE(f);
    std::memset(f.data, 0, 16);  // common_type 0: a record of no event type
    rb->commit(f);
  }
  // The segment is open once its sidecar exists (written before any page
  // goes in; pages_read counts a page before its segment opens).
  auto has_meta = [&] {
    for (const std::string& n : ctest::list(c->spool_dir()))
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".meta") == 0) return true;
    return false;
  };
  for (int i = 0; i < 60000 && !has_meta(); i++) usleep(1000);
  ASSERT_TRUE(has_meta()) << "no segment opened in 60 s";
  // A type registered now (as a dlopen'ed library's would be), then one
  // record of it written and the segment published.
  static std::atomic<bool> late_enabled{true};
  static EventType late;
  late.system = "late";
  late.name = "joined";
  late.enabled = &late_enabled;
  late.fixed_size = sizeof(CommonHeader) + 8;
  late.fields = {{"u64", "x", static_cast<uint32_t>(sizeof(CommonHeader)), 8, false, false,
                  "%llu", FieldKind::kInt, 0, 0, nullptr, 0}};
  const uint16_t id = register_event(&late);
  Reservation r = rb->reserve(late.fixed_size);
  ASSERT_TRUE(r);
  detail::fill_common(r.data, id, r);
  const uint64_t x = 0x1234567;
  std::memcpy(static_cast<unsigned char*>(r.data) + sizeof(CommonHeader), &x, sizeof x);
  rb->commit(r);
  rb->unbind_thread();
  ASSERT_EQ(c->stop(), 0);
  ASSERT_EQ(c->published().size(), 1u);
  std::string why;
  auto rd = TraceDatReader::open(c->published()[0], &why);
  ASSERT_TRUE(rd) << why;
  TraceRecord rec;
  int got;
  while ((got = rd->next(&rec)) == 1 && rec.type == 0) {
  }
  ASSERT_EQ(got, 1) << rd->error();
  ASSERT_EQ(rec.type, id);
  ASSERT_NE(rec.event, nullptr) << "the segment has no format for the type registered late";
  EXPECT_EQ(rec.event->system, "late");
  EXPECT_EQ(rec.event->name, "joined");
  TraceValue v;
  ASSERT_TRUE(TraceDatReader::field_value(rec, *field(*rec.event, "x"), &v, &why)) << why;
  EXPECT_EQ(v.u, x);
}

}  // namespace
