// Unit tests of the trace.dat writer and the validating reader
// (rbtrace::consumer): a round trip through a real RingBuffer on several
// CPUs (fields, strings, time stamps, lost-event flags), then hostile
// copies of a valid file: every truncation, random byte flips, absurd
// lengths at each length field, and the corpus of corrupt files under
// tests/corpus/tracedat. Every failure must be an error sentence, never a
// crash (this binary also runs under AddressSanitizer + UBSan).
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace_test/test_files.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"

RBTRACE_EVENT(tdat, sample,
              ((uint64_t, seq))((int32_t, value))((rbtrace::str, label))((uint8_t, small)))
RBTRACE_EVENT(tdat, pair, ((uint64_t, seq))((int64_t, b))((uint16_t, c))((bool, flag)))
RBTRACE_EVENT(tdat, text, ((uint64_t, seq))((rbtrace::str, s1))((uint16_t, mid))((rbtrace::str, s2)))

using namespace rbtrace;

namespace {

using rbtrace_test::read_file;
using rbtrace_test::TempDir;

// ---- what a writer thread emits: three event types, one sequence per CPU ----
std::string label_of(uint32_t cpu, uint64_t seq) {
  // Lengths 0..40, so records and pages have varied sizes.
  return std::string(seq % 41, static_cast<char>('a' + (cpu + seq) % 26));
}
int emit(RingBuffer& rb, uint32_t cpu, uint64_t seq) {
  switch (seq % 3) {
    case 0:
      return rbtrace_events::tdat_sample::emit(rb, seq, -static_cast<int32_t>(seq * 7 + cpu),
                                               label_of(cpu, seq), static_cast<uint8_t>(seq));
    case 1:
      return rbtrace_events::tdat_pair::emit(rb, seq, -static_cast<int64_t>(seq) << 33,
                                             static_cast<uint16_t>(seq * 3), (seq & 4) != 0);
    default:
      return rbtrace_events::tdat_text::emit(rb, seq, "cpu" + std::to_string(cpu),
                                             static_cast<uint16_t>(seq), label_of(cpu, seq + 1));
  }
}

// Checks a record against what emit() wrote for (cpu, seq); returns seq.
uint64_t check_record(const TraceRecord& rec, uint32_t cpu) {
  EXPECT_NE(rec.event, nullptr);
  if (!rec.event) return ~0ull;
  std::map<std::string, TraceValue> v;
  for (size_t i = rec.event->first_field; i < rec.event->fields.size(); i++) {
    std::string err;
    TraceValue x;
    EXPECT_TRUE(TraceDatReader::field_value(rec, rec.event->fields[i], &x, &err)) << err;
    v[rec.event->fields[i].name] = x;
  }
  const uint64_t seq = v["seq"].u;
  EXPECT_EQ(rec.event->system, "tdat");
  switch (seq % 3) {
    case 0:
      EXPECT_EQ(rec.event->name, "sample");
      EXPECT_EQ(v["value"].i, -static_cast<int64_t>(seq * 7 + cpu));
      EXPECT_EQ(v["label"].s, label_of(cpu, seq));
      EXPECT_EQ(v["small"].u, seq & 0xff);
      break;
    case 1:
      EXPECT_EQ(rec.event->name, "pair");
      EXPECT_EQ(v["b"].i, -static_cast<int64_t>(seq) << 33);
      EXPECT_EQ(v["c"].u, (seq * 3) & 0xffff);
      EXPECT_EQ(v["flag"].u, (seq & 4) ? 1u : 0u);
      break;
    default:
      EXPECT_EQ(rec.event->name, "text");
      EXPECT_EQ(v["s1"].s, "cpu" + std::to_string(cpu));
      EXPECT_EQ(v["mid"].u, seq & 0xffff);
      EXPECT_EQ(v["s2"].s, label_of(cpu, seq + 1));
      break;
  }
  return seq;
}

// ---- a recorded trace ------------------------------------------------------------
struct Recorded {
  std::string file;                          // the trace.dat
  uint32_t ncpus = 0;
  std::vector<uint64_t> written;             // events written per CPU
  std::vector<CpuStats> stats;
  std::vector<std::vector<uint64_t>> ts;     // per CPU, the ring's time stamps (Iterator)
  std::vector<int32_t> tids;
  std::vector<uint64_t> flagged_pages;       // per CPU, pages read with kMissedEvents
  std::vector<uint64_t> stored_lost;         // per CPU, sum of stored counts
  CounterCalibration cal;
  bool tsc2nsec = false;
};

// Writes `per_cpu[c]` events on CPU c (one thread each), drains every page
// with read_page into per-CPU files, and writes the trace.dat.
Recorded record(const std::string& dir, const std::vector<uint64_t>& per_cpu, uint32_t pages,
                Mode mode, ClockKind clock = ClockKind::kCounter) {
  Recorded out;
  out.ncpus = static_cast<uint32_t>(per_cpu.size());
  Options o;
  o.ncpus = out.ncpus;
  o.page_size = 4096;
  o.pages_per_cpu = pages;
  o.mode = mode;
  o.clock = clock;
  Error e;
  auto rb = RingBuffer::create(o, &e);
  EXPECT_TRUE(rb) << e.message;
  if (!rb) return out;
  out.tids.resize(out.ncpus);
  for (uint32_t c = 0; c < out.ncpus; c++) {
    std::thread([&, c] {
      EXPECT_EQ(rb->bind_thread(c), 0);
      out.tids[c] = static_cast<int32_t>(gettid());
      for (uint64_t s = 0; s < per_cpu[c]; s++) emit(*rb, c, s);
      rb->unbind_thread();
    }).join();
  }
  out.written = per_cpu;
  out.ts.resize(out.ncpus);
  for (uint32_t c = 0; c < out.ncpus; c++) {
    RingBuffer::Iterator it(*rb, c);
    EXPECT_EQ(it.status(), 0);
    PageEvent ev;
    while (it.next(&ev)) out.ts[c].push_back(ev.ts);
  }
  TraceDatInput in;
  in.page_size = o.page_size;
  in.clock = rb->clock().trace_clock_name();
  in.tsc2nsec = rb->clock().kind() == ClockKind::kCounter;
  out.tsc2nsec = in.tsc2nsec;
  if (in.tsc2nsec) in.calibration = counter_calibration();
  out.cal = in.calibration;
  in.events = registered_event_formats();
  out.flagged_pages.assign(out.ncpus, 0);
  out.stored_lost.assign(out.ncpus, 0);
  std::vector<int> fds;
  for (uint32_t c = 0; c < out.ncpus; c++) {
    in.cmdlines.push_back({out.tids[c], "writer-" + std::to_string(c)});
    const std::string p = dir + "/cpu" + std::to_string(c);
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    EXPECT_GE(fd, 0);
    fds.push_back(fd);
    DataPage* page = rb->alloc_read_page();
    uint64_t size = 0;
    while (rb->read_page(&page, c, false) > 0) {
      if (page->commit & kMissedEvents) {
        out.flagged_pages[c]++;
        if (page->commit & kMissedStored)
          out.stored_lost[c] += load_u64(page->data + (page->commit & kCommitMask));
      }
      EXPECT_EQ(::write(fd, page, o.page_size), static_cast<ssize_t>(o.page_size));
      size += o.page_size;
    }
    rb->free_read_page(page);
    TraceDatCpu cd;
    cd.fd = fd;
    cd.size = size;
    out.stats.push_back(rb->stats(c));
    cd.stats = cpu_stats_text(out.stats.back());
    in.cpus.push_back(cd);
  }
  out.file = dir + "/trace.dat";
  const int ofd = ::open(out.file.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  std::string err;
  EXPECT_EQ(write_trace_dat(ofd, in, &err), 0) << err;
  ::close(ofd);
  for (int fd : fds) ::close(fd);
  return out;
}

uint64_t expected_ns(const Recorded& r, uint64_t ts) {
  if (!r.tsc2nsec) return ts;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(ts) * r.cal.mult) >> r.cal.shift) +
         static_cast<uint64_t>(r.cal.offset_ns);
}

