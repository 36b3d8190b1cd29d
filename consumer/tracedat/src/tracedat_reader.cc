// tracedat_reader.cc - the validating trace.dat reader (see
// rbtrace/tracedat_reader.h for the contract, tracedat_internal.h for the
// layout): the file's sections parsed one function each, in file order,
// then records read page by page. Beside it: tracedat_source.* (byte
// sources, the bounds-checked parser), tracedat_event_format.* (event
// format texts), tracedat_print.cc (field values and their text),
// tracedat_page.cc (the page check and the event table, shared with spool
// recovery).
//
// Rule of the parser: every length, count and offset read from the file is
// compared with the bytes left in the file (and with a fixed cap) before it
// is used to allocate, read or index anything. Every failure names the
// section and the file offset.
#include "rbtrace/tracedat_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "rbtrace/format.h"
#include "rbtrace/tracedat_page.h"
#include "tracedat_event_format.h"
#include "tracedat_internal.h"
#include "tracedat_source.h"
#include "tracedat_text.h"

namespace rbtrace {

namespace td = tracedat;
using td::Parser;

struct TraceDatReader::Impl {
  std::unique_ptr<td::Source> src;
  uint32_t page_size = 0;
  std::string clock = "local";
  bool tsc2nsec = false;
  uint32_t mult = 0, shift = 0;
  int64_t ts_offset = 0;
  int32_t process_pid = 0;   // the first PROCMAPS option's, 0 without one
  std::string process_name;
  TraceEventTable events;  // the file's formats; every page is checked against them
  std::map<int32_t, std::string> cmdlines;
  std::vector<TraceCpuData> cpus;
  bool has_trace_clock = false;  // the TRACECLOCK option: the clock text follows flyrecord
  uint64_t header_end = 0;

  struct Cursor {
    uint64_t npages = 0;
    uint64_t next_page = 0;
    std::vector<unsigned char> page;
    bool loaded = false;
    uint64_t page_off = 0;  // file offset of the loaded page
    PageWalker walker{nullptr, 0, 0};
    bool missed = false, missed_known = true;
    uint64_t missed_count = 0;
    bool have_peek = false;
    TraceRecord peek;
  };
  std::vector<Cursor> cursors;
  std::vector<TraceCpuCounts> counts;
  std::string error;
  bool failed = false;

  // The header, section by section in file order (tracedat_internal.h).
  bool parse(std::string* err);
  bool parse_initial_format(Parser& p);
  bool parse_header_info(Parser& p);
  bool parse_ftrace_formats(Parser& p);
  bool parse_event_formats(Parser& p);
  bool add_event_format(Parser& p, const std::string& system);
  bool skip_kallsyms_and_printk(Parser& p);
  bool parse_cmdlines(Parser& p);
  bool parse_cpu_count(Parser& p);
  bool parse_options_section(Parser& p);
  bool parse_option_cpustat(Parser& p, uint32_t size, const std::string& what, size_t* next_stat);
  bool parse_option_procmaps(Parser& p, uint32_t size, const std::string& what);
  bool parse_option_tsc2nsec(Parser& p, uint32_t size, const std::string& what);
  bool parse_option_time_offset(Parser& p, uint16_t id, uint32_t size, const std::string& what);
  bool parse_flyrecord(Parser& p);
  bool parse_trace_clock(Parser& p);
  bool check_cpu_data(Parser& p);

