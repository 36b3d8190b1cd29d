// Integration: the richer field types of RBTRACE_EVENT (issue 15, item 2):
// float/double, enums (RBTRACE_ENUM), std::array of integers,
// rbtrace::bytes and pointers, recorded into a trace.dat with
// write_trace_dat and printed by `rbtrace report` (text and --json) and by
// Debian's `trace-cmd report` (libtraceevent), every value asserted.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/ring_tracedat.h"
#include "rbtrace_test/test_files.h"

namespace ft {
enum class Color : uint8_t { Red, Green, Blue = 7 };
enum Level : int32_t { kLow = -1, kHigh = 100 };
}  // namespace ft
RBTRACE_ENUM(ft::Color, (Red)(Green)(Blue))
RBTRACE_ENUM(ft::Level, (kLow)(kHigh))

RBTRACE_EVENT(ft, nums, ((uint32_t, seq))((double, ms))((float, ratio))((int32_t, after)))
RBTRACE_EVENT(ft, enums, ((uint32_t, seq))((ft::Color, color))((ft::Level, level)))
RBTRACE_EVENT(ft, arrays, ((uint32_t, seq))((std::array<uint8_t, 4>, mac))((std::array<int16_t, 3>, v))((std::array<uint32_t, 2>, w)))
RBTRACE_EVENT(ft, blob, ((uint32_t, seq))((rbtrace::bytes, data))((rbtrace::str, name))((rbtrace::bytes, none)))
RBTRACE_EVENT(ft, ptrs, ((uint32_t, seq))((const void*, p))((int*, q)))

using namespace rbtrace;

namespace {

using rbtrace_test::Proc;
using rbtrace_test::run;
using rbtrace_test::TempDir;

// Records what `fill` emits on one CPU into dir/trace.dat.
template <class Fill>
std::string record(const std::string& dir, Fill fill) {
  Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 4;
  auto rb = RingBuffer::create(o);
  EXPECT_TRUE(rb);
  if (!rb) return {};
  EXPECT_EQ(rb->bind_thread(0), 0);
  fill(*rb);
  rb->unbind_thread();
  return rbtrace_test::ring_to_tracedat(*rb, dir, rbtrace_test::tracedat_input_for(*rb));
}

// The text after "name: " of every line naming `event`, in order.
std::vector<std::string> fields_of(const std::string& out, const std::string& event) {
  std::vector<std::string> v;
  std::istringstream lines(out);
  const std::string key = " " + event + ":";
  for (std::string l; std::getline(lines, l);) {
    const size_t at = l.find(key);
    if (at == std::string::npos) continue;
    size_t b = at + key.size();
    while (b < l.size() && l[b] == ' ') b++;
    v.push_back(l.substr(b));
  }
  return v;
}

void emit_all(RingBuffer& rb) {
  rbtrace_events::ft_nums::emit(rb, 1, 1.5, 0.25f, -7);
  rbtrace_events::ft_nums::emit(rb, 2, std::numeric_limits<double>::quiet_NaN(),
                                -std::numeric_limits<float>::infinity(), 8);
  rbtrace_events::ft_nums::emit(rb, 3, 0.1, -3.0e38f, 0);
  rbtrace_events::ft_enums::emit(rb, 4, ft::Color::Blue, ft::kLow);
  rbtrace_events::ft_enums::emit(rb, 5, static_cast<ft::Color>(9), ft::kHigh);
  rbtrace_events::ft_arrays::emit(rb, 6, {0xde, 0xad, 0x0b, 0xef}, {-1, 2, 300}, {7, 0xffffffffu});
  const uint8_t raw[] = {1, 2, 0, 0xff};
  rbtrace_events::ft_blob::emit(rb, 7, raw, "nm", std::string_view());
  rbtrace_events::ft_ptrs::emit(rb, 8, reinterpret_cast<const void*>(uintptr_t{0x1234abcd}),
                                reinterpret_cast<int*>(uintptr_t{0x7ffe0000fff8}));
  rbtrace_events::ft_ptrs::emit(rb, 9, nullptr, nullptr);
}

TEST(EventTypes, TraceCmdAndRbtraceReportPrintEveryType) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string file = record(dir.path, emit_all);
  ASSERT_FALSE(file.empty());

  // trace-cmd (libtraceevent): the float's IEEE bits in hex, the enum by
  // name (an unknown value as 0x%llx), u8 arrays and bytes in hex,
  // wider arrays zero-extended decimal, pointers 0x%lx.
  const Proc t = run(dir.path, {RBTRACE_TRACE_CMD, "report", file});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(fields_of(t.out, "nums"),
            (std::vector<std::string>{"seq=1 ms=0x3ff8000000000000 ratio=0x3e800000 after=-7",
                                      "seq=2 ms=0x7ff8000000000000 ratio=0xff800000 after=8",
                                      "seq=3 ms=0x3fb999999999999a ratio=0xff61b1e6 after=0"}))
      << t.out;
  EXPECT_EQ(fields_of(t.out, "enums"),
            (std::vector<std::string>{"seq=4 color=Blue level=kLow", "seq=5 color=0x9 level=kHigh"}))
      << t.out;
  EXPECT_EQ(fields_of(t.out, "arrays"),
            (std::vector<std::string>{"seq=6 mac=de ad 0b ef v=65535 2 300 w=7 4294967295"}))
      << t.out;
  EXPECT_EQ(fields_of(t.out, "blob"), (std::vector<std::string>{"seq=7 data=01 02 00 ff name=nm none="}))
      << t.out;
  EXPECT_EQ(fields_of(t.out, "ptrs"),
            (std::vector<std::string>{"seq=8 p=0x1234abcd q=0x7ffe0000fff8", "seq=9 p=0x0 q=0x0"}))
      << t.out;