// Opens the bytes and walks every record, rendering each one three ways;
// returns "" if all of it succeeded, else the first error.
std::string try_read_all(const std::string& bytes, uint64_t* nrecords = nullptr) {
  std::string err;
  auto r = TraceDatReader::open_memory(bytes.data(), bytes.size(), &err);
  if (!r) {
    EXPECT_FALSE(err.empty());
    return err.empty() ? "open failed without a message" : err;
  }
  TraceRecord rec;
  int rc;
  uint64_t n = 0;
  std::string text;
  while ((rc = r->next(&rec)) > 0) {
    n++;
    if (!rec.event) continue;
    if (!TraceDatReader::format_fields(rec, &text, &err)) return err.empty() ? "?" : err;
    if (!TraceDatReader::raw_fields(rec, &text, &err)) return err.empty() ? "?" : err;
  }
  if (nrecords) *nrecords = n;
  if (rc < 0) {
    EXPECT_FALSE(r->error().empty());
    return r->error().empty() ? "next failed without a message" : r->error();
  }
  // The exporters on the same reader (they rewind).
  FILE* devnull = std::fopen("/dev/null", "w");
  ReportOptions ro;
  if (write_report_text(*r, devnull, ro, &err) || write_report_json(*r, devnull, &err) ||
      write_chrome_json(*r, devnull, 1, &err)) {
    std::fclose(devnull);
    return err.empty() ? "export failed without a message" : err;
  }
  std::fclose(devnull);
  return "";
}

