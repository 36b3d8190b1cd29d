// spool.h - the consumer's spool layout and its self-describing sidecar
// (internal to rbtrace::consumer).
//
//   DIR/spool/<session>/          one per Consumer (mode 0700)
//     lock                        flock()ed by the live process: recovery
//                                 skips sessions whose lock it cannot take
//     cmdlines                    appended "tid comm\n" lines
//     <seg>.meta                  written (tmp + rename) before any page of
//                                 the segment: everything recovery needs;
//                                 rewritten (with the compaction plan)
//                                 before the file is compacted
//     <seg>.dat                   the segment, laid out as the trace.dat it
//                                 becomes (SegmentLayout): room for the
//                                 header, then CPU N's pages from
//                                 header_room + N * cpu_region, page after
//                                 page; what is never written is a hole
//     <seg>.cpu<N>                (spool version 1 only, read by recover:
//                                 raw pages of CPU N from offset 0)
//   DIR/tmp/<session>-<seg>.dat.<pid>.<n>   private trace being published
//                                 by copying (rbtrace/atomic_file.h: where
//                                 the file system has no O_TMPFILE)
//   DIR/<public name>             published traces
//
// <seg> is the segment number, 6 digits. The public name of a segment is
// fixed when it starts and recorded in its meta, so recovery publishes it
// under the name the live process would have used, and knows it is done
// when that name exists.
//
// Publishing in place (docs/DESIGN.md, "Every byte written once"): the
// publisher collapses the holes (fallocate FALLOC_FL_COLLAPSE_RANGE, a
// metadata operation on ext4 and XFS) so that the CPUs' pages follow the
// header back to back, writes the header in front, and links the file under
// its public name. Each collapse is atomic; the file's size tells recovery
// how many were done (SegmentLayout::stage_of_size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rbtrace/tracedat.h"

namespace rbtrace::detail {

// 2: one <seg>.dat per segment (SegmentLayout); 1: one <seg>.cpu<N> per
// CPU (recover still reads it).
inline constexpr uint32_t kSpoolVersion = 2;

struct SpoolMeta {
  uint32_t version = kSpoolVersion;
  std::string session;
  uint64_t segment = 0;
  std::string public_name;  // file name under DIR
  uint32_t page_size = 0;
  uint32_t ncpus = 0;
  // Version 2: where the pages lie in <seg>.dat (SegmentLayout).
  uint64_t header_room = 0;
  uint64_t cpu_region = 0;
  // Written before the publisher compacts the file (version 2): each
  // CPU's bytes kept (a multiple of page_size) and where the data starts
  // after compaction. Empty: not compacting.
  std::vector<uint64_t> final_sizes;
  uint64_t final_data_start = 0;
  std::string clock;
  bool tsc2nsec = false;
  CounterCalibration calibration;
  std::vector<EventFormat> events;
};

// Where CPU c's pages lie in a version-2 segment file, and how the
// publisher compacts it: the gaps between the kept bytes (the room left in
// front of the header's end, each CPU region's unused tail) are collapsed
// from the highest to the lowest, after the file is truncated to the end of
// the last kept byte. Pure arithmetic, shared by the publisher and recover.
struct SegmentLayout {
  uint64_t header_room = 0;  // a multiple of the page size
  uint64_t cpu_region = 0;   // a multiple of the page size

  uint64_t base(uint32_t cpu) const { return header_room + cpu * cpu_region; }

  struct Collapse {
    uint64_t off, len;  // in the file as it is when the step runs
  };
  struct Plan {
    uint64_t truncate_to = 0;            // step 0
    std::vector<Collapse> steps;         // then these, in order
    std::vector<uint64_t> sizes;         // kept bytes per CPU
    std::vector<uint64_t> final_offset;  // where CPU c's bytes end up
    // The file's size once truncated and `done` collapses ran.
    uint64_t size_after(size_t done) const;
    // Where CPU c's bytes lie once `done` collapses ran.
    uint64_t offset_after(const SegmentLayout& l, uint32_t cpu, size_t done) const;
    // How many collapses a file of `size` bytes has had: 0..steps.size(),
    // or -1 when no stage has that size (not truncated yet, or damaged:
    // the layout before compaction is assumed).
    long stage_of_size(uint64_t size) const;
  };
  // The plan for `sizes` kept bytes per CPU, the data to start at
  // `data_start` (the header's page-rounded size, <= header_room). False
  // for sizes that do not fit the layout.
  bool plan(const std::vector<uint64_t>& sizes, uint64_t data_start, Plan* out) const;
};

// Whether the file system of the directory `dir` takes the one-file
// layout (SegmentLayout) of `end` bytes: a probe file (unnamed, or named and
// removed at once) of 3 pages loses its middle one (fallocate
// FALLOC_FL_COLLAPSE_RANGE at `page_size` granularity), then is truncated
// to `end` (a hole). 0; -EOPNOTSUPP when the collapse is refused; -EFBIG
// when the file cannot be that large; else -errno. Call with no finite
// RLIMIT_FSIZE (the truncation would raise SIGXFSZ).
int probe_one_file_layout(const std::string& dir, uint32_t page_size, uint64_t end);

// Clears O_DIRECT on `fd` if set (fcntl F_SETFL): what follows is written
// through the page cache (pieces of pages, the header).
void drop_o_direct(int fd);

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
