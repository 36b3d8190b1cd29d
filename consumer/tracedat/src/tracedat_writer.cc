// tracedat_writer.cc - assembles a trace-cmd trace.dat, version 6 (see
// tracedat_internal.h for the layout and rbtrace/tracedat.h for the API).
//
// The header is built in memory (it is small: formats, cmdlines, options),
// the data offsets are computed before anything is written, and the file is
// then written front to back: header, padding, each CPU's pages verbatim.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/event.h"
#include "rbtrace/format.h"
#include "rbtrace/tracedat.h"
#include "tracedat_internal.h"

namespace rbtrace {

namespace td = tracedat;

namespace {

// Little-endian serialization into a growing buffer (the host is little
// endian: the file says so in its endianness byte, see write_trace_dat).
class Buf {
 public:
  void u8(uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void raw(const void* p, size_t n) { s_.append(static_cast<const char*>(p), n); }
  void str(const std::string& v) { s_.append(v); }
  void str0(const char* v) { s_.append(v, std::strlen(v) + 1); }
  void str0(const std::string& v) {
    s_.append(v);
    s_.push_back('\0');
  }
  const std::string& data() const { return s_; }
  size_t size() const { return s_.size(); }

 private:
  std::string s_;
};
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the writer stores host-order numbers and declares little endian");

int fail(std::string* err, int code, std::string msg) {
  if (err) *err = std::move(msg);
  return -code;
}

std::string errno_text(int e) {
  std::string s = std::strerror(e);
  if (e == ENOSPC) s += " (disk full)";
  if (e == EFBIG) s += " (file size limit reached)";
  return s;
}

// write(2) until done; EINTR retried.
int write_all(int fd, const void* p, size_t n, const char* what, std::string* err) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      return fail(err, e, std::string("trace.dat: writing ") + what + ": " + errno_text(e));
    }
    if (w == 0) return fail(err, EIO, std::string("trace.dat: writing ") + what + ": wrote nothing");
    c += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

// Copies `n` bytes of `in_fd` from `off` to the current position of out_fd.
// copy_file_range first (no copy through user space, reflinks where the
// file system can); pread/write when the kernel refuses it for this pair
// of files. The input fd's offset does not move.
int copy_cpu_data(int in_fd, uint64_t off, uint64_t n, int out_fd, uint32_t cpu,
                  std::string* err) {
  const std::string what = "CPU " + std::to_string(cpu) + " data";
  bool use_cfr = true;
  std::unique_ptr<char[]> buf;
  constexpr size_t kChunk = 1 << 20;
  while (n > 0) {
    if (use_cfr) {
      loff_t in_off = static_cast<loff_t>(off);
      const size_t want = static_cast<size_t>(std::min<uint64_t>(n, 1ull << 30));
      const ssize_t r = ::copy_file_range(in_fd, &in_off, out_fd, nullptr, want, 0);
      if (r > 0) {
        off += static_cast<uint64_t>(r);
        n -= static_cast<uint64_t>(r);
        continue;
      }
      if (r == 0)
        return fail(err, EIO,
                    "trace.dat: " + what + ": the source ends at offset " + std::to_string(off) +
                        ", " + std::to_string(n) + " bytes short of the size given");
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
          errno == EBADF || errno == ETXTBSY || errno == EPERM) {
        use_cfr = false;  // not possible for this pair: copy through a buffer
        continue;
      }
      const int e = errno;
      return fail(err, e, "trace.dat: copying " + what + ": " + errno_text(e));
    }
    if (!buf) buf.reset(new (std::nothrow) char[kChunk]);
    if (!buf) return fail(err, ENOMEM, "trace.dat: copying " + what + ": out of memory");
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n, kChunk));
    const ssize_t r = ::pread(in_fd, buf.get(), want, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      return fail(err, e, "trace.dat: reading " + what + ": " + errno_text(e));
    }
    if (r == 0)
      return fail(err, EIO,
                  "trace.dat: " + what + ": the source ends at offset " + std::to_string(off) +
                      ", " + std::to_string(n) + " bytes short of the size given");
    const int rc = write_all(out_fd, buf.get(), static_cast<size_t>(r), what.c_str(), err);
    if (rc) return rc;
    off += static_cast<uint64_t>(r);
    n -= static_cast<uint64_t>(r);
  }
  return 0;
}

// The kernel's header_page text with the data field sized for this page
// size (the registry's text is written for 4 KiB pages).
std::string header_page_text(uint32_t page_size) {
  std::string s = header_page_format();
  const std::string want = "size:" + std::to_string(page_size - kPageHeaderSize) + ";";
  const size_t data = s.find("char data;");
  if (data != std::string::npos) {
    const size_t sz = s.find("size:", data);
    const size_t end = sz == std::string::npos ? sz : s.find(';', sz);
    if (end != std::string::npos) {
      s.replace(sz, end + 1 - sz, want);
      return s;
    }
  }
  // Not the expected text: state the layout directly.
  return "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
         "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
         "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
         "\tfield: char data;\toffset:16;\t" + want + "\tsigned:1;\n";
}