  // rbtrace report: the same, but the floats as numbers (shortest text
  // that reads back the same).
  const Proc r = run(dir.path, {RBTRACE_CLI, "report", file});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(fields_of(r.out, "nums"),
            (std::vector<std::string>{"seq=1 ms=1.5 ratio=0.25 after=-7", "seq=2 ms=nan ratio=-inf after=8",
                                      "seq=3 ms=0.1 ratio=-3e+38 after=0"}))
      << r.out;
  for (const char* ev : {"enums", "arrays", "blob", "ptrs"})
    EXPECT_EQ(fields_of(r.out, ev), fields_of(t.out, ev)) << ev << "\n" << r.out;

  // --json: floats as JSON numbers (NaN and the infinities as strings),
  // enums by name (an unknown value as its number), integer arrays as
  // arrays, bytes as a hex string, pointers as numbers.
  const Proc j = run(dir.path, {RBTRACE_CLI, "report", "--json", file});
  ASSERT_EQ(j.status, 0) << j.err;
  std::vector<std::string> got;
  std::istringstream lines(j.out);
  for (std::string l; std::getline(lines, l);) {
    const size_t at = l.find("\"fields\":");
    ASSERT_NE(at, std::string::npos) << l;
    got.push_back(l.substr(at + 9, l.size() - at - 10));
  }
  EXPECT_EQ(got, (std::vector<std::string>{
                     R"({"seq":1,"ms":1.5,"ratio":0.25,"after":-7})",
                     R"({"seq":2,"ms":"nan","ratio":"-inf","after":8})",
                     R"({"seq":3,"ms":0.1,"ratio":-3e+38,"after":0})",
                     R"({"seq":4,"color":"Blue","level":"kLow"})",
                     R"({"seq":5,"color":9,"level":"kHigh"})",
                     R"({"seq":6,"mac":[222,173,11,239],"v":[-1,2,300],"w":[7,4294967295]})",
                     R"({"seq":7,"data":"010200ff","name":"nm","none":""})",
                     R"({"seq":8,"p":305441741,"q":140728898486264})",
                     R"({"seq":9,"p":0,"q":0})"}))
      << j.out;

  // trace-cmd report -R (raw fields) reads them too.
  const Proc raw = run(dir.path, {RBTRACE_TRACE_CMD, "report", "-R", file});
  ASSERT_EQ(raw.status, 0) << raw.err;
  EXPECT_EQ(fields_of(raw.out, "arrays"),
            (std::vector<std::string>{
                "seq=6 mac=ARRAY[de, ad, 0b, ef] v=ARRAY[ff, ff, 02, 00, 2c, 01] w=ARRAY[07, 00, 00, 00, ff, ff, ff, ff]"}))
      << raw.out;
  EXPECT_EQ(run(dir.path, {RBTRACE_CLI, "report", "-R", file}).status, 0);
}

// The reader's view: the field kinds, the enum names, the values.
TEST(EventTypes, ReaderDecodesEveryType) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string file = record(dir.path, emit_all);
  std::string err;
  auto r = TraceDatReader::open(file, &err);
  ASSERT_TRUE(r) << err;
  TraceRecord rec;
  std::vector<std::string> texts;
  while (r->next(&rec) > 0) {
    ASSERT_TRUE(rec.event);
    ASSERT_TRUE(rec.event->print_ok) << rec.event->print_fmt;
    std::string raw;
    ASSERT_TRUE(TraceDatReader::raw_fields(rec, &raw, &err)) << err;
    texts.push_back(rec.event->name + ": " + raw);
    if (rec.event->name == "nums") {
      EXPECT_EQ(rec.event->fields[rec.event->first_field + 1].kind, TraceField::Kind::kFloat);
      TraceValue v;
      ASSERT_TRUE(TraceDatReader::field_value(rec, rec.event->fields[rec.event->first_field + 2], &v, &err));
      EXPECT_EQ(v.kind, TraceValue::Kind::kFloat);
    }
    if (rec.event->name == "enums") {
      const TraceField& f = rec.event->fields[rec.event->first_field + 2];
      // Sorted by value (the reader looks names up by binary search).
      EXPECT_EQ(f.symbols, (std::vector<std::pair<uint64_t, std::string>>{{100, "kHigh"}, {0xffffffffu, "kLow"}}));
      EXPECT_EQ(*rbtrace::find_symbol(f, 0xffffffffu), "kLow");
      EXPECT_EQ(rbtrace::find_symbol(f, 7), nullptr);
    }
  }
  EXPECT_EQ(r->error(), "");
  EXPECT_EQ(texts, (std::vector<std::string>{
                       "nums: seq=1 ms=1.5 ratio=0.25 after=-7",
                       "nums: seq=2 ms=nan ratio=-inf after=8",
                       "nums: seq=3 ms=0.1 ratio=-3e+38 after=0",
                       "enums: seq=4 color=7 level=-1",
                       "enums: seq=5 color=9 level=100",
                       "arrays: seq=6 mac={222,173,11,239} v={-1,2,300} w={7,4294967295}",
                       "blob: seq=7 data=010200ff name=nm none=",
                       "ptrs: seq=8 p=305441741 q=140728898486264",
                       "ptrs: seq=9 p=0 q=0"}));
}

}  // namespace