// Offsets of the length/count fields of a valid file, found by walking it.
struct Layout {
  uint64_t page_size_at = 0, header_page_len_at = 0, header_event_len_at = 0, ftrace_count_at = 0,
           systems_at = 0, first_event_count_at = 0, first_format_len_at = 0, kallsyms_at = 0,
           printk_at = 0, cmdlines_at = 0, cpus_at = 0, options_at = 0, first_option_len_at = 0,
           flyrecord_at = 0, clock_len_at = 0, header_end = 0;
  std::vector<uint64_t> cpu_offset_at, cpu_offset, cpu_size;
};
Layout layout_of(const std::string& f) {
  Layout l;
  auto u32 = [&](uint64_t at) { return load_u32(f.data() + at); };
  auto u64 = [&](uint64_t at) { return load_u64(f.data() + at); };
  uint64_t p = 10 + 2 + 2;  // magic, "6\0", endian, long size
  l.page_size_at = p;
  p += 4 + 12;
  l.header_page_len_at = p;
  p += 8 + u64(p) + 13;
  l.header_event_len_at = p;
  p += 8 + u64(p);
  l.ftrace_count_at = p;
  EXPECT_EQ(u32(p), 0u);
  p += 4;
  l.systems_at = p;
  const uint32_t systems = u32(p);
  p += 4;
  for (uint32_t s = 0; s < systems; s++) {
    p += std::strlen(f.data() + p) + 1;
    if (s == 0) l.first_event_count_at = p;
    const uint32_t n = u32(p);
    p += 4;
    for (uint32_t i = 0; i < n; i++) {
      if (s == 0 && i == 0) l.first_format_len_at = p;
      p += 8 + u64(p);
    }
  }
  l.kallsyms_at = p;
  p += 4 + u32(p);
  l.printk_at = p;
  p += 4 + u32(p);
  l.cmdlines_at = p;
  p += 8 + u64(p);
  l.cpus_at = p;
  const uint32_t ncpus = u32(p);
  p += 4;
  l.options_at = p;
  p += 10;
  l.first_option_len_at = p + 2;
  for (;;) {  // options until id 0
    uint16_t id;
    std::memcpy(&id, f.data() + p, 2);
    p += 2;
    if (id == 0) break;
    p += 4 + u32(p);
  }
  l.flyrecord_at = p;
  p += 10;
  for (uint32_t c = 0; c < ncpus; c++) {
    l.cpu_offset_at.push_back(p);
    l.cpu_offset.push_back(u64(p));
    l.cpu_size.push_back(u64(p + 8));
    p += 16;
  }
  l.clock_len_at = p;
  p += 8 + u64(p);
  l.header_end = p;
  return l;
}

void put32(std::string* f, uint64_t at, uint32_t v) { std::memcpy(f->data() + at, &v, 4); }
void put64(std::string* f, uint64_t at, uint64_t v) { std::memcpy(f->data() + at, &v, 8); }

class TraceDat : public ::testing::Test {
 protected:
  TempDir dir;
};

// ---------------------------------------------------------------------------
// Round trip.
// ---------------------------------------------------------------------------
TEST_F(TraceDat, RoundTripFieldsStringsTimestamps) {
  ASSERT_FALSE(dir.path.empty());
  // Producer/consumer mode and a ring large enough: nothing is lost.
  const std::vector<uint64_t> n = {700, 1, 0, 2500};
  Recorded rec = record(dir.path, n, 64, Mode::kProducerConsumer);
  std::string err;
  auto r = TraceDatReader::open(rec.file, &err);
  ASSERT_TRUE(r) << err;
  EXPECT_EQ(r->ncpus(), 4u);
  EXPECT_EQ(r->page_size(), 4096u);
  EXPECT_EQ(r->has_tsc2nsec(), rec.tsc2nsec);
  EXPECT_EQ(r->clock(), rec.tsc2nsec ? "tsc2nsec" : std::string(Clock().trace_clock_name()));
  for (const char* name : {"sample", "pair", "text"}) {
    bool found = false;
    for (const TraceEventFormat& f : r->events()) {
      if (f.system == "tdat" && f.name == name) {
        found = true;
        EXPECT_TRUE(f.print_ok) << name << ": " << f.print_fmt;
        EXPECT_EQ(f.id, find_event("tdat", name)->id);
      }
    }
    EXPECT_TRUE(found) << name;
  }
  for (uint32_t c = 0; c < 4; c++) {
    EXPECT_EQ(r->comm(rec.tids[c]), "writer-" + std::to_string(c));
    EXPECT_NE(r->cpus()[c].stats.find("entries: "), std::string::npos);
    EXPECT_EQ(r->cpus()[c].size == 0, n[c] == 0);
    TraceRecord t;
    uint64_t i = 0;
    int rc;
    while ((rc = r->next_on_cpu(c, &t)) > 0) {
      ASSERT_LT(i, n[c]);
      EXPECT_EQ(t.cpu, c);
      EXPECT_EQ(t.pid, rec.tids[c]);
      EXPECT_EQ(check_record(t, c), i);
      ASSERT_LT(i, rec.ts[c].size());
      EXPECT_EQ(t.ts, rec.ts[c][i]) << "cpu " << c << " event " << i;
      EXPECT_EQ(t.ts_ns, expected_ns(rec, t.ts));
      EXPECT_FALSE(t.missed);
      i++;
    }
    EXPECT_EQ(rc, 0) << r->error();
    EXPECT_EQ(i, n[c]) << "cpu " << c;
    EXPECT_EQ(r->counts()[c].events, n[c]);
    EXPECT_EQ(r->counts()[c].missed_pages, 0u);
  }
  // Merged over CPUs: every record once, in time stamp order.
  r->rewind();
  TraceRecord t;
  uint64_t total = 0, prev = 0;
  std::vector<uint64_t> next(4, 0);
  while (r->next(&t) > 0) {
    EXPECT_GE(t.ts_ns, prev);
    prev = t.ts_ns;
    EXPECT_EQ(check_record(t, t.cpu), next[t.cpu]++);
    total++;
  }
  EXPECT_EQ(total, 700u + 1 + 0 + 2500);
  EXPECT_EQ(try_read_all(read_file(rec.file)), "");
}

