// spool.h - the consumer's spool layout and its self-describing sidecar
// (internal to rbtrace::consumer).
//
//   DIR/spool/<session>/          one per Consumer (mode 0700)
//     lock                        flock()ed by the live process: recovery
//                                 skips sessions whose lock it cannot take
//     cmdlines                    appended "tid comm\n" lines
//     <seg>.meta                  written (tmp + rename) before any page of
//                                 the segment: everything recovery needs
//     <seg>.cpu<N>                raw pages of CPU N at page-aligned offsets
//   DIR/tmp/<session>-<seg>.dat.<pid>.<n>   private trace being published
//                                 (rbtrace/atomic_file.h: where the file
//                                 system has no O_TMPFILE)
//   DIR/<public name>             published traces
//
// <seg> is the segment number, 6 digits. The public name of a segment is
// fixed when it starts and recorded in its meta, so recovery publishes it
// under the name the live process would have used, and knows it is done
// when that name exists.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rbtrace/tracedat.h"

namespace rbtrace::detail {

inline constexpr uint32_t kSpoolVersion = 1;

struct SpoolMeta {
  std::string session;
  uint64_t segment = 0;
  std::string public_name;  // file name under DIR
  uint32_t page_size = 0;
  uint32_t ncpus = 0;
  std::string clock;
  bool tsc2nsec = false;
  CounterCalibration calibration;
  std::vector<EventFormat> events;
};

// Text with explicit lengths, ending with a FNV-1a 64 checksum line.
std::string encode_meta(const SpoolMeta& m);
// Validates everything (magic, version, ranges, lengths, names, checksum).
bool decode_meta(const std::string& bytes, SpoolMeta* out, std::string* err);

// A name safe as one path component: [A-Za-z0-9._-], 1..200 chars, not
// "." or "..".
bool safe_name(const std::string& s);

// The drain thread's walk of a page it took from the ring: its header as
// the trace.dat reader checks it (read_page_header: commit flags, length
// within the page) and not empty, every event well formed; records are not
// checked against their formats (raw write() payloads carry no common
// header). Recovery does not use it: it checks spool pages with the
// reader's own check_trace_page (rbtrace/tracedat_page.h), formats and
// all. Counts the data events into *events; appends to *tids
// the common_pid of records whose common_type is a registered event id in
// [type_lo, type_hi) (raw events carry no common header), deduplicated
// against the last one. False for holes (never written) and torn pages.
bool check_page(const unsigned char* page, uint32_t page_size, uint64_t* events,
                std::vector<int32_t>* tids = nullptr, uint32_t type_lo = 0, uint32_t type_hi = 0);

// Parses "tid comm\n" lines; malformed lines are skipped.
std::vector<std::pair<int32_t, std::string>> parse_cmdlines(const std::string& text);

// Reads a whole (small) file, at most `limit` bytes, never through a
// symbolic link. 0 or -errno (-EFBIG when larger, -ELOOP for a link).
int read_small_file(const std::string& path, size_t limit, std::string* out);

// The output directory (the consumer's, recover's): it must be owned by
// us or root, and not writable by others unless sticky (/tmp-like), so
// that nobody else can replace the entries we check below it. 0 or -errno
// with a sentence in *err.
int check_output_dir(const std::string& dir, std::string* err);
// A directory of ours below it (spool, tmp, a session): made with `mode`
// when `create` and missing; never a symbolic link, owned by us, not
// writable by group or others. 0 or -errno with a sentence in *err.
int check_own_dir(const std::string& path, bool create, unsigned mode, std::string* err);

std::string segment_file(uint64_t seg, const char* suffix);

}  // namespace rbtrace::detail