  // Records.
  int peek(uint32_t cpu);
  int load_page(uint32_t cpu);
  int make_record(uint32_t cpu, const PageEvent& ev);
  int fail(const std::string& e) {
    error = e;
    failed = true;
    return -1;
  }
  uint64_t to_ns(uint64_t ts) const {
    uint64_t v = ts;
    if (tsc2nsec) v = static_cast<uint64_t>((static_cast<unsigned __int128>(ts) * mult) >> shift);
    return v + static_cast<uint64_t>(ts_offset);
  }
  void reset() {
    cursors.assign(cpus.size(), Cursor{});
    for (size_t c = 0; c < cpus.size(); c++) cursors[c].npages = cpus[c].size / page_size;
    counts.assign(cpus.size(), TraceCpuCounts{});
    error.clear();
    failed = false;
  }
};

// ---------------------------------------------------------------------------
// The header, section by section.
// ---------------------------------------------------------------------------
bool TraceDatReader::Impl::parse(std::string* err) {
  Parser p(*src, err);
  if (!parse_initial_format(p) || !parse_header_info(p) || !parse_ftrace_formats(p) ||
      !parse_event_formats(p) || !skip_kallsyms_and_printk(p) || !parse_cmdlines(p) ||
      !parse_cpu_count(p) || !parse_options_section(p) || !parse_flyrecord(p) ||
      !parse_trace_clock(p))
    return false;
  header_end = p.pos();
  if (!check_cpu_data(p)) return false;
  reset();
  return true;
}

// Magic, version string, endianness, long size, page size.
bool TraceDatReader::Impl::parse_initial_format(Parser& p) {
  char magic[td::kMagicLen];
  if (!p.bytes(magic, td::kMagicLen, "the trace.dat magic")) return false;
  if (std::memcmp(magic, td::kMagic, td::kMagicLen) != 0)
    return p.fail("not a trace.dat file (bad magic)");
  std::string version;
  if (!p.cstr(&version, td::kMaxVersionString, "version string")) return false;
  if (version != "6")
    return p.fail("unsupported trace.dat version '" + version.substr(0, 16) +
                  "' (rbtrace reads version 6)");
  uint8_t endian = 0, long_size = 0;
  if (!p.num(&endian, "endianness") || !p.num(&long_size, "long size") ||
      !p.num(&page_size, "page size"))
    return false;
  if (endian == 1) return p.fail("big-endian trace.dat files are not supported");
  if (endian != 0) return p.fail("bad endianness byte " + std::to_string(endian));
  if (long_size != 8) return p.fail("long size " + std::to_string(long_size) + " is not supported (8 only)");
  if (page_size < kMinPageSize || page_size > kMaxPageSize || (page_size & (page_size - 1)) != 0)
    return p.fail("page size " + std::to_string(page_size) +
                  " is not a power of two between 4096 and 1048576");
  return true;
}

// header_page (checked: the kernel's page layout) and header_event (the
// ring buffer's event header).
bool TraceDatReader::Impl::parse_header_info(Parser& p) {
  uint64_t n = 0;
  std::string text, why;
  if (!p.expect(td::kHeaderPage, sizeof td::kHeaderPage, "header_page") ||
      !p.num(&n, "header_page size") || !p.text(n, td::kMaxHeaderText, &text, "header_page"))
    return false;
  if (!td::check_header_page(text, page_size, &why)) return p.fail(why);
  if (!p.expect(td::kHeaderEvent, sizeof td::kHeaderEvent, "header_event") ||
      !p.num(&n, "header_event size") || !p.text(n, td::kMaxHeaderText, &text, "header_event"))
    return false;
  if (text.find("type_len") == std::string::npos || text.find("time_delta") == std::string::npos)
    return p.fail("header_event: not the ring buffer event header (no type_len/time_delta)");
  return true;
}

// One "u64 len, text" event format of `system`.
bool TraceDatReader::Impl::add_event_format(Parser& p, const std::string& system) {
  const uint64_t at = p.pos();
  uint64_t len = 0;
  std::string fmt;
  if (!p.num(&len, "event format size") || !p.text(len, td::kMaxFormatText, &fmt, "event format"))
    return false;
  if (events.size() >= td::kMaxEvents) return p.fail("more than 65536 event formats");
  TraceEventFormat ev;
  std::string why;
  if (!parse_event_format(fmt, system, &ev, &why))
    return p.fail("event format at offset " + std::to_string(at) + " (system " + system +
                  "): " + why);
  const uint16_t id = ev.id;
  if (!events.insert(std::move(ev)))
    return p.fail("event format at offset " + std::to_string(at) + ": ID " +
                  std::to_string(id) + " used twice");
  return true;
}

// u32 n, then n formats of system "ftrace".
bool TraceDatReader::Impl::parse_ftrace_formats(Parser& p) {
  uint32_t count = 0;
  if (!p.num(&count, "ftrace format count")) return false;
  if (count > td::kMaxFtraceFormats || count > p.left() / 8)
    return p.fail("ftrace format count " + std::to_string(count) + " exceeds " +
                  std::to_string(td::kMaxFtraceFormats) + " or the " + std::to_string(p.left()) +
                  " bytes left");
  for (uint32_t i = 0; i < count; i++) {
    if (!add_event_format(p, "ftrace")) return false;
  }
  return true;
}

// u32 nsys, then per system: its name, u32 n, n formats.
bool TraceDatReader::Impl::parse_event_formats(Parser& p) {
  uint32_t systems = 0;
  if (!p.num(&systems, "event system count")) return false;
  if (systems > td::kMaxSystems)
    return p.fail("event system count " + std::to_string(systems) + " exceeds " +
                  std::to_string(td::kMaxSystems));
  if (systems > p.left() / 6)
    return p.fail("truncated file: event system count " + std::to_string(systems) + " needs at least " +
                  std::to_string(uint64_t{systems} * 6) + " bytes, " + std::to_string(p.left()) + " left");
  for (uint32_t s = 0; s < systems; s++) {
    std::string sys;
    uint32_t count = 0;
    if (!p.cstr(&sys, td::kMaxSystemName, "event system name")) return false;
    if (!td::is_ident(sys)) return p.fail("bad event system name at offset " + std::to_string(p.pos()));
    if (!p.num(&count, "event count of system " + sys)) return false;
    if (count > td::kMaxEvents || count > p.left() / 8)
      return p.fail("event count " + std::to_string(count) + " of system " + sys +
                    " exceeds 65536 or the " + std::to_string(p.left()) + " bytes left");
    for (uint32_t i = 0; i < count; i++) {
      if (!add_event_format(p, sys)) return false;
    }
  }
  return true;
}

// kallsyms and printk formats: not used, skipped.
bool TraceDatReader::Impl::skip_kallsyms_and_printk(Parser& p) {
  uint32_t len32 = 0;
  if (!p.num(&len32, "kallsyms size") || !p.skip(len32, "kallsyms")) return false;
  return p.num(&len32, "printk size") && p.skip(len32, "printk formats");
}

// u64 len, "pid comm\n" lines.
bool TraceDatReader::Impl::parse_cmdlines(Parser& p) {
  uint64_t n = 0;
  std::string text;
  if (!p.num(&n, "cmdlines size") || !p.text(n, td::kMaxCmdlines, &text, "cmdlines")) return false;
  const auto lines = td::split_lines(text);
  for (size_t i = 0; i < lines.size(); i++) {
    const std::string_view l = lines[i];
    if (l.empty()) continue;
    const size_t sp = l.find(' ');
    std::string_view num = l.substr(0, sp);
    bool neg = false;
    if (!num.empty() && num[0] == '-') {
      neg = true;
      num.remove_prefix(1);
    }
    uint64_t pid = 0;
    if (sp == std::string_view::npos || sp + 1 >= l.size() || !td::parse_u64(num, INT32_MAX, &pid))
      return p.fail("cmdlines: line " + std::to_string(i + 1) + " is not 'pid comm'");
    cmdlines[neg ? -static_cast<int32_t>(pid) : static_cast<int32_t>(pid)] =
        std::string(l.substr(sp + 1, 256));
  }
  return true;
}

// u32 cpus: room for the flyrecord table checked before the CPUs exist.
bool TraceDatReader::Impl::parse_cpu_count(Parser& p) {
  uint32_t ncpus = 0;
  if (!p.num(&ncpus, "CPU count")) return false;
  if (ncpus > td::kMaxCpus)
    return p.fail("CPU count " + std::to_string(ncpus) + " exceeds " + std::to_string(td::kMaxCpus));
  if (uint64_t{ncpus} * 16 > p.left())
    return p.fail("truncated file: CPU count " + std::to_string(ncpus) + " needs a " +
                  std::to_string(uint64_t{ncpus} * 16) + "-byte flyrecord table, " +
                  std::to_string(p.left()) + " bytes left");
  cpus.resize(ncpus);
  return true;
}

// An optional "options  " section ({u16 id, u32 size, data}*, u16 0), then
// the "flyrecord" marker.
bool TraceDatReader::Impl::parse_options_section(Parser& p) {
  char kind[10];
  const uint64_t kind_at = p.pos();
  if (!p.bytes(kind, 10, "options/flyrecord marker")) return false;
  if (std::memcmp(kind, td::kOptions, 10) == 0) {
    size_t next_stat = 0;  // a CPUSTAT without "CPU: N" is the next CPU's
    for (;;) {
      const uint64_t at = p.pos();
      uint16_t id = 0;
      uint32_t size = 0;
      if (!p.num(&id, "option id")) return false;
      if (id == td::kOptDone) break;
      if (!p.num(&size, "option size")) return false;
      const std::string what = "option " + std::to_string(id) + " at offset " + std::to_string(at);
      if (!p.need(size, what)) return false;
      bool ok;
      switch (id) {
        case td::kOptCpuStat: ok = parse_option_cpustat(p, size, what, &next_stat); break;
        case td::kOptTraceClock:
          has_trace_clock = true;
          ok = p.skip(size, what);
          break;
        case td::kOptTsc2Nsec: ok = parse_option_tsc2nsec(p, size, what); break;
        case td::kOptProcMaps: ok = parse_option_procmaps(p, size, what); break;
        case td::kOptOffset:
        case td::kOptDate: ok = parse_option_time_offset(p, id, size, what); break;
        case td::kOptBuffer:
          return p.fail(what + ": buffer instances (option BUFFER) are not supported");
        default: ok = p.skip(size, what); break;  // unknown to us: skip, as trace-cmd does
      }
      if (!ok) return false;
    }
    if (!p.bytes(kind, 10, "flyrecord marker")) return false;
  }
  if (std::memcmp(kind, td::kLatency, 10) == 0)
    return p.fail("latency traces (\"latency\" section) are not supported");
  if (std::memcmp(kind, td::kFlyrecord, 10) != 0)
    return p.fail("expected \"options\" or \"flyrecord\" at offset " + std::to_string(kind_at));
  return true;
}

// CPUSTAT: "CPU: N\n..." (leading blank lines allowed); without it, the
// next CPU's.
bool TraceDatReader::Impl::parse_option_cpustat(Parser& p, uint32_t size, const std::string& what,
                                                size_t* next_stat) {
  std::string t;
  if (!p.text(size, size, &t, what)) return false;
  const size_t z = t.find('\0');
  if (z != std::string::npos) t.resize(z);
  size_t b = t.find_first_not_of("\n ");
  size_t cpu = *next_stat;
  if (b != std::string::npos && t.compare(b, 5, "CPU: ") == 0) {
    const size_t e = t.find('\n', b);
    uint64_t n = 0;
    if (!td::parse_u64(td::trim(std::string_view(t).substr(b + 5, e == std::string::npos ? std::string::npos : e - b - 5)),
                       UINT32_MAX, &n))
      return p.fail("CPUSTAT " + what + ": bad CPU number");
    cpu = static_cast<size_t>(n);
  }
  if (cpu >= cpus.size())
    return p.fail("CPUSTAT " + what + ": CPU " + std::to_string(cpu) + " but the file has " +
                  std::to_string(cpus.size()) + " CPUs");
  cpus[cpu].stats = std::move(t);
  *next_stat = cpu + 1;
  return true;
}

// TSC2NSEC: u32 mult, u32 shift, u64 offset (ignored).
bool TraceDatReader::Impl::parse_option_tsc2nsec(Parser& p, uint32_t size, const std::string& what) {
  if (size < 16) return p.fail("TSC2NSEC " + what + ": " + std::to_string(size) + " bytes, needs 16");
  uint64_t ignored_offset = 0;
  if (!p.num(&mult, what) || !p.num(&shift, what) || !p.num(&ignored_offset, what) ||
      !p.skip(size - 16, what))
    return false;
  if (mult == 0 || shift > 32)
    return p.fail("TSC2NSEC " + what + ": multiplier 0 or shift " + std::to_string(shift) + " > 32");
  tsc2nsec = true;
  return true;
}

// OFFSET (ns) and DATE (microseconds): NUL-terminated numbers, summed.
// PROCMAPS (trace-cmd record --proc-map): "<pid hex> <n hex> <name>\n"
// then n library lines, NUL-terminated. The first option whose first line
// parses names the traced process; the library lines are not used
// (skipped unread). One that does not parse names nothing, as trace-cmd
// ignores it (the name is the executable's path there: up to PATH_MAX).
bool TraceDatReader::Impl::parse_option_procmaps(Parser& p, uint32_t size, const std::string& what) {
  constexpr uint32_t kHead = 4096 + 64;
  const uint32_t head = size < kHead ? size : kHead;
  std::string t;
  if (!p.text(head, kHead, &t, what)) return false;
  if (!p.skip(size - head, what)) return false;
  if (process_pid != 0) return true;  // a later process's maps
  const size_t nl = t.find('\n');
  if (nl == std::string::npos) return true;
  t.resize(nl);
  const size_t s1 = t.find(' ');
  const size_t s2 = s1 == std::string::npos ? s1 : t.find(' ', s1 + 1);
  uint64_t pid = 0, libs = 0;
  if (s2 == std::string::npos || !td::parse_hex(t.substr(0, s1), &pid) ||
      !td::parse_hex(t.substr(s1 + 1, s2 - s1 - 1), &libs) || pid == 0 || pid > 0x7fffffff ||
      s2 + 1 >= t.size())
    return true;
  process_pid = static_cast<int32_t>(pid);
  process_name = t.substr(s2 + 1);
  return true;
}

bool TraceDatReader::Impl::parse_option_time_offset(Parser& p, uint16_t id, uint32_t size,
                                                    const std::string& what) {
  std::string t;
  if (!p.text(size, 64, &t, what)) return false;
  const size_t z = t.find('\0');
  if (z == std::string::npos) return p.fail(what + ": number is not NUL-terminated");
  t.resize(z);
  int64_t v = 0;
  if (!td::parse_i64_c(t, &v)) return p.fail(what + ": bad number '" + t.substr(0, 32) + "'");
  if (id == td::kOptDate) {
    if (v > INT64_MAX / 1000 || v < INT64_MIN / 1000) return p.fail(what + ": DATE out of range");
    v *= 1000;  // microseconds to ns
  }
  if ((v > 0 && ts_offset > INT64_MAX - v) || (v < 0 && ts_offset < INT64_MIN - v))
    return p.fail(what + ": time offsets overflow");
  ts_offset += v;
  return true;
}

// { u64 offset, u64 size } per CPU.
bool TraceDatReader::Impl::parse_flyrecord(Parser& p) {
  for (TraceCpuData& d : cpus) {
    if (!p.num(&d.offset, "CPU data offset") || !p.num(&d.size, "CPU data size")) return false;
  }
  return true;
}

// With the TRACECLOCK option: u64 len, "local [x86-tsc] ...", the
// bracketed word the clock in use.
bool TraceDatReader::Impl::parse_trace_clock(Parser& p) {
  if (!has_trace_clock) return true;
  uint64_t n = 0;
  std::string text;
  if (!p.num(&n, "trace clock size") || !p.text(n, td::kMaxClockText, &text, "trace clock"))
    return false;
  const size_t b = text.find('[');
  const size_t e = b == std::string::npos ? b : text.find(']', b);
  if (e == std::string::npos || e == b + 1) return p.fail("trace clock text has no [current] clock");
  clock = text.substr(b + 1, e - b - 1);
  return true;
}

// CPU data: page aligned, whole pages, inside the file, after the header,
// no overlap.
bool TraceDatReader::Impl::check_cpu_data(Parser& p) {
  std::vector<uint32_t> order;
  for (uint32_t c = 0; c < cpus.size(); c++) {
    const TraceCpuData& d = cpus[c];
    const std::string who = "CPU " + std::to_string(c) + " data (offset " + std::to_string(d.offset) +
                            ", size " + std::to_string(d.size) + ")";
    if (d.size == 0) continue;
    if (d.offset % page_size != 0) return p.fail(who + " is not page aligned");
    if (d.size % page_size != 0) return p.fail(who + " is not a whole number of pages");
    if (d.offset < header_end) return p.fail(who + " overlaps the header");
    if (d.offset > src->size() || d.size > src->size() - d.offset)
      return p.fail(who + " extends beyond the end of the file (" + std::to_string(src->size()) +
                    " bytes): truncated?");
    order.push_back(c);
  }
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return cpus[a].offset < cpus[b].offset; });
  for (size_t i = 1; i < order.size(); i++) {
    const TraceCpuData& a = cpus[order[i - 1]];
    if (a.offset + a.size > cpus[order[i]].offset)
      return p.fail("CPU " + std::to_string(order[i - 1]) + " and CPU " + std::to_string(order[i]) +
                    " data overlap");
  }
  return true;
}

