// Integration: the track events of rbtrace/track.h (issue 15, item 1):
// slices (begin/end, RBTRACE_SCOPE, complete), async slices, counters
// (integer and double) and flows, written on three threads into a
// trace.dat, then printed by Debian's `trace-cmd report`, by `rbtrace
// report --json`, and exported by `rbtrace export --chrome`, whose every
// event is checked against the trace-event format (a strict JSON parser
// below; ph, ts, dur, id, cat, args; B/E matched per thread; flows inside a
// slice; counters numeric).
#include <gtest/gtest.h>

#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/tracedat.h"
#include "rbtrace_test/ring_tracedat.h"
#include "rbtrace_test/json.h"
#include "rbtrace_test/test_files.h"

using namespace rbtrace;

namespace {

using rbtrace_test::Proc;
using rbtrace_test::run;
using rbtrace_test::TempDir;

using rbtrace_test::JParser;
using rbtrace_test::JVal;

// ---- what is written ---------------------------------------------------------------
void spin_ns(uint64_t ns) {
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while (static_cast<uint64_t>(b.tv_sec - a.tv_sec) * 1000000000u + b.tv_nsec - a.tv_nsec < ns);
}

// On its own slot (CPU `cpu`), one thread at a time.
template <class F>
void on_thread(RingBuffer& rb, uint32_t cpu, F f) {
  std::thread t([&] {
    ASSERT_EQ(rb.bind_thread(cpu), 0);
    f();
    rb.unbind_thread();
  });
  t.join();
}

std::string record(const std::string& dir) {
  Options o;
  o.ncpus = 3;
  o.pages_per_cpu = 4;
  auto rb = RingBuffer::create(o);
  EXPECT_TRUE(rb);
  if (!rb) return {};
  RingBuffer& r = *rb;
  // Thread 0: nested scopes, a flow out of the inner one, counters, an
  // async slice begun, a complete slice inside the outer scope.
  on_thread(r, 0, [&] {
    RBTRACE_SCOPE(r, "outer");
    {
      RBTRACE_SCOPE(r, "inner");
      spin_ns(2000);
      EXPECT_EQ(flow(r, "req", 7, FlowPhase::out), 0);
      EXPECT_EQ(counter(r, "depth", 3), 0);
      EXPECT_EQ(counter(r, "load", 0.5), 0);
      EXPECT_EQ(async_begin(r, "io", 42), 0);
      spin_ns(2000);
    }
    spin_ns(3000);
    EXPECT_EQ(slice(r, "measured", 1500), 0);  // began inside "outer"
    EXPECT_EQ(counter(r, "depth", int64_t{-1}), 0);
    EXPECT_EQ(counter(r, "load", std::numeric_limits<double>::quiet_NaN()), 0);  // an instant
  });
  // Thread 1: an end without a begin (an instant), then the flow's step in
  // a slice.
  on_thread(r, 1, [&] {
    EXPECT_EQ(slice_end(r, "orphan"), 0);
    EXPECT_EQ(slice_begin(r, "relay"), 0);
    spin_ns(1000);
    EXPECT_EQ(flow(r, "req", 7, FlowPhase::step), 0);
    spin_ns(1000);
    EXPECT_EQ(slice_end(r, "relay"), 0);
  });
  // Thread 2: the flow ends, the async slice ends.
  on_thread(r, 2, [&] {
    RBTRACE_SCOPE(r, "finish");
    spin_ns(1000);
    EXPECT_EQ(flow(r, "req", 7, FlowPhase::in), 0);
    EXPECT_EQ(async_end(r, "io", 42), 0);
    spin_ns(1000);
  });
  return rbtrace_test::ring_to_tracedat(r, dir, rbtrace_test::tracedat_input_for(r));
}

// "event: fields" of every line of `out` naming an rbtrace:* track event,
// in order (trace-cmd report and rbtrace report print the event name
// without its system).
std::vector<std::string> track_lines(const std::string& out) {
  static const std::set<std::string> names = {"slice_begin", "slice_end", "slice",
                                              "async_begin", "async_end", "counter",
                                              "counter_f",   "flow"};
  std::vector<std::string> v;
  std::istringstream lines(out);
  for (std::string l; std::getline(lines, l);) {
    const size_t colon = l.find(": ");  // after the time stamp
    if (colon == std::string::npos) continue;
    const size_t b = colon + 2;
    const size_t e = l.find(':', b);
    if (e == std::string::npos) continue;
    const std::string name = l.substr(b, e - b);
    if (!names.count(name)) continue;
    size_t f = e + 1;
    while (f < l.size() && l[f] == ' ') f++;
    v.push_back(name + ": " + l.substr(f));
  }
  return v;
}

const std::vector<std::string> kTraceCmdLines = {
    "slice_begin: name=outer",
    "slice_begin: name=inner",
    "flow: name=req id=7 phase=out",
    "counter: name=depth value=3",
    "counter_f: name=load value=0x3fe0000000000000",  // trace-cmd: a double's bits
    "async_begin: name=io id=42",
    "slice_end: name=inner",
    "slice: name=measured dur_ns=1500",
    "counter: name=depth value=-1",
    "counter_f: name=load value=0x7ff8000000000000",
    "slice_end: name=outer",
    "slice_end: name=orphan",
    "slice_begin: name=relay",
    "flow: name=req id=7 phase=step",
    "slice_end: name=relay",
    "slice_begin: name=finish",
    "flow: name=req id=7 phase=in",
    "async_end: name=io id=42",
    "slice_end: name=finish",
};

class TrackEvents : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir.path.empty());
    ASSERT_EQ(access(RBTRACE_TRACE_CMD, X_OK), 0) << RBTRACE_TRACE_CMD << " is needed";
    ASSERT_EQ(access(RBTRACE_CLI, X_OK), 0) << RBTRACE_CLI;
    file = record(dir.path);
    ASSERT_FALSE(file.empty());
  }
  TempDir dir;
  std::string file;
};

