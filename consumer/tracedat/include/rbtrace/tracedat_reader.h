// rbtrace/tracedat_reader.h - a validating reader of trace-cmd trace.dat
// files, version 6 (rbtrace::tracedat).
//
// open() parses and checks every section before it returns: the magic and
// version, the header_page/header_event texts, every event format (fields:
// name, offset, size, signedness; the print fmt), cmdlines, the options
// (CPUSTAT, TRACECLOCK, TSC2NSEC, OFFSET, DATE), the flyrecord table (each
// CPU's data page aligned, a whole number of pages, inside the file, no
// overlap with the header or another CPU). Every length and count is
// checked against the bytes left in the file before anything is allocated
// or read, and against fixed caps; so a corrupt, truncated or hostile file
// gives an error sentence, never a crash, and what the reader allocates
// stays proportional to the file's size (a text is allocated only once the
// file is known to hold it; a page buffer only for a CPU whose pages are
// in the file).
//
// Records are then read page by page (pread, one page buffer per CPU): each
// page is checked whole before any of its records is returned, by
// check_trace_page (rbtrace/tracedat_page.h, the check `rbtrace recover`
// also makes before it publishes a page): its commit word (length <=
// page_size - 16, no unknown flag bits, room for a stored lost-event
// count), its events walked with PageWalker, and each record checked
// against its format (long enough for every field; each __data_loc string
// inside the record). So a record next() returns can be printed:
// field_value() fails only on a record that did not come from next().
//
// Thread safety: a reader is used by one thread at a time; distinct readers
// are independent.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rbtrace {

// One field of an event format.
struct TraceField {
  enum class Kind : uint8_t {
    kInt,        // size 1, 2, 4 or 8: an integer, `is_signed` says how
    kDynString,  // __data_loc char[]: u32 = offset | length << 16
    kCharArray,  // char name[N]: a NUL-padded string of `size` bytes
    kBytes,      // anything else (arrays, odd sizes): raw bytes
    kFloat,      // "float x" (size 4) / "double x" (size 8): IEEE, little endian
    kIntArray,   // "T name[N]", T not char, size/N of 1, 2, 4 or 8 bytes
    kDynArray,   // __data_loc T[] with T not char: bytes (offset | length << 16)
  };
  std::string type;  // declaration without the name ("u64", "__data_loc char[]")
  std::string name;
  uint32_t offset = 0;
  uint32_t size = 0;
  bool is_signed = false;
  Kind kind = Kind::kInt;
  uint32_t array_len = 0;  // kIntArray: N (element size = size / N)
  // The names of its values, when the print fmt prints the field with
  // __print_symbolic(REC->name, {value, "name"}, ...): value as the
  // field's bytes zero-extended (libtraceevent compares that).
  std::vector<std::pair<uint64_t, std::string>> symbols;  // sorted by value, unique
};

// The name of `value` (the field's bytes zero-extended) in f.symbols, or
// null (a binary search).
const std::string* find_symbol(const TraceField& f, uint64_t value);

// One event format (events/<system>/<name>/format).
struct TraceEventFormat {
  std::string system;
  std::string name;
  uint16_t id = 0;
  std::vector<TraceField> fields;  // in file order, common_* fields first
  size_t first_field = 0;          // index of the first non-common field
  uint32_t min_size = 0;           // bytes a record needs for all fields
  std::string print_fmt;           // as written after "print fmt: "
  // The print fmt understood: its format string and, per conversion, the
  // field it prints. Empty `print_args` with `print_ok` false means the
  // reader prints every field as name=value instead.
  bool print_ok = false;
  std::string print_format;
  std::vector<int> print_args;  // index into fields
  // Per print arg, how it prints its field (kPlain: REC->name or
  // __get_str(name); the others are libtraceevent's helpers).
  enum class PrintHelper : uint8_t {
    kPlain,
    kSymbolic,  // __print_symbolic(REC->f, {v, "name"}...): fields[].symbols
    kHex,       // __print_hex(REC->f, N) / __print_hex(__get_dynamic_array(f), ...)
    kArray,     // __print_array(REC->f, N, elem_size)
  };
  std::vector<PrintHelper> print_helpers;  // parallel to print_args
};

// A CPU's data as the file declares it.
struct TraceCpuData {
  uint64_t offset = 0;  // page aligned
  uint64_t size = 0;    // a multiple of the page size
  std::string stats;    // the CPUSTAT option's text for this CPU, if any
};

// One record, as returned by next(). The pointers stay valid until the next
// call to next()/next_on_cpu()/rewind() on the reader.
struct TraceRecord {
  uint32_t cpu = 0;
  uint64_t ts = 0;     // the page clock (ticks for a counter clock)
  uint64_t ts_ns = 0;  // nanoseconds: TSC2NSEC and OFFSET/DATE applied
  uint16_t type = 0;   // common_type
  uint8_t flags = 0;   // common_flags
  uint8_t preempt_count = 0;
  int32_t pid = 0;                            // common_pid (the writer's tid)
  const TraceEventFormat* event = nullptr;    // null: no format for `type`
  const unsigned char* data = nullptr;        // the record
  uint32_t size = 0;                          // its bytes (4-byte rounded)
  uint64_t file_offset = 0;                   // of the event header
  // Lost events: set on the first record read from a page whose commit word
  // has MISSED_EVENTS (trace-cmd prints "CPU:N [M EVENTS DROPPED]" there).
  bool missed = false;
  bool missed_known = false;  // MISSED_STORED: the count is in missed_count
  uint64_t missed_count = 0;
};