// ---------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------

// The CPU's next record into cursors[cpu].peek: 1, 0 at the CPU's end, -1.
int TraceDatReader::Impl::peek(uint32_t cpu) {
  Cursor& c = cursors[cpu];
  if (c.have_peek) return 1;
  for (;;) {
    if (!c.loaded) {
      if (c.next_page >= c.npages) return 0;
      if (load_page(cpu) < 0) return -1;
    }
    PageEvent ev;
    if (c.walker.next(&ev)) return make_record(cpu, ev);
    if (c.walker.error())  // a guard: load_page's check walked this page already
      return fail("CPU " + std::to_string(cpu) + ", page " + std::to_string(c.next_page - 1) +
                  " (file offset " + std::to_string(c.page_off) + "): corrupt event at data offset " +
                  std::to_string(c.walker.offset()));
    c.loaded = false;
  }
}

// Reads the CPU's next page, checks it whole (check_trace_page: the header,
// every event, every record against its format; the check spool recovery
// makes before it publishes a page), counts it and carries its lost events
// to the next record. A page that fails gives none of its records.
int TraceDatReader::Impl::load_page(uint32_t cpu) {
  Cursor& c = cursors[cpu];
  const uint64_t off = cpus[cpu].offset + c.next_page * page_size;
  const std::string where = "CPU " + std::to_string(cpu) + ", page " + std::to_string(c.next_page) +
                            " (file offset " + std::to_string(off) + ")";
  if (c.page.size() != page_size) c.page.assign(page_size, 0);
  std::string e;
  if (!src->read(off, c.page.data(), page_size, &e)) return fail(where + ": " + e);
  TracePageInfo info;
  if (!check_trace_page(c.page.data(), page_size, events, &info, &e)) return fail(where + ": " + e);
  const TracePageHeader& h = info.header;
  TraceCpuCounts& k = counts[cpu];
  k.pages++;
  if (h.missed) {
    k.missed_pages++;
    if (h.missed_stored) k.missed_events += h.missed_count;
    else k.missed_unknown++;
    // Carried to the next record (a page without records passes it on).
    if (!c.missed) c.missed_known = true;
    c.missed = true;
    c.missed_known = c.missed_known && h.missed_stored;
    c.missed_count += h.missed_count;
  }
  c.walker = PageWalker(c.page.data() + kPageHeaderSize, h.length, h.ts);
  c.page_off = off;
  c.loaded = true;
  c.next_page++;
  return 0;
}