TEST_F(TrackEvents, TraceCmdAndRbtraceReportPrintEveryKind) {
  const Proc t = run(dir.path, {RBTRACE_TRACE_CMD, "report", file});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(track_lines(t.out), kTraceCmdLines) << t.out;

  // rbtrace report: the same, the double as a number.
  const Proc r = run(dir.path, {RBTRACE_CLI, "report", file});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> want = kTraceCmdLines;
  want[4] = "counter_f: name=load value=0.5";
  want[9] = "counter_f: name=load value=nan";
  EXPECT_EQ(track_lines(r.out), want) << r.out;

  // --json: every field typed.
  const Proc j = run(dir.path, {RBTRACE_CLI, "report", "--json", file});
  ASSERT_EQ(j.status, 0) << j.err;
  std::vector<std::string> got;
  std::istringstream lines(j.out);
  for (std::string l; std::getline(lines, l);) {
    JVal v;
    JParser p{l};
    ASSERT_TRUE(p.document(&v)) << l;
    const JVal* sys = v.get("system");
    ASSERT_TRUE(sys);
    if (sys->kind != JVal::kStr || sys->str != "rbtrace") continue;
    const size_t at = l.find("\"fields\":");
    got.push_back(v.get("name")->str + " " + l.substr(at + 9, l.size() - at - 10));
  }
  EXPECT_EQ(got, (std::vector<std::string>{
                     R"(slice_begin {"name":"outer"})",
                     R"(slice_begin {"name":"inner"})",
                     R"(flow {"name":"req","id":7,"phase":"out"})",
                     R"(counter {"name":"depth","value":3})",
                     R"(counter_f {"name":"load","value":0.5})",
                     R"(async_begin {"name":"io","id":42})",
                     R"(slice_end {"name":"inner"})",
                     R"(slice {"name":"measured","dur_ns":1500})",
                     R"(counter {"name":"depth","value":-1})",
                     R"(counter_f {"name":"load","value":"nan"})",
                     R"(slice_end {"name":"outer"})",
                     R"(slice_end {"name":"orphan"})",
                     R"(slice_begin {"name":"relay"})",
                     R"(flow {"name":"req","id":7,"phase":"step"})",
                     R"(slice_end {"name":"relay"})",
                     R"(slice_begin {"name":"finish"})",
                     R"(flow {"name":"req","id":7,"phase":"in"})",
                     R"(async_end {"name":"io","id":42})",
                     R"(slice_end {"name":"finish"})",
                 }));
}