TEST_F(TraceDat, RoundTripMonoClockHasNoTsc2Nsec) {
  Recorded rec = record(dir.path, {50, 60}, 8, Mode::kProducerConsumer, ClockKind::kMono);
  std::string err;
  auto r = TraceDatReader::open(rec.file, &err);
  ASSERT_TRUE(r) << err;
  EXPECT_FALSE(r->has_tsc2nsec());
  EXPECT_EQ(r->clock(), "mono");
  TraceRecord t;
  uint64_t n = 0;
  while (r->next(&t) > 0) {
    EXPECT_EQ(t.ts_ns, t.ts);
    n++;
  }
  EXPECT_EQ(n, 110u);
}

TEST_F(TraceDat, OverwrittenPagesKeepTheirMissedFlags) {
  // A 4-page ring per CPU, thousands of events: the oldest pages are
  // overwritten; the first page read reports the loss.
  const std::vector<uint64_t> n = {5000, 3000, 10};
  Recorded rec = record(dir.path, n, 4, Mode::kOverwrite);
  std::string err;
  auto r = TraceDatReader::open(rec.file, &err);
  ASSERT_TRUE(r) << err;
  for (uint32_t c = 0; c < 3; c++) {
    const CpuStats& s = rec.stats[c];
    const uint64_t kept = s.entries - s.overrun;
    TraceRecord t;
    uint64_t i = 0, first = 0;
    int rc;
    while ((rc = r->next_on_cpu(c, &t)) > 0) {
      const uint64_t seq = check_record(t, c);
      if (i == 0) {
        first = seq;
        EXPECT_EQ(t.missed, s.overrun > 0) << "cpu " << c;
        if (t.missed && t.missed_known) {
          EXPECT_EQ(t.missed_count, s.lost());
        }
      } else {
        EXPECT_EQ(seq, first + i) << "cpu " << c;  // a contiguous tail of what was written
        EXPECT_FALSE(t.missed);
      }
      i++;
    }
    EXPECT_EQ(rc, 0) << r->error();
    EXPECT_EQ(i, kept) << "cpu " << c;
    EXPECT_EQ(first + i, n[c]) << "cpu " << c;
    const TraceCpuCounts& k = r->counts()[c];
    EXPECT_EQ(k.missed_pages, rec.flagged_pages[c]);
    EXPECT_EQ(k.missed_events, rec.stored_lost[c]);
    if (k.missed_unknown == 0) {
      EXPECT_EQ(k.missed_events, s.lost());
    }
  }
  EXPECT_GT(rec.flagged_pages[0], 0u);
  EXPECT_GT(rec.flagged_pages[1], 0u);
  EXPECT_EQ(rec.flagged_pages[2], 0u);
}

TEST_F(TraceDat, MissedStoredCountSurvivesVerbatim) {
  Recorded rec = record(dir.path, {40}, 8, Mode::kProducerConsumer);
  std::string f = read_file(rec.file);
  const Layout l = layout_of(f);
  ASSERT_EQ(l.cpu_size[0], 4096u);
  // Mark the (partial) page: 1234 events lost before it, count stored.
  const uint64_t page = l.cpu_offset[0];
  const uint64_t len = load_u64(f.data() + page + 8);
  ASSERT_LE(len + 8, 4080u);
  put64(&f, page + 16 + len, 1234);
  put64(&f, page + 8, len | kMissedEvents | kMissedStored);
  std::string err;
  auto r = TraceDatReader::open_memory(f.data(), f.size(), &err);
  ASSERT_TRUE(r) << err;
  TraceRecord t;
  ASSERT_EQ(r->next(&t), 1);
  EXPECT_TRUE(t.missed);
  EXPECT_TRUE(t.missed_known);
  EXPECT_EQ(t.missed_count, 1234u);
  ASSERT_EQ(r->next(&t), 1);
  EXPECT_FALSE(t.missed);
  // Without the stored count: known = false.
  put64(&f, page + 8, len | kMissedEvents);
  r = TraceDatReader::open_memory(f.data(), f.size(), &err);
  ASSERT_TRUE(r) << err;
  ASSERT_EQ(r->next(&t), 1);
  EXPECT_TRUE(t.missed);
  EXPECT_FALSE(t.missed_known);
  // The text report prints the markers as trace-cmd does.
  put64(&f, page + 8, len | kMissedEvents | kMissedStored);
  r = TraceDatReader::open_memory(f.data(), f.size(), &err);
  ASSERT_TRUE(r);
  char* buf = nullptr;
  size_t sz = 0;
  FILE* m = open_memstream(&buf, &sz);
  ASSERT_EQ(write_report_text(*r, m, {}, &err), 0) << err;
  std::fclose(m);
  const std::string text(buf, sz);
  free(buf);
  EXPECT_NE(text.find("cpus=1\nCPU:0 [1234 EVENTS DROPPED]\n"), std::string::npos) << text.substr(0, 300);
}

