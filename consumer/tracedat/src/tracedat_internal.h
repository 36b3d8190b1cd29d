// tracedat_internal.h - constants of the trace-cmd trace.dat format shared by
// the writer (tracedat_writer.cc) and the reader (tracedat_reader.cc,
// tracedat_event_format.cc), internal to rbtrace::tracedat.
//
// Layout of a version-6 file (trace-cmd's Documentation/trace-cmd/
// trace-cmd.dat.v6.5.txt; all numbers little endian here):
//
//   "\x17\x08\x44" "tracing" "6\0"   magic and version string
//   u8 endian (0 = little)  u8 long_size (8)  u32 page_size
//   "header_page\0"  u64 len  text      kernel events/header_page
//   "header_event\0" u64 len  text      kernel events/header_event
//   u32 n   { u64 len  text }*n         ftrace formats (system "ftrace")
//   u32 nsys { "system\0" u32 n { u64 len text }*n }*nsys   event formats
//   u32 len  text                       kallsyms
//   u32 len  text                       printk formats
//   u64 len  text                       saved cmdlines ("pid comm\n"...)
//   u32 cpus
//   "options  \0" { u16 id  u32 len  data }*  u16 0        options
//   "flyrecord\0" { u64 offset  u64 size }*cpus
//   [u64 len "[clock]"]                 only when option TRACECLOCK is set
//   padding to page_size, then each CPU's pages at its offset
#pragma once

#include <cstdint>

namespace rbtrace::tracedat {

inline constexpr char kMagic[] = "\x17\x08\x44tracing";  // 10 bytes
inline constexpr uint32_t kMagicLen = 10;
inline constexpr char kHeaderPage[] = "header_page";    // written with its NUL: 12
inline constexpr char kHeaderEvent[] = "header_event";  // with its NUL: 13
inline constexpr char kOptions[] = "options  ";         // with its NUL: 10
inline constexpr char kFlyrecord[] = "flyrecord";       // with its NUL: 10
inline constexpr char kLatency[] = "latency  ";         // with its NUL: 10

// trace-cmd's enum of option ids (lib/trace-cmd/include/trace-cmd-local.h).
enum Option : uint16_t {
  kOptDone = 0,
  kOptDate = 1,        // ASCII hex offset in microseconds
  kOptCpuStat = 2,     // per_cpu/cpuN/stats text, "CPU: N\n" first
  kOptBuffer = 3,      // a buffer instance (not written, refused by the reader)
  kOptTraceClock = 4,  // the clock text follows the flyrecord table; the
                       // writer repeats it here (see write_trace_dat)
  kOptUname = 5,
  kOptHook = 6,
  kOptOffset = 7,      // ASCII signed offset in ns, added to every time stamp
  kOptCpuCount = 8,
  kOptVersion = 9,     // ASCII: the program that wrote the file
  kOptProcMaps = 10,
  kOptTraceId = 11,
  kOptTimeShift = 12,
  kOptGuest = 13,
  kOptTsc2Nsec = 14,   // u32 mult, u32 shift, u64 offset
};

// Bounds the reader enforces (and the writer never exceeds).
inline constexpr uint64_t kMaxHeaderText = 64 * 1024;     // header_page/_event
inline constexpr uint64_t kMaxFormatText = 1024 * 1024;   // one event format
inline constexpr uint32_t kMaxFtraceFormats = 4096;
inline constexpr uint32_t kMaxSystems = 65536;
inline constexpr uint32_t kMaxEvents = 65536;             // ids are 16 bits
inline constexpr uint32_t kMaxSystemName = 256;
inline constexpr uint64_t kMaxCmdlines = 64ull * 1024 * 1024;
inline constexpr uint32_t kMaxCpus = 65536;
inline constexpr uint64_t kMaxClockText = 4096;
inline constexpr uint32_t kMaxFields = 1024;
inline constexpr uint32_t kMaxVersionString = 16;

}  // namespace rbtrace::tracedat
