// spool_view.h - what the consumer tests see of a version-2 spool segment
// (consumer/src/spool.h): its sidecar decoded, and each CPU's pages read
// from / written to the one `<seg>.dat` file at the layout's offsets.
//
// The offsets are computed here from the meta, independently of recover's
// code: CPU c's pages lie from header_room + c * cpu_region, up to the
// region's end or the file's end; when the meta has `final` sizes (the
// publisher began compacting), where the collapses done so far (told by
// the file's size) put them. Data is found with SEEK_DATA/SEEK_HOLE: the
// regions are gigabytes of holes.
//
// Needs the consumer's internal headers: link rbtrace_consumer_internal.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "spool.h"

namespace spoolv {

using rbtrace::detail::SpoolMeta;

inline std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// Reads a whole small file. "" or an error.
inline std::string slurp(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return errno_text(path);
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  std::fclose(f);
  return "";
}

// Reads and decodes a `<seg>.meta`. "" or an error.
inline std::string read_meta(const std::string& path, SpoolMeta* m) {
  std::string text, err;
  if (std::string e = slurp(path, &text); !e.empty()) return e;
  if (!rbtrace::detail::decode_meta(text, m, &err)) return path + ": " + err;
  return "";
}

// The data extents of [start, end) of `fd`, ascending.
inline std::vector<std::pair<uint64_t, uint64_t>> data_extents(int fd, uint64_t start,
                                                               uint64_t end) {
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (uint64_t pos = start; pos < end;) {
    const off_t d = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0 || static_cast<uint64_t>(d) >= end) break;
    const off_t h = lseek(fd, d, SEEK_HOLE);
    const uint64_t he = h < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(h), end);
    v.emplace_back(static_cast<uint64_t>(d), he);
    pos = he;
  }
  return v;
}

struct Range {
  uint64_t start = 0, end = 0;  // [start, end) of the file
};

// The compaction plan of a meta with `final` sizes, computed here: the
// gaps between the kept intervals (data_start, then each CPU's
// [base, base + size)), ascending; the file truncated to the end of the
// last kept byte, then the gaps collapsed from the highest.
struct Compaction {
  uint64_t truncate_to = 0;
  std::vector<std::pair<uint64_t, uint64_t>> gaps;  // (offset, length), ascending
  // The gaps collapsed after `k` steps: the k highest.
  uint64_t size_after(size_t k) const {
    uint64_t s = truncate_to;
    for (size_t j = 0; j < k; j++) s -= gaps[gaps.size() - 1 - j].second;
    return s;
  }
  uint64_t offset_after(uint64_t original, size_t k) const {
    uint64_t off = original;
    for (size_t j = 0; j < k; j++) {
      const auto& g = gaps[gaps.size() - 1 - j];
      if (g.first < original) off -= g.second;
    }
    return off;
  }
};

inline uint64_t base(const SpoolMeta& m, uint32_t cpu) {
  return m.header_room + static_cast<uint64_t>(cpu) * m.cpu_region;
}

inline Compaction compaction(const SpoolMeta& m) {
  Compaction c;
  uint64_t prev_end = m.final_data_start;
  for (uint32_t cpu = 0; cpu < m.final_sizes.size(); cpu++) {
    if (m.final_sizes[cpu] == 0) continue;
    if (base(m, cpu) > prev_end) c.gaps.emplace_back(prev_end, base(m, cpu) - prev_end);
    prev_end = base(m, cpu) + m.final_sizes[cpu];
  }
  c.truncate_to = prev_end;
  return c;
}