// Makes the walker's event `ev` of the CPU's page the peeked record (the
// page passed check_trace_page in load_page: the record is at least the
// common header, fits its format and its strings lie inside it): 1.
int TraceDatReader::Impl::make_record(uint32_t cpu, const PageEvent& ev) {
  Cursor& c = cursors[cpu];
  const uint64_t at = c.page_off + kPageHeaderSize + ev.offset;
  TraceRecord& r = c.peek;
  r = TraceRecord{};
  r.cpu = cpu;
  r.ts = ev.ts;
  r.ts_ns = to_ns(ev.ts);
  CommonHeader h;
  std::memcpy(&h, ev.data, sizeof h);
  r.type = h.common_type;
  r.flags = h.common_flags;
  r.preempt_count = h.common_preempt_count;
  r.pid = h.common_pid;
  r.event = events.find(h.common_type);
  r.data = ev.data;
  r.size = ev.length;
  r.file_offset = at;
  if (c.missed) {
    r.missed = true;
    r.missed_known = c.missed_known;
    r.missed_count = c.missed_count;
    c.missed = false;
    c.missed_known = true;
    c.missed_count = 0;
  }
  c.have_peek = true;
  return 1;
}

TraceDatReader::TraceDatReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TraceDatReader::~TraceDatReader() = default;