TEST_F(TraceDat, WriterRejectsBadInput) {
  std::string err;
  TraceDatInput in;
  in.page_size = 5000;
  const int fd = ::open((dir.path + "/x").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EINVAL);
  EXPECT_NE(err.find("page size"), std::string::npos);
  in.page_size = 4096;
  in.cpus.push_back({-1, 0, 100, ""});
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EINVAL);
  EXPECT_NE(err.find("multiple of the page size"), std::string::npos);
  in.cpus[0].size = 4096;
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EBADF);
  in.cpus.clear();
  in.clock = "bad clock";
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EINVAL);
  in.clock = "mono";
  in.events.push_back({"", "name: x\n"});
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EINVAL);
  in.events.clear();
  // A source shorter than declared: an error naming the CPU.
  const int src = ::open((dir.path + "/short").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  ASSERT_EQ(::write(src, std::string(4096, '\0').data(), 4096), 4096);
  in.cpus.push_back({src, 0, 8192, ""});
  EXPECT_EQ(write_trace_dat(fd, in, &err), -EIO);
  EXPECT_NE(err.find("CPU 0"), std::string::npos) << err;
  // A full disk: /dev/full gives ENOSPC.
  const int full = ::open("/dev/full", O_WRONLY);
  ASSERT_GE(full, 0);
  in.cpus.clear();
  EXPECT_EQ(write_trace_dat(full, in, &err), -ENOSPC);
  EXPECT_NE(err.find("disk full"), std::string::npos) << err;
  ::close(full);
  ::close(src);
  ::close(fd);
}

TEST_F(TraceDat, HeaderPageDataSizeMatchesThePageSize) {
  for (uint32_t ps : {4096u, 65536u}) {
    TraceDatInput in;
    in.page_size = ps;
    in.clock = "mono";
    const std::string p = dir.path + "/hp" + std::to_string(ps);
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    std::string err;
    ASSERT_EQ(write_trace_dat(fd, in, &err), 0) << err;
    ::close(fd);
    const std::string f = read_file(p);
    EXPECT_NE(f.find("char data;\toffset:16;\tsize:" + std::to_string(ps - 16) + ";"), std::string::npos);
    auto r = TraceDatReader::open(p, &err);
    ASSERT_TRUE(r) << err;
    EXPECT_EQ(r->page_size(), ps);
    EXPECT_EQ(r->ncpus(), 0u);
  }
}

// The TRACECLOCK option (id 4) carries the clock text, NUL-terminated:
// trace-cmd 3.1.6 runs strtok_r over the option's data, and an empty option
// made it read past the end (raw time stamps in about 1 % of runs).
TEST_F(TraceDat, TraceClockOptionCarriesTheClockText) {
  for (const char* clock : {"mono", "x86-tsc"}) {
    TraceDatInput in;
    in.clock = clock;
    const std::string p = dir.path + "/clk_" + clock;
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    std::string err;
    ASSERT_EQ(write_trace_dat(fd, in, &err), 0) << err;
    ::close(fd);
    const std::string f = read_file(p);
    const std::string text = std::string("[") + clock + "]";
    std::string opt("\x04\x00", 2);
    const uint32_t len = static_cast<uint32_t>(text.size() + 1);
    opt.append(reinterpret_cast<const char*>(&len), 4);
    opt += text;
    opt.push_back('\0');
    EXPECT_NE(f.find(opt), std::string::npos) << clock;
    auto r = TraceDatReader::open(p, &err);
    EXPECT_TRUE(r) << err;
  }
}