bool has_byte(const std::string& s, char a, char b = '\0') {
  return s.find(a) != std::string::npos || (b != '\0' && s.find(b) != std::string::npos);
}

int validate(const TraceDatInput& in, std::string* err, bool in_place) {
  const uint32_t ps = in.page_size;
  if (ps < kMinPageSize || ps > kMaxPageSize || (ps & (ps - 1)) != 0)
    return fail(err, EINVAL,
                "trace.dat: page size " + std::to_string(ps) +
                    " is not a power of two between 4096 and 1048576");
  if (in.cpus.size() > td::kMaxCpus)
    return fail(err, EINVAL, "trace.dat: " + std::to_string(in.cpus.size()) + " CPUs (at most " +
                                 std::to_string(td::kMaxCpus) + ")");
  if (in.events.size() > td::kMaxEvents)
    return fail(err, EINVAL, "trace.dat: too many event formats");
  if (in.clock.empty() || in.clock.size() > 64 || has_byte(in.clock, '[', ']') ||
      has_byte(in.clock, ' ', '\n') || in.clock.find('\0') != std::string::npos)
    return fail(err, EINVAL, "trace.dat: bad clock name '" + in.clock + "'");
  if (in.tsc2nsec && (in.calibration.mult == 0 || in.calibration.shift > 32))
    return fail(err, EINVAL,
                "trace.dat: TSC2NSEC needs a non-zero multiplier and a shift of at most 32");
  for (const EventFormat& e : in.events) {
    if (e.system.empty() || e.system.size() > td::kMaxSystemName ||
        e.system.find('\0') != std::string::npos || e.system == "ftrace")
      return fail(err, EINVAL, "trace.dat: bad event system name '" + e.system + "'");
    if (e.format.empty() || e.format.size() > td::kMaxFormatText)
      return fail(err, EINVAL, "trace.dat: event format of system '" + e.system +
                                   "' is empty or larger than 1 MiB");
  }
  for (size_t c = 0; c < in.cpus.size(); c++) {
    const TraceDatCpu& cpu = in.cpus[c];
    if (cpu.size % ps != 0)
      return fail(err, EINVAL, "trace.dat: CPU " + std::to_string(c) + " data size " +
                                   std::to_string(cpu.size) + " is not a multiple of the page size");
    if (cpu.size > 0 && cpu.fd < 0 && !in_place)
      return fail(err, EBADF, "trace.dat: CPU " + std::to_string(c) + " has data but no fd");
    if (cpu.offset > UINT64_MAX - cpu.size)
      return fail(err, EINVAL, "trace.dat: CPU " + std::to_string(c) + " offset + size overflows");
    if (cpu.stats.find('\0') != std::string::npos)
      return fail(err, EINVAL, "trace.dat: CPU " + std::to_string(c) + " stats contain a NUL");
  }
  return 0;
}

// "tid comm\n" lines; a comm with a NUL, space or newline would break the
// format: those bytes become '_'. Empty names are skipped.
std::string cmdlines_text(const std::vector<std::pair<int32_t, std::string>>& cmdlines) {
  std::string s;
  for (const auto& [tid, comm] : cmdlines) {
    if (comm.empty()) continue;
    std::string c = comm.substr(0, 255);
    for (char& ch : c) {
      if (ch == '\0' || ch == '\n' || ch == ' ' || ch == '\t' || ch == '\r') ch = '_';
    }
    s += std::to_string(tid);
    s += ' ';
    s += c;
    s += '\n';
  }
  return s;
}

// PROCMAPS's first line, "<pid hex> <libraries hex> <name>\n", with no
// library lines: trace-cmd reads it with "%x %x %s", so the name is one
// word (blanks and control characters become '_'; an empty name "?").
std::string procmaps_text(int32_t pid, const std::string& name) {
  char head[32];
  std::snprintf(head, sizeof head, "%x 0 ", static_cast<unsigned>(pid));
  std::string word = name.substr(0, 256);
  for (char& c : word)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) c = '_';
  if (word.empty()) word = "?";
  return head + word + "\n";
}

void option(Buf& b, uint16_t id, const std::string& data) {
  b.u16(id);
  b.u32(static_cast<uint32_t>(data.size()));
  b.str(data);
}