namespace {
std::unique_ptr<TraceDatReader::Impl> make_impl(std::unique_ptr<td::Source> src, std::string* err) {
  auto impl = std::make_unique<TraceDatReader::Impl>();
  impl->src = std::move(src);
  std::string e;
  if (!impl->parse(&e)) {
    if (err) *err = e;
    return nullptr;
  }
  return impl;
}
}  // namespace

std::unique_ptr<TraceDatReader> TraceDatReader::open_fd(int fd, std::string* err) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    if (err) *err = std::string("cannot stat the file: ") + std::strerror(errno);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode)) {
    if (err) *err = "not a regular file";
    return nullptr;
  }
  const int dfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dfd < 0) {
    if (err) *err = std::string("cannot dup the file descriptor: ") + std::strerror(errno);
    return nullptr;
  }
  auto impl = make_impl(std::make_unique<td::FdSource>(dfd, static_cast<uint64_t>(st.st_size)), err);
  if (!impl) return nullptr;
  return std::unique_ptr<TraceDatReader>(new TraceDatReader(std::move(impl)));
}

std::unique_ptr<TraceDatReader> TraceDatReader::open(const std::string& path, std::string* err) {
  // O_NONBLOCK: a FIFO or device must not block the open; open_fd then
  // refuses anything but a regular file (where O_NONBLOCK does nothing).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (err) *err = path + ": " + std::strerror(errno);
    return nullptr;
  }
  std::string e;
  auto r = open_fd(fd, &e);
  ::close(fd);
  if (!r && err) *err = path + ": " + e;
  return r;
}