// The traced process (TraceDatInput::pid): trace-cmd's PROCMAPS option,
// read back by the reader and named by the Chrome export; a name trace-cmd
// would cut at a blank is one word; a PROCMAPS whose first line does not
// parse names nothing (trace-cmd ignores it too), the file still reads.
TEST_F(TraceDat, ProcessPidAndNameRoundTripThroughProcMaps) {
  auto write = [&](const std::string& name, int32_t pid, const char* process) {
    TraceDatInput in;
    in.clock = "mono";
    in.pid = pid;
    in.process = process;
    const std::string p = dir.path + "/" + name;
    const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    std::string err;
    EXPECT_EQ(write_trace_dat(fd, in, &err), 0) << err;
    ::close(fd);
    return p;
  };
  std::string err;
  {
    const std::string p = write("named", 0x1234, "my app\tx");
    const std::string f = read_file(p);
    const std::string text = std::string("1234 0 my_app_x\n") + '\0';
    std::string opt("\x0a\x00", 2);
    const uint32_t len = static_cast<uint32_t>(text.size());
    opt.append(reinterpret_cast<const char*>(&len), 4);
    opt += text;
    EXPECT_NE(f.find(opt), std::string::npos);
    auto r = TraceDatReader::open(p, &err);
    ASSERT_TRUE(r) << err;
    EXPECT_EQ(r->process_pid(), 0x1234);
    EXPECT_EQ(r->process_name(), "my_app_x");
    // The Chrome export names the process from the file, unless told.
    for (int32_t given : {0, 77}) {
      char* buf = nullptr;
      size_t n = 0;
      std::FILE* out = open_memstream(&buf, &n);
      ASSERT_EQ(write_chrome_json(*r, out, given, &err), 0) << err;
      std::fclose(out);
      const std::string json(buf, n);
      std::free(buf);
      const std::string want = "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" +
                               std::to_string(given ? given : 0x1234) +
                               ",\"args\":{\"name\":\"my_app_x\"}}";
      EXPECT_NE(json.find(want), std::string::npos) << json.substr(0, 200);
    }
  }
  {
    // No pid: no option; the export says pid 1, process "rbtrace".
    const std::string p = write("anonymous", 0, "ignored");
    EXPECT_EQ(read_file(p).find("ignored"), std::string::npos);
    auto r = TraceDatReader::open(p, &err);
    ASSERT_TRUE(r) << err;
    EXPECT_EQ(r->process_pid(), 0);
    EXPECT_EQ(r->process_name(), "");
    char* buf = nullptr;
    size_t n = 0;
    std::FILE* out = open_memstream(&buf, &n);
    ASSERT_EQ(write_chrome_json(*r, out, 0, &err), 0) << err;
    std::fclose(out);
    const std::string json(buf, n);
    std::free(buf);
    EXPECT_NE(json.find("\"pid\":1,\"args\":{\"name\":\"rbtrace\"}"), std::string::npos);
  }
  {
    // A first line that is not "<pid hex> <count hex> <name>": no process.
    const std::string p = write("bad", 0x1234, "app");
    std::string f = read_file(p);
    const size_t at = f.find("1234 0 app\n");
    ASSERT_NE(at, std::string::npos);
    f[at] = 'z';
    const std::string q = dir.path + "/bad2";
    const int fd = ::open(q.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_EQ(::write(fd, f.data(), f.size()), static_cast<ssize_t>(f.size()));
    ::close(fd);
    auto r = TraceDatReader::open(q, &err);
    ASSERT_TRUE(r) << err;
    EXPECT_EQ(r->process_pid(), 0);
    EXPECT_EQ(r->process_name(), "");
  }
}

// ---------------------------------------------------------------------------
// Hostile files.
// ---------------------------------------------------------------------------
class Hostile : public TraceDat {
 protected:
  void SetUp() override {
    rec_ = record(dir.path, {300, 200, 0}, 4, Mode::kOverwrite);
    valid_ = read_file(rec_.file);
    ASSERT_GT(valid_.size(), 8192u);
    l_ = layout_of(valid_);
    ASSERT_EQ(try_read_all(valid_), "");
  }
  // The modified copy must fail with an error containing `want`.
  void expect_error(const std::string& f, const std::string& want) {
    const std::string e = try_read_all(f);
    EXPECT_NE(e, "") << "accepted; wanted an error with '" << want << "'";
    EXPECT_NE(e.find(want), std::string::npos) << "error: " << e;
  }
  Recorded rec_;
  std::string valid_;
  Layout l_;
};

TEST_F(Hostile, EveryTruncationIsAnError) {
  // Every prefix through the header and the first data page, then every
  // 61st length, then random lengths: always an error, never a crash.
  std::vector<size_t> cuts;
  for (size_t n = 0; n < l_.header_end + 4096 + 64 && n < valid_.size(); n++) cuts.push_back(n);
  for (size_t n = l_.header_end; n < valid_.size(); n += 61) cuts.push_back(n);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200; i++) cuts.push_back(rng() % valid_.size());
  for (size_t n : cuts) {
    const std::string f = valid_.substr(0, n);
    const std::string e = try_read_all(f);
    ASSERT_NE(e, "") << "a " << n << "-byte prefix was accepted";
  }
  // Section boundaries in particular name what is missing.
  expect_error(valid_.substr(0, 5), "truncated");
  expect_error(valid_.substr(0, l_.header_page_len_at + 4), "header_page size");
  expect_error(valid_.substr(0, l_.systems_at), "event system count");
  expect_error(valid_.substr(0, l_.cmdlines_at + 8), "truncated file: cmdlines");
  expect_error(valid_.substr(0, l_.options_at + 4), "truncated");
  expect_error(valid_.substr(0, l_.flyrecord_at + 12), "CPU data");
  expect_error(valid_.substr(0, l_.header_end), "beyond the end of the file");
}