// Everything before the flyrecord table, into b; the trace clock text
// into *clock_text_out. Returns the header's size once the flyrecord table
// is added (build_flyrecord). The input must be valid (validate).
uint64_t build_front(const TraceDatInput& in, Buf& b, std::string* clock_text_out) {
  const uint32_t ps = in.page_size;
  // Initial format: magic, version, endianness, long size, page size.
  b.raw(td::kMagic, td::kMagicLen);
  b.str0("6");
  b.u8(0);  // little endian
  b.u8(8);  // sizeof(long): the page's commit field is 8 bytes
  b.u32(ps);

  // Header info.
  const std::string hp = header_page_text(ps);
  b.str0(td::kHeaderPage);
  b.u64(hp.size());
  b.str(hp);
  const std::string he = header_event_format();
  b.str0(td::kHeaderEvent);
  b.u64(he.size());
  b.str(he);

  // ftrace formats: none (rbtrace has no ftrace-internal events).
  b.u32(0);

  // Event formats grouped by system, systems in order of first appearance.
  std::vector<std::string> systems;
  for (const EventFormat& e : in.events) {
    if (std::find(systems.begin(), systems.end(), e.system) == systems.end())
      systems.push_back(e.system);
  }
  b.u32(static_cast<uint32_t>(systems.size()));
  for (const std::string& sys : systems) {
    b.str0(sys);
    uint32_t n = 0;
    for (const EventFormat& e : in.events) n += e.system == sys ? 1u : 0u;
    b.u32(n);
    for (const EventFormat& e : in.events) {
      if (e.system != sys) continue;
      b.u64(e.format.size());
      b.str(e.format);
    }
  }

  b.u32(0);  // kallsyms: none
  b.u32(0);  // printk formats: none

  const std::string cmd = cmdlines_text(in.cmdlines);
  b.u64(cmd.size());
  b.str(cmd);

  b.u32(static_cast<uint32_t>(in.cpus.size()));

  // Options.
  b.str0(td::kOptions);
  for (size_t c = 0; c < in.cpus.size(); c++) {
    std::string st = "CPU: " + std::to_string(c) + "\n" + in.cpus[c].stats;
    st.push_back('\0');
    option(b, td::kOptCpuStat, st);
  }
  // TRACECLOCK carries the clock text too (NUL-terminated), not nothing:
  // trace-cmd 3.1.6 runs strtok_r over this option's data whatever its
  // size, so an empty option is read past its end and, about once in a
  // hundred runs, the garbage makes it print raw time stamps. The
  // flyrecord copy below is the one the format defines.
  const std::string clock_text = in.tsc2nsec ? in.clock + " [tsc2nsec]" : "[" + in.clock + "]";
  *clock_text_out = clock_text;
  option(b, td::kOptTraceClock, clock_text + '\0');
  option(b, td::kOptVersion, std::string("rbtrace 1") + '\0');
  if (in.pid > 0) option(b, td::kOptProcMaps, procmaps_text(in.pid, in.process) + '\0');
  if (in.tsc2nsec) {
    // trace-cmd: ns = mul_u64_u32_shr(ticks, mult, shift) + ts_offset. The
    // TSC2NSEC offset field stays 0 (trace-cmd versions differ in what they
    // do with it); the calibration's ns offset goes in the OFFSET option,
    // which every version adds to each time stamp.
    Buf o;
    o.u32(in.calibration.mult);
    o.u32(in.calibration.shift);
    o.u64(0);
    option(b, td::kOptTsc2Nsec, o.data());
    option(b, td::kOptOffset, std::to_string(in.calibration.offset_ns) + '\0');
  }
  b.u16(td::kOptDone);
  // "flyrecord" and its NUL, an offset and a size per CPU, the clock text and its length.
  return b.size() + sizeof(td::kFlyrecord) + 16 * in.cpus.size() + 8 + clock_text.size();
}

// The flyrecord table and the clock text, after build_front.
void build_flyrecord(const TraceDatInput& in, const std::vector<uint64_t>& offsets,
                     const std::string& clock_text, Buf& b) {
  b.str0(td::kFlyrecord);
  for (size_t c = 0; c < in.cpus.size(); c++) {
    b.u64(offsets[c]);
    b.u64(in.cpus[c].size);
  }
  b.u64(clock_text.size());
  b.str(clock_text);
}

}  // namespace

uint64_t trace_dat_header_size(const TraceDatInput& in) {
  Buf b;
  std::string clock_text;
  return build_front(in, b, &clock_text);
}

uint64_t cpu_stats_text_bound() {
  // Every line is "key: <number>\n": at most 20 digits where zero has 1.
  const std::string zero = cpu_stats_text(CpuStats{}) + ring_stats_text(0);
  const auto lines = static_cast<uint64_t>(std::count(zero.begin(), zero.end(), '\n'));
  return zero.size() + 19 * lines;
}