// Every Chrome event against the trace-event format, then what each track
// event became.
TEST_F(TrackEvents, ChromeExportIsWellFormedTraceEvents) {
  const std::string out = dir.path + "/chrome.json";
  const Proc c = run(dir.path, {RBTRACE_CLI, "export", "--chrome", file, "-o", out, "--pid", "77"});
  ASSERT_EQ(c.status, 0) << c.err;
  const std::string text = rbtrace_test::read_file(out);
  JVal doc;
  JParser p{text};
  ASSERT_TRUE(p.document(&doc)) << "not JSON at byte " << p.i << ":\n" << text;
  ASSERT_EQ(doc.kind, JVal::kObj);
  ASSERT_TRUE(doc.get("traceEvents"));
  const std::vector<JVal>& evs = doc.get("traceEvents")->arr;

  struct Open {
    std::string name;
    double ts;
  };
  std::map<int64_t, std::vector<Open>> stacks;  // per tid: the "B"s open
  std::map<std::string, int> async_open;        // cat/name/id -> begins - ends
  std::map<std::string, std::string> flows;     // id -> phases seen ("stf")
  std::vector<std::string> seen;                // "ph name" of the rbtrace events
  double last_ts = -1;
  const std::string valid_ph = "BEXibeCstfM";
  for (const JVal& e : evs) {
    SCOPED_TRACE(::testing::Message() << "event " << &e - evs.data());
    ASSERT_EQ(e.kind, JVal::kObj);
    const JVal* ph = e.get("ph");
    const JVal* name = e.get("name");
    const JVal* pid = e.get("pid");
    ASSERT_TRUE(ph && ph->kind == JVal::kStr && ph->str.size() == 1);
    ASSERT_NE(valid_ph.find(ph->str[0]), std::string::npos) << ph->str;
    ASSERT_TRUE(name && name->kind == JVal::kStr);
    ASSERT_TRUE(pid && pid->kind == JVal::kNum);
    EXPECT_EQ(pid->num, 77);
    const JVal* args = e.get("args");
    ASSERT_TRUE(args && args->kind == JVal::kObj);
    const char k = ph->str[0];
    if (k == 'M') continue;
    const JVal* ts = e.get("ts");
    const JVal* tid = e.get("tid");
    const JVal* cat = e.get("cat");
    ASSERT_TRUE(ts && ts->kind == JVal::kNum);
    ASSERT_TRUE(tid && tid->kind == JVal::kNum);
    ASSERT_TRUE(cat && cat->kind == JVal::kStr && !cat->str.empty());
    // µs with 3 decimals (ns): "123.456"
    const size_t dot = ts->num_text.find('.');
    ASSERT_NE(dot, std::string::npos) << ts->num_text;
    EXPECT_EQ(ts->num_text.size() - dot, 4u) << ts->num_text;
    EXPECT_GE(ts->num, 0);
    const int64_t t = static_cast<int64_t>(tid->num);
    if (k != 'X') {  // in file order, by time (an X's ts is its start)
      EXPECT_GE(ts->num, last_ts);
      last_ts = ts->num;
    }
    if (cat->str == "rbtrace") seen.push_back(std::string(1, k) + " " + name->str);
    switch (k) {
      case 'B':
        stacks[t].push_back({name->str, ts->num});
        break;
      case 'E':
        ASSERT_FALSE(stacks[t].empty()) << "E without B: " << name->str;
        EXPECT_EQ(stacks[t].back().name, name->str);
        EXPECT_GE(ts->num, stacks[t].back().ts);
        stacks[t].pop_back();
        break;
      case 'X': {
        const JVal* dur = e.get("dur");
        ASSERT_TRUE(dur && dur->kind == JVal::kNum);
        EXPECT_GE(dur->num, 0);
        // inside the slice open on its thread, if any
        if (!stacks[t].empty()) {
          EXPECT_GE(ts->num, stacks[t].back().ts);
        }
        break;
      }
      case 'b':
      case 'e': {
        const JVal* id = e.get("id");
        ASSERT_TRUE(id && id->kind == JVal::kStr);
        int& n = async_open[cat->str + "/" + name->str + "/" + id->str];
        n += k == 'b' ? 1 : -1;
        EXPECT_GE(n, 0) << "e before b";
        break;
      }
      case 's':
      case 't':
      case 'f': {
        const JVal* id = e.get("id");
        ASSERT_TRUE(id && id->kind == JVal::kStr);
        EXPECT_FALSE(stacks[t].empty()) << "a flow outside any slice";
        if (k == 'f') {
          ASSERT_TRUE(e.get("bp"));
          EXPECT_EQ(e.get("bp")->str, "e");
        }
        flows[id->str] += k;
        break;
      }
      case 'C':
        ASSERT_FALSE(args->obj.empty());
        for (const auto& [key, v] : args->obj) EXPECT_EQ(v.kind, JVal::kNum) << key;
        break;
      case 'i': {
        const JVal* sc = e.get("s");
        ASSERT_TRUE(sc && sc->kind == JVal::kStr);
        EXPECT_NE(std::string("gpt").find(sc->str), std::string::npos);
        break;
      }
      default: break;
    }
  }
  for (const auto& [tid, st] : stacks) EXPECT_TRUE(st.empty()) << "tid " << tid << " left open";
  for (const auto& [key, n] : async_open) EXPECT_EQ(n, 0) << key;
  EXPECT_EQ(flows, (std::map<std::string, std::string>{{"0x7", "stf"}}));
  EXPECT_EQ(seen, (std::vector<std::string>{
                      "B outer", "B inner", "s req", "C depth", "C load", "b io", "E inner",
                      "X measured", "C depth", "i counter_f", "E outer", "i slice_end", "B relay",
                      "t req", "E relay", "B finish", "f req", "e io", "E finish"}));

  // The values: counters as numbers, the complete slice's start and length.
  for (const JVal& e : evs) {
    if (!e.get("cat") || e.get("cat")->str != "rbtrace") continue;
    const std::string ph = e.get("ph")->str, name = e.get("name")->str;
    if (ph == "C" && name == "depth") {
      const JVal* v = e.get("args")->get("depth");
      ASSERT_TRUE(v);
      EXPECT_TRUE(v->num_text == "3" || v->num_text == "-1") << v->num_text;
    } else if (ph == "C" && name == "load") {
      ASSERT_TRUE(e.get("args")->get("load"));
      EXPECT_EQ(e.get("args")->get("load")->num_text, "0.5");
    } else if (ph == "X") {
      EXPECT_EQ(e.get("dur")->num_text, "1.500");
    } else if (ph == "b" || ph == "e") {
      EXPECT_EQ(e.get("id")->str, "0x2a");
    }
  }
}

}  // namespace