TEST_F(Hostile, RandomByteFlipsNeverCrash) {
  std::mt19937_64 rng(42);
  int errors = 0;
  for (int i = 0; i < 1000; i++) {
    std::string f = valid_;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; k++) {
      // Half of the flips in the header, where lengths live.
      const uint64_t span = (i & 1) ? l_.header_end : f.size();
      f[rng() % span] ^= static_cast<char>(1u << (rng() % 8));
    }
    if (!try_read_all(f).empty()) errors++;
  }
  EXPECT_GT(errors, 100);  // many flips are caught; none crashed
}

TEST_F(Hostile, AbsurdLengthsAndCounts) {
  struct Case {
    uint64_t at;
    int width;
    uint64_t value;
    const char* want;
  };
  const std::vector<Case> cases = {
      {l_.page_size_at, 4, 3000, "page size 3000"},
      {l_.page_size_at, 4, 1u << 31, "page size"},
      {l_.header_page_len_at, 8, 1ull << 62, "exceeds the limit"},
      {l_.header_page_len_at, 8, UINT64_MAX, "exceeds the limit"},
      {l_.header_event_len_at, 8, 60000, ""},  // misaligned from there on: some error
      {l_.ftrace_count_at, 4, 0xffffffffu, "ftrace format count"},
      {l_.systems_at, 4, 0xffffffffu, "event system count"},
      {l_.first_event_count_at, 4, 0x7fffffffu, "event count"},
      {l_.first_format_len_at, 8, 1ull << 40, "exceeds the limit"},
      {l_.first_format_len_at, 8, 3, "event format"},
      {l_.kallsyms_at, 4, 0xffffffffu, "kallsyms"},
      {l_.printk_at, 4, 0xfffffff0u, "printk"},
      {l_.cmdlines_at, 8, 1ull << 35, "exceeds the limit"},
      {l_.cmdlines_at, 8, 1ull << 20, "truncated file: cmdlines"},
      {l_.cpus_at, 4, 0xffffffffu, "CPU count"},
      {l_.cpus_at, 4, static_cast<uint32_t>(valid_.size() / 16 + 1), "CPU count"},
      {l_.first_option_len_at, 4, 0xffffffffu, "option 2"},
      {l_.cpu_offset_at[0], 8, UINT64_MAX - 4095, "beyond the end"},
      {l_.cpu_offset_at[0], 8, 4096 * 3 + 1, "not page aligned"},
      {l_.cpu_offset_at[0] + 8, 8, UINT64_MAX, "not a whole number of pages"},
      {l_.cpu_offset_at[0] + 8, 8, 1ull << 40, "beyond the end"},
      {l_.cpu_offset_at[0], 8, 0, "overlaps the header"},
      {l_.cpu_offset_at[1], 8, l_.cpu_offset[0], "overlap"},
      {l_.clock_len_at, 8, 1ull << 50, "exceeds the limit"},
      {l_.cpu_offset[0] + 8, 8, 0x3fffffffu, "commit length"},
      {l_.cpu_offset[0] + 8, 8, 1ull << 40, "unknown bits"},
      {l_.cpu_offset[0] + 8, 8, 40 | kMissedStored, "MISSED_STORED without"},
      {l_.cpu_offset[0] + 8, 8, 4080 | kMissedStored | kMissedEvents, "no room"},
  };
  for (const Case& c : cases) {
    std::string f = valid_;
    ASSERT_LE(c.at + c.width, f.size());
    if (c.width == 4)
      put32(&f, c.at, static_cast<uint32_t>(c.value));
    else
      put64(&f, c.at, c.value);
    SCOPED_TRACE(std::string("case '") + c.want + "' at offset " + std::to_string(c.at));
    expect_error(f, c.want);
  }
}