int write_trace_dat(int out_fd, const TraceDatInput& in, std::string* err) {
  if (out_fd < 0) return fail(err, EBADF, "trace.dat: no output file descriptor");
  if (int rc = validate(in, err, /*in_place=*/false)) return rc;
  const uint32_t ps = in.page_size;
  Buf b;
  std::string clock_text;
  const uint64_t header_end = build_front(in, b, &clock_text);
  std::vector<uint64_t> offsets(in.cpus.size());
  uint64_t pos = header_end;
  for (size_t c = 0; c < in.cpus.size(); c++) {
    pos = (pos + ps - 1) & ~static_cast<uint64_t>(ps - 1);
    offsets[c] = pos;
    if (in.cpus[c].size > UINT64_MAX - pos)
      return fail(err, EFBIG, "trace.dat: total size overflows 64 bits");
    pos += in.cpus[c].size;
  }
  build_flyrecord(in, offsets, clock_text, b);

  if (int rc = write_all(out_fd, b.data().data(), b.size(), "the header", err)) return rc;

  uint64_t at = b.size();
  const std::string zeros(ps, '\0');
  for (size_t c = 0; c < in.cpus.size(); c++) {
    if (offsets[c] > at) {
      if (int rc = write_all(out_fd, zeros.data(), offsets[c] - at, "padding", err)) return rc;
      at = offsets[c];
    }
    if (in.cpus[c].size == 0) continue;
    if (int rc = copy_cpu_data(in.cpus[c].fd, in.cpus[c].offset, in.cpus[c].size, out_fd,
                               static_cast<uint32_t>(c), err))
      return rc;
    at += in.cpus[c].size;
  }
  return 0;
}

int write_trace_dat_header(int out_fd, const TraceDatInput& in, std::string* err) {
  if (out_fd < 0) return fail(err, EBADF, "trace.dat: no output file descriptor");
  if (int rc = validate(in, err, /*in_place=*/true)) return rc;
  const uint32_t ps = in.page_size;
  Buf b;
  std::string clock_text;
  uint64_t at = build_front(in, b, &clock_text);
  std::vector<uint64_t> offsets(in.cpus.size());
  for (size_t c = 0; c < in.cpus.size(); c++) {
    const TraceDatCpu& cpu = in.cpus[c];
    if (cpu.offset % ps != 0 || cpu.offset < at)
      return fail(err, EINVAL,
                  "trace.dat: CPU " + std::to_string(c) + " data at " + std::to_string(cpu.offset) +
                      " is not page aligned after the header and the CPUs before it (" +
                      std::to_string(at) + ")");
    offsets[c] = cpu.offset;
    at = cpu.offset + cpu.size;
  }
  build_flyrecord(in, offsets, clock_text, b);
  const std::string& h = b.data();
  for (size_t done = 0; done < h.size();) {
    const ssize_t w = ::pwrite(out_fd, h.data() + done, h.size() - done, static_cast<off_t>(done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = w < 0 ? errno : EIO;
      return fail(err, e, "trace.dat: writing the header: " + errno_text(e));
    }
    done += static_cast<size_t>(w);
  }
  return 0;
}

std::vector<EventFormat> registered_event_formats() {
  std::vector<EventFormat> v;
  for (const EventType* t : registered_events()) v.push_back({t->system, t->format()});
  return v;
}

std::string cpu_stats_text(const CpuStats& s) {
  std::string t;
  auto line = [&t](const char* k, uint64_t v) {
    t += k;
    t += ": ";
    t += std::to_string(v);
    t += '\n';
  };
  line("entries", s.entries);
  line("overrun", s.overrun);
  line("commit overrun", s.commit_overrun);
  line("bytes", s.bytes);
  line("dropped events", s.dropped);
  line("read events", s.read);
  line("nested dropped", s.nested_dropped);
  line("disabled", s.disabled);
  line("lost", s.lost());
  return t;
}

namespace {
constexpr char kNoSlotKey[] = "no slot dropped (all CPUs): ";
}

std::string ring_stats_text(uint64_t no_slot_dropped) {
  return kNoSlotKey + std::to_string(no_slot_dropped) + "\n";
}

uint64_t no_slot_dropped_in(const std::string& cpustat) {
  for (size_t at = 0; at < cpustat.size();) {
    const size_t end = std::min(cpustat.find('\n', at), cpustat.size());
    const std::string_view line(cpustat.data() + at, end - at);
    if (line.substr(0, sizeof kNoSlotKey - 1) == kNoSlotKey) {
      uint64_t v = 0;
      for (char ch : line.substr(sizeof kNoSlotKey - 1)) {
        if (ch < '0' || ch > '9' || v > (UINT64_MAX - 9) / 10) return 0;  // not a count
        v = v * 10 + static_cast<uint64_t>(ch - '0');
      }
      return v;
    }
    at = end + 1;
  }
  return 0;
}

}  // namespace rbtrace