// Where each CPU's pages lie in a segment file of `size` bytes.
inline std::vector<Range> cpu_ranges(const SpoolMeta& m, uint64_t size) {
  std::vector<Range> r(m.ncpus);
  if (!m.final_sizes.empty()) {
    const Compaction c = compaction(m);
    for (size_t k = 0; k <= c.gaps.size(); k++) {
      if (c.size_after(k) != size) continue;
      for (uint32_t cpu = 0; cpu < m.ncpus; cpu++) {
        const uint64_t at = c.offset_after(base(m, cpu), k);
        r[cpu] = {at, std::min(size, at + m.final_sizes[cpu])};
      }
      return r;
    }
  }
  for (uint32_t cpu = 0; cpu < m.ncpus; cpu++) {
    const uint64_t at = base(m, cpu);
    r[cpu] = {std::min(size, at), std::min(size, at + m.cpu_region)};
  }
  return r;
}

// The bytes of `r` up to the end of its last data, rounded up to a page
// and not past r.end (holes before it read as zeros). "" or an error.
inline std::string read_range(int fd, Range r, uint32_t page_size, std::string* out) {
  out->clear();
  const auto ext = data_extents(fd, r.start, r.end);
  if (ext.empty()) return "";
  uint64_t end = r.start + (ext.back().second - r.start + page_size - 1) / page_size * page_size;
  end = std::min(end, r.end);
  out->resize(end - r.start);
  for (uint64_t done = 0; done < out->size();) {
    const ssize_t n = pread(fd, &(*out)[done], out->size() - done,
                            static_cast<off_t>(r.start + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno_text("pread") : "short read";
    done += static_cast<uint64_t>(n);
  }
  return "";
}

// One segment of a spool: its meta, the size of its `.dat`, each CPU's
// bytes (read_range of its range).
struct Segment {
  SpoolMeta meta;
  std::string meta_text;
  uint64_t size = 0;
  std::vector<Range> ranges;
  std::vector<std::string> cpus;
};

// Loads segment `seg` of the session directory `sdir`. "" or an error.
inline std::string load_segment(const std::string& sdir, uint64_t seg, Segment* s) {
  const std::string mpath = sdir + "/" + rbtrace::detail::segment_file(seg, ".meta");
  if (std::string e = slurp(mpath, &s->meta_text); !e.empty()) return e;
  std::string err;
  if (!rbtrace::detail::decode_meta(s->meta_text, &s->meta, &err)) return mpath + ": " + err;
  if (s->meta.version != 2) return mpath + ": spool version " + std::to_string(s->meta.version);
  const std::string dpath = sdir + "/" + rbtrace::detail::segment_file(seg, ".dat");
  const int fd = open(dpath.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_text(dpath);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const std::string e = errno_text(dpath);
    close(fd);
    return e;
  }
  s->size = static_cast<uint64_t>(st.st_size);
  s->ranges = cpu_ranges(s->meta, s->size);
  s->cpus.assign(s->meta.ncpus, {});
  for (uint32_t c = 0; c < s->meta.ncpus; c++) {
    if (std::string e = read_range(fd, s->ranges[c], s->meta.page_size, &s->cpus[c]); !e.empty()) {
      close(fd);
      return dpath + " CPU " + std::to_string(c) + ": " + e;
    }
  }
  close(fd);
  return "";
}

// Writes a segment file as the drain thread lays it out (uncompacted):
// CPU c's bytes at base(c), nothing else written (holes), `size` bytes
// long. "" or an error.
inline std::string write_segment(const std::string& path, const SpoolMeta& m,
                                 const std::vector<std::string>& cpus, uint64_t size) {
  const int fd = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return errno_text(path);
  std::string e;
  for (uint32_t c = 0; c < cpus.size() && e.empty(); c++) {
    const std::string& d = cpus[c];
    for (uint64_t done = 0; done < d.size();) {
      const ssize_t n =
          pwrite(fd, d.data() + done, d.size() - done, static_cast<off_t>(base(m, c) + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        e = n < 0 ? errno_text("pwrite " + path) : "short write " + path;
        break;
      }
      done += static_cast<uint64_t>(n);
    }
  }
  if (e.empty() && ftruncate(fd, static_cast<off_t>(size)) != 0) e = errno_text("truncate " + path);
  close(fd);
  return e;
}

}  // namespace spoolv