std::unique_ptr<TraceDatReader> TraceDatReader::open_memory(const void* data, size_t size,
                                                            std::string* err) {
  auto impl = make_impl(std::make_unique<td::MemSource>(data, size), err);
  if (!impl) return nullptr;
  return std::unique_ptr<TraceDatReader>(new TraceDatReader(std::move(impl)));
}

uint64_t TraceDatReader::file_size() const { return impl_->src->size(); }
uint32_t TraceDatReader::page_size() const { return impl_->page_size; }
uint32_t TraceDatReader::ncpus() const { return static_cast<uint32_t>(impl_->cpus.size()); }
const std::string& TraceDatReader::clock() const { return impl_->clock; }
int32_t TraceDatReader::process_pid() const { return impl_->process_pid; }
const std::string& TraceDatReader::process_name() const { return impl_->process_name; }
bool TraceDatReader::has_tsc2nsec() const { return impl_->tsc2nsec; }
uint32_t TraceDatReader::tsc2nsec_mult() const { return impl_->mult; }
uint32_t TraceDatReader::tsc2nsec_shift() const { return impl_->shift; }
int64_t TraceDatReader::ts_offset_ns() const { return impl_->ts_offset; }
uint64_t TraceDatReader::to_ns(uint64_t ts) const { return impl_->to_ns(ts); }
const std::vector<TraceEventFormat>& TraceDatReader::events() const { return impl_->events.events(); }
const TraceEventFormat* TraceDatReader::find_event(uint16_t id) const {
  return impl_->events.find(id);
}
const std::map<int32_t, std::string>& TraceDatReader::cmdlines() const { return impl_->cmdlines; }
std::string TraceDatReader::comm(int32_t pid) const {
  const auto it = impl_->cmdlines.find(pid);
  return it == impl_->cmdlines.end() ? "<...>" : it->second;
}
const std::vector<TraceCpuData>& TraceDatReader::cpus() const { return impl_->cpus; }
const std::string& TraceDatReader::error() const { return impl_->error; }
const std::vector<TraceCpuCounts>& TraceDatReader::counts() const { return impl_->counts; }
void TraceDatReader::rewind() { impl_->reset(); }