// A field's value, decoded with bounds checks.
struct TraceValue {
  enum class Kind : uint8_t {
    kSigned,
    kUnsigned,
    kString,
    kBytes,
    kFloat,  // d (a float field widened to double)
    kArray,  // an integer array: `a`, each element sign-extended when array_signed
  } kind = Kind::kUnsigned;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool single = false;  // kFloat: d holds a float ("float" field)
  std::string s;  // kString (up to the first NUL) and kBytes
  std::vector<uint64_t> a;
  bool array_signed = false;
};

// What next() saw per CPU so far.
struct TraceCpuCounts {
  uint64_t pages = 0;          // pages read
  uint64_t events = 0;         // records returned
  uint64_t missed_pages = 0;   // pages with MISSED_EVENTS
  uint64_t missed_unknown = 0; // ... of which without a stored count
  uint64_t missed_events = 0;  // sum of the stored counts
};

class TraceDatReader {
 public:
  // Opens and validates `path`. Null and a sentence in *err on failure.
  static std::unique_ptr<TraceDatReader> open(const std::string& path, std::string* err);
  // The same on a readable fd (dup'ed; the caller keeps its own).
  static std::unique_ptr<TraceDatReader> open_fd(int fd, std::string* err);
  // The same on bytes in memory (not copied: they must outlive the reader).
  static std::unique_ptr<TraceDatReader> open_memory(const void* data, size_t size,
                                                     std::string* err);
  ~TraceDatReader();
  TraceDatReader(const TraceDatReader&) = delete;
  TraceDatReader& operator=(const TraceDatReader&) = delete;

  // ---- header ---------------------------------------------------------------
  uint64_t file_size() const;
  uint32_t page_size() const;
  uint32_t ncpus() const;
  // The bracketed clock of the trace_clock text ("x86-tsc", "tsc2nsec",
  // "mono", ...); "local" when the file has no TRACECLOCK option.
  const std::string& clock() const;
  bool has_tsc2nsec() const;
  uint32_t tsc2nsec_mult() const;
  uint32_t tsc2nsec_shift() const;
  int64_t ts_offset_ns() const;  // OFFSET and DATE options, summed
  // Ticks to ns as trace-cmd does: ((ts * mult) >> shift) when TSC2NSEC,
  // then + ts_offset_ns() (wrapping, unsigned).
  uint64_t to_ns(uint64_t ts) const;
  const std::vector<TraceEventFormat>& events() const;
  const TraceEventFormat* find_event(uint16_t id) const;
  const std::map<int32_t, std::string>& cmdlines() const;
  // The comm of `pid` from cmdlines, "<...>" if unknown (as trace-cmd).
  std::string comm(int32_t pid) const;
  const std::vector<TraceCpuData>& cpus() const;
  // The traced process, from the first PROCMAPS option (rbtrace's files
  // have one: TraceDatInput::pid): its pid (0 when the file has none) and
  // its name ("" then).
  int32_t process_pid() const;
  const std::string& process_name() const;

  // ---- records --------------------------------------------------------------
  // The next record over all CPUs in time stamp order (ties: the lower CPU
  // first, as trace-cmd). 1 with *rec filled, 0 at the end, -1 on corrupt
  // data (error() says where and what; the reader stays at the error).
  int next(TraceRecord* rec);
  // The next record of one CPU (shares the per-CPU cursors with next()).
  // 1, 0 at the CPU's end, -1 on corrupt data or a bad CPU.
  int next_on_cpu(uint32_t cpu, TraceRecord* rec);
  // Back to the first record of every CPU; counts reset.
  void rewind();
  const std::string& error() const;
  const std::vector<TraceCpuCounts>& counts() const;

  // ---- fields -----------------------------------------------------------------
  // Decodes field `f` of `rec` (whose event owns f). False with *err when
  // the record is too short or a __data_loc points outside it.
  static bool field_value(const TraceRecord& rec, const TraceField& f, TraceValue* out,
                          std::string* err);
  // The record's text as trace-cmd prints it after "name: ": the print fmt
  // applied to the fields when understood, else "name=value" for every
  // non-common field. Strings print up to their NUL; every byte that is not
  // printable ASCII (0x20..0x7e) — control bytes, DEL, bytes >= 0x80, UTF-8
  // included — prints as \xNN, in values and in the print fmt's own text
  // alike, so the result is printable ASCII only. As libtraceevent (and so trace-cmd), a print-fmt argument is the
  // field's bytes zero-extended, then cast to the conversion's type: an s8
  // field holding -69 printed with "%d" shows 187 (use "%hhd" to print -69);
  // field_value() and raw_fields() are sign-correct. False with *err on a
  // record that does not fit its format, or when rec.event is null.
  static bool format_fields(const TraceRecord& rec, std::string* out, std::string* err);
  // Every non-common field as "name=value", space separated, as trace-cmd
  // report -R prints them (1- and 2-byte signed fields zero-extended, as
  // libtraceevent 1.7 does; field_value() is sign-correct).
  static bool raw_fields(const TraceRecord& rec, std::string* out, std::string* err);

  struct Impl;

 private:
  explicit TraceDatReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rbtrace