TEST_F(Hostile, CorruptEventsAndRecords) {
  const uint64_t data = l_.cpu_offset[0] + 16;
  {  // first event: type_len 0 with a length beyond the page
    std::string f = valid_;
    put32(&f, data, 0);
    put32(&f, data + 4, 1u << 20);
    expect_error(f, "corrupt event");
  }
  {  // a record shorter than the 8-byte common header: type_len 1
    std::string f = valid_;
    put32(&f, data, 1);
    expect_error(f, "shorter than the 8-byte common header");
  }
  {  // an event type with no format: reported, not an error
    std::string f = valid_;
    const uint32_t w = load_u32(f.data() + data);
    const uint64_t rec = data + (event_type_len(w) == 0 ? 8 : 4);
    f[rec] = static_cast<char>(0xfe);
    f[rec + 1] = static_cast<char>(0xfe);
    EXPECT_EQ(try_read_all(f), "");
  }
  {  // a __data_loc pointing outside its record: the first sample record
    std::string err;
    auto r = TraceDatReader::open_memory(valid_.data(), valid_.size(), &err);
    ASSERT_TRUE(r) << err;
    TraceRecord t;
    uint32_t loc_off = 0;
    while (r->next(&t) > 0 && !(t.event && t.event->name == "sample")) {
    }
    ASSERT_TRUE(t.event && t.event->name == "sample");
    for (const TraceField& fd : t.event->fields)
      if (fd.name == "label") loc_off = fd.offset;
    ASSERT_GT(loc_off, 0u);
    const uint32_t w = load_u32(valid_.data() + t.file_offset);
    const uint64_t rec = t.file_offset + (event_type_len(w) == 0 ? 8 : 4);
    std::string f = valid_;
    put32(&f, rec + loc_off, (200u << 16) | 0x0fff);
    expect_error(f, "__data_loc of 'label'");
  }
  {  // a format whose field lies beyond the records: every record too short
    std::string f = valid_;
    const size_t p = f.find("\tfield:s32 value;\toffset:16;");
    ASSERT_NE(p, std::string::npos);
    const size_t q = f.find("offset:16;", p);
    f.replace(q, 10, "offset:99;");  // same length
    expect_error(f, "its format needs");
  }
  {  // format text: a bad number, an unknown line
    std::string f = valid_;
    const size_t p = f.find("\tfield:s32 value;\toffset:16;\tsize:4;");
    ASSERT_NE(p, std::string::npos);
    f.replace(f.find("size:4;", p), 7, "size:x;");
    expect_error(f, "bad size");
    f = valid_;
    const size_t q = f.find("print fmt:");
    f.replace(q, 10, "print fxt:");
    expect_error(f, "unexpected text");
  }
}

TEST_F(Hostile, HostilePrintFormatsAreRenderedSafely) {
  // A print fmt with every conversion, widths, and a %n that must disable
  // print-fmt rendering (never handed to printf).
  std::string f = valid_;
  const size_t p = f.find("print fmt: \"seq=%llu value=%d label=%s small=%u\"");
  ASSERT_NE(p, std::string::npos) << "the sample event's print fmt changed";
  const std::string old = "\"seq=%llu value=%d label=%s small=%u\"";
  // Replaced in place by a string of the same length (the format's length
  // field stays right); spaces before the first comma are allowed.
  std::string g = f;
  std::string same = "\"%llx|%+d|%.3s|%#o\"";
  same.resize(old.size(), ' ');
  g.replace(p + 11, old.size(), same);
  std::string err;
  auto r = TraceDatReader::open_memory(g.data(), g.size(), &err);
  ASSERT_TRUE(r) << err;
  bool saw = false;
  TraceRecord t;
  std::string text;
  while (r->next(&t) > 0) {
    if (!t.event || t.event->name != "sample") continue;
    ASSERT_TRUE(t.event->print_ok) << t.event->print_fmt;
    ASSERT_TRUE(TraceDatReader::format_fields(t, &text, &err)) << err;
    TraceValue seq;
    TraceDatReader::field_value(t, t.event->fields[t.event->first_field], &seq, &err);
    char want[64];
    std::snprintf(want, sizeof want, "%llx|", static_cast<unsigned long long>(seq.u));
    EXPECT_EQ(text.rfind(want, 0), 0u) << text;
    saw = true;
    break;
  }
  EXPECT_TRUE(saw);
  // %n is not a supported conversion: the event falls back to name=value.
  std::string h = f;
  std::string bad = "\"%n%n%n%s\"";
  bad.resize(old.size(), ' ');
  h.replace(p + 11, old.size(), bad);
  r = TraceDatReader::open_memory(h.data(), h.size(), &err);
  ASSERT_TRUE(r) << err;
  while (r->next(&t) > 0) {
    if (!t.event || t.event->name != "sample") continue;
    EXPECT_FALSE(t.event->print_ok);
    ASSERT_TRUE(TraceDatReader::format_fields(t, &text, &err)) << err;
    EXPECT_EQ(text.rfind("seq=", 0), 0u) << text;
    break;
  }
}

// The committed corpus: every file but valid*.dat is refused with a message.
TEST(TraceDatCorpus, EveryCorruptFileIsAnError) {
  const std::string dir = RBTRACE_CORPUS_DIR;
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int corrupt = 0, valid = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 4 || name.substr(name.size() - 4) != ".dat") continue;
    const std::string bytes = read_file(dir + "/" + name);
    ASSERT_FALSE(bytes.empty()) << name;
    const std::string err = try_read_all(bytes);
    if (name.rfind("valid", 0) == 0) {
      EXPECT_EQ(err, "") << name;
      valid++;
    } else {
      EXPECT_NE(err, "") << name << " was accepted";
      corrupt++;
    }
  }
  closedir(d);
  EXPECT_GE(corrupt, 12);
  EXPECT_GE(valid, 1);
}

}  // namespace