int TraceDatReader::next_on_cpu(uint32_t cpu, TraceRecord* rec) {
  Impl& m = *impl_;
  if (m.failed) return -1;
  if (cpu >= m.cpus.size()) {
    m.error = "no CPU " + std::to_string(cpu) + " in this file";
    return -1;
  }
  const int rc = m.peek(cpu);
  if (rc <= 0) return rc;
  *rec = m.cursors[cpu].peek;
  m.cursors[cpu].have_peek = false;
  m.counts[cpu].events++;
  return 1;
}

int TraceDatReader::next(TraceRecord* rec) {
  Impl& m = *impl_;
  if (m.failed) return -1;
  int best = -1;
  for (uint32_t c = 0; c < m.cpus.size(); c++) {
    const int rc = m.peek(c);
    if (rc < 0) return -1;
    if (rc == 0) continue;
    if (best < 0 || m.cursors[c].peek.ts_ns < m.cursors[static_cast<uint32_t>(best)].peek.ts_ns)
      best = static_cast<int>(c);
  }
  if (best < 0) return 0;
  Impl::Cursor& c = m.cursors[static_cast<uint32_t>(best)];
  *rec = c.peek;
  c.have_peek = false;
  m.counts[static_cast<uint32_t>(best)].events++;
  return 1;
}

}  // namespace rbtrace
