// spool.cc - spool sidecar encoding/validation and page checks; see spool.h.
#include "spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "rbtrace/format.h"
#include "rbtrace/ring_buffer.h"
#include "rbtrace/tracedat_page.h"

namespace rbtrace::detail {

namespace {

constexpr const char* kMagic = "rbtrace-spool";
constexpr size_t kMaxEvents = 65536;
constexpr size_t kMaxFormat = 1 << 20;

uint64_t fnv1a(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

// A cursor over the meta text; every read is bounds-checked.
class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}
  // Reads "key value\n"; value as text (no newline inside).
  bool kv(const char* key, std::string* val) {
    const size_t kl = std::strlen(key);
    if (s_.size() - pos_ < kl + 1 || s_.compare(pos_, kl, key) != 0 || s_[pos_ + kl] != ' ')
      return false;
    size_t start = pos_ + kl + 1;
    size_t nl = s_.find('\n', start);
    if (nl == std::string::npos || nl - start > 4096) return false;
    *val = s_.substr(start, nl - start);
    pos_ = nl + 1;
    return true;
  }
  bool u64(const char* key, uint64_t* v) {
    std::string t;
    if (!kv(key, &t) || t.empty() || t.size() > 20) return false;
    uint64_t r = 0;
    for (char c : t) {
      if (c < '0' || c > '9') return false;
      uint64_t d = static_cast<uint64_t>(c - '0');
      if (r > (UINT64_MAX - d) / 10) return false;
      r = r * 10 + d;
    }
    *v = r;
    return true;
  }
  bool i64(const char* key, int64_t* v) {
    std::string t;
    if (!kv(key, &t) || t.empty() || t.size() > 21) return false;
    bool neg = t[0] == '-';
    uint64_t r = 0;
    for (size_t i = neg ? 1 : 0; i < t.size(); i++) {
      char c = t[i];
      if (c < '0' || c > '9') return false;
      r = r * 10 + static_cast<uint64_t>(c - '0');
      if (r > (1ULL << 63)) return false;
    }
    if (!neg && r > static_cast<uint64_t>(INT64_MAX)) return false;
    *v = neg ? static_cast<int64_t>(0 - r) : static_cast<int64_t>(r);
    return true;
  }
  // Reads exactly n bytes then a newline.
  bool blob(size_t n, std::string* out) {
    if (s_.size() - pos_ < n + 1 || s_[pos_ + n] != '\n') return false;
    *out = s_.substr(pos_, n);
    pos_ += n + 1;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

bool safe_name(const std::string& s) {
  if (s.empty() || s.size() > 200 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

std::string segment_file(uint64_t seg, const char* suffix) {
  char b[64];
  std::snprintf(b, sizeof b, "%06" PRIu64 "%s", seg, suffix);
  return b;
}

std::string encode_meta(const SpoolMeta& m) {
  std::string s;
  auto kv = [&](const char* k, const std::string& v) {
    s += k;
    s += ' ';
    s += v;
    s += '\n';
  };
  kv(kMagic, std::to_string(m.version));
  kv("session", m.session);
  kv("segment", std::to_string(m.segment));
  kv("public", m.public_name);
  kv("page_size", std::to_string(m.page_size));
  kv("ncpus", std::to_string(m.ncpus));
  if (m.version >= 2) {
    kv("header_room", std::to_string(m.header_room));
    kv("cpu_region", std::to_string(m.cpu_region));
  }
  kv("clock", m.clock);
  kv("tsc2nsec", m.tsc2nsec ? "1" : "0");
  kv("hz", std::to_string(m.calibration.hz));
  kv("mult", std::to_string(m.calibration.mult));
  kv("shift", std::to_string(m.calibration.shift));
  kv("offset_ns", std::to_string(m.calibration.offset_ns));
  kv("realtime_offset_ns", std::to_string(m.calibration.realtime_offset_ns));
  kv("events", std::to_string(m.events.size()));
  for (const EventFormat& e : m.events) {
    kv("system", std::to_string(e.system.size()));
    s += e.system;
    s += '\n';
    kv("format", std::to_string(e.format.size()));
    s += e.format;
    s += '\n';
  }
  if (m.version >= 2) {
    kv("final", std::to_string(m.final_sizes.size()));
    for (uint64_t v : m.final_sizes) kv("size", std::to_string(v));
    kv("data_start", std::to_string(m.final_data_start));
  }
  char sum[32];
  std::snprintf(sum, sizeof sum, "%016" PRIx64, fnv1a(s.data(), s.size()));
  kv("checksum", sum);
  return s;
}

bool decode_meta(const std::string& b, SpoolMeta* m, std::string* err) {
  auto bad = [&](const char* what) {
    if (err) *err = std::string("spool meta: ") + what;
    return false;
  };
  if (b.size() > (64u << 20)) return bad("too large");
  // The checksum line covers everything before it.
  const std::string tail = "checksum ";
  size_t cpos = b.rfind("\nchecksum ");
  if (cpos == std::string::npos) return bad("no checksum (truncated?)");
  cpos += 1;
  if (b.size() != cpos + tail.size() + 16 + 1 || b.back() != '\n') return bad("bad checksum line");
  char want[32];
  std::snprintf(want, sizeof want, "%016" PRIx64, fnv1a(b.data(), cpos));
  if (b.compare(cpos + tail.size(), 16, want) != 0) return bad("checksum mismatch (corrupt)");

  Parser p(b);
  std::string v;
  uint64_t u = 0;
  if (!p.kv(kMagic, &v)) return bad("not a spool meta file");
  if (v == "1") m->version = 1;
  else if (v == "2") m->version = 2;
  else return bad("unsupported version");
  if (!p.kv("session", &m->session) || !safe_name(m->session)) return bad("bad session");
  if (!p.u64("segment", &m->segment)) return bad("bad segment");
  if (!p.kv("public", &m->public_name) || !safe_name(m->public_name))
    return bad("bad public name");
  if (!p.u64("page_size", &u) || u < kMinPageSize || u > kMaxPageSize || (u & (u - 1)))
    return bad("bad page_size");
  m->page_size = static_cast<uint32_t>(u);
  if (!p.u64("ncpus", &u) || u == 0 || u > kMaxCpus) return bad("bad ncpus");
  m->ncpus = static_cast<uint32_t>(u);
  m->header_room = m->cpu_region = 0;
  if (m->version >= 2) {
    // Offsets stay below 2^62 (no overflow in any sum below, and far
    // beyond any file system's file size).
    if (!p.u64("header_room", &m->header_room) || m->header_room == 0 ||
        m->header_room % m->page_size || m->header_room > (1ULL << 40))
      return bad("bad header_room");
    // At most what a consumer makes (4 TiB / max_cpus, or a segment).
    if (!p.u64("cpu_region", &m->cpu_region) || m->cpu_region == 0 ||
        m->cpu_region % m->page_size || m->cpu_region > (4ULL << 40))
      return bad("bad cpu_region");
  }
  if (!p.kv("clock", &m->clock) || m->clock.empty() || m->clock.size() > 64)
    return bad("bad clock");
  for (char c : m->clock)
    if (c <= ' ' || c > '~') return bad("bad clock");
  if (!p.u64("tsc2nsec", &u) || u > 1) return bad("bad tsc2nsec");
  m->tsc2nsec = u != 0;
  if (!p.u64("hz", &m->calibration.hz)) return bad("bad hz");
  if (!p.u64("mult", &u) || u > UINT32_MAX) return bad("bad mult");
  m->calibration.mult = static_cast<uint32_t>(u);
  if (!p.u64("shift", &u) || u > 63) return bad("bad shift");
  m->calibration.shift = static_cast<uint32_t>(u);
  if (!p.i64("offset_ns", &m->calibration.offset_ns)) return bad("bad offset_ns");
  if (!p.i64("realtime_offset_ns", &m->calibration.realtime_offset_ns))
    return bad("bad realtime_offset_ns");
  if (m->tsc2nsec && (m->calibration.mult == 0 || m->calibration.hz == 0))
    return bad("tsc2nsec without a calibration");
  uint64_t n = 0;
  if (!p.u64("events", &n) || n > kMaxEvents) return bad("bad event count");
  m->events.clear();
  for (uint64_t i = 0; i < n; i++) {
    EventFormat e;
    if (!p.u64("system", &u) || u == 0 || u > 256 || !p.blob(u, &e.system))
      return bad("bad event system");
    if (!p.u64("format", &u) || u > kMaxFormat || !p.blob(u, &e.format))
      return bad("bad event format");
    m->events.push_back(std::move(e));
  }
  m->final_sizes.clear();
  m->final_data_start = 0;
  if (m->version >= 2) {
    if (!p.u64("final", &n) || (n != 0 && n != m->ncpus)) return bad("bad final count");
    for (uint64_t i = 0; i < n; i++) {
      if (!p.u64("size", &u) || u % m->page_size || u > m->cpu_region) return bad("bad final size");
      m->final_sizes.push_back(u);
    }
    if (!p.u64("data_start", &m->final_data_start) || m->final_data_start % m->page_size ||
        m->final_data_start > m->header_room || (n != 0 && m->final_data_start == 0))
      return bad("bad data_start");
  }
  if (p.pos() != cpos) return bad("trailing data");
  return true;
}

int probe_one_file_layout(const std::string& dir, uint32_t page_size, uint64_t end) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const std::string p = dir + "/.layout-probe";
    fd = open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -errno;
    unlink(p.c_str());
  }
  int rc = 0;
  if (ftruncate(fd, 3 * static_cast<off_t>(page_size)) != 0) {
    rc = -errno;
  } else if (fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, page_size, page_size) != 0) {
    rc = -EOPNOTSUPP;  // EOPNOTSUPP, or EINVAL for a block larger than a page
  } else if (end > static_cast<uint64_t>(INT64_MAX) || ftruncate(fd, static_cast<off_t>(end)) != 0) {
    rc = errno == EINVAL ? -EFBIG : -errno;
  }
  close(fd);
  return rc;
}

void drop_o_direct(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_DIRECT)) (void)fcntl(fd, F_SETFL, fl & ~O_DIRECT);
}

bool SegmentLayout::plan(const std::vector<uint64_t>& sizes, uint64_t data_start,
                         Plan* out) const {
  if (data_start == 0 || data_start > header_room) return false;
  for (uint64_t v : sizes)
    if (v > cpu_region) return false;
  Plan p;
  p.sizes = sizes;
  p.final_offset.assign(sizes.size(), 0);
  // The kept intervals, ascending: [data_start is where they go].
  uint64_t at = data_start;     // where the next CPU's bytes end up
  uint64_t prev_end = data_start;  // end of the previous kept interval (original)
  for (uint32_t c = 0; c < sizes.size(); c++) {
    p.final_offset[c] = at;
    if (sizes[c] == 0) continue;
    if (base(c) > prev_end) p.steps.push_back({prev_end, base(c) - prev_end});
    prev_end = base(c) + sizes[c];
    at += sizes[c];
  }
  if (prev_end == data_start) return false;  // nothing kept
  p.truncate_to = prev_end;
  // Collapsed from the highest: each gap's offset is the same in the file
  // as in the original layout when its turn comes.
  std::reverse(p.steps.begin(), p.steps.end());
  *out = std::move(p);
  return true;
}

uint64_t SegmentLayout::Plan::size_after(size_t done) const {
  uint64_t s = truncate_to;
  for (size_t j = 0; j < done && j < steps.size(); j++) s -= steps[j].len;
  return s;
}

uint64_t SegmentLayout::Plan::offset_after(const SegmentLayout& l, uint32_t cpu,
                                           size_t done) const {
  uint64_t off = l.base(cpu);
  for (size_t j = 0; j < done && j < steps.size(); j++)
    if (steps[j].off < l.base(cpu)) off -= steps[j].len;
  return off;
}

long SegmentLayout::Plan::stage_of_size(uint64_t size) const {
  for (size_t k = 0; k <= steps.size(); k++)
    if (size_after(k) == size) return static_cast<long>(k);
  return -1;
}

bool check_page(const unsigned char* page, uint32_t page_size, uint64_t* events,
                std::vector<int32_t>* tids, uint32_t type_lo, uint32_t type_hi) {
  TracePageHeader ph;
  if (!read_page_header(page, page_size, &ph, nullptr)) return false;  // garbage
  if (ph.length == 0) return false;  // a hole (never written)
  PageWalker w(page + kPageHeaderSize, ph.length, ph.ts);
  PageEvent e;
  uint64_t n = 0;
  while (w.next(&e)) {
    n++;
    if (tids && e.length >= sizeof(CommonHeader)) {
      CommonHeader h;
      std::memcpy(&h, e.data, sizeof h);
      if (h.common_type >= type_lo && h.common_type < type_hi && h.common_pid > 0 &&
          (tids->empty() || tids->back() != h.common_pid))
        tids->push_back(h.common_pid);
    }
  }
  if (w.error()) return false;
  *events += n;
  return true;
}

std::vector<std::pair<int32_t, std::string>> parse_cmdlines(const std::string& text) {
  std::vector<std::pair<int32_t, std::string>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // a torn last line
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp > 10) continue;
    int64_t tid = 0;
    bool ok = true;
    for (size_t i = 0; i < sp; i++) {
      if (line[i] < '0' || line[i] > '9') ok = false;
      else tid = tid * 10 + (line[i] - '0');
    }
    std::string comm = line.substr(sp + 1);
    if (!ok || tid <= 0 || tid > INT32_MAX || comm.empty() || comm.size() > 64) continue;
    out.emplace_back(static_cast<int32_t>(tid), comm);
  }
  return out;
}

int check_output_dir(const std::string& dir, std::string* err) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    const int e = errno;
    *err = dir + ": " + std::strerror(e);
    return -e;
  }
  if (!S_ISDIR(st.st_mode)) {
    *err = dir + ": not a directory";
    return -ENOTDIR;
  }
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    *err = dir + ": owned by uid " + std::to_string(st.st_uid) +
           ", not by this user or root: its owner could replace what is in it (run as that "
           "user, or choose a directory of yours)";
    return -EPERM;
  }
  // Group-writable is accepted for the caller's own group (a user-private
  // group, umask 002); any other group, or everyone, needs the sticky bit.
  const bool others = (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid != getegid());
  if (others && !(st.st_mode & S_ISVTX)) {
    *err = dir + ": writable by others without the sticky bit: anyone could replace what is "
                 "in it (chmod go-w, or +t)";
    return -EPERM;
  }
  return 0;
}

int check_own_dir(const std::string& path, bool create, unsigned mode, std::string* err) {
  if (create && mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    const int e = errno;
    *err = "cannot create " + path + ": " + std::strerror(e);
    return -e;
  }
  const int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    *err = path + ": " +
           (e == ELOOP || e == ENOTDIR ? std::string("a symbolic link or not a directory; refused")
                                       : std::string(std::strerror(e)));
    return -e;
  }
  struct stat st;
  const int rc = fstat(fd, &st);
  close(fd);
  if (rc != 0) {
    *err = path + ": " + std::strerror(errno);
    return -EIO;
  }
  if (st.st_uid != geteuid()) {
    *err = path + ": owned by uid " + std::to_string(st.st_uid) + ", not by us; refused";
    return -EPERM;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    *err = path + ": writable by group or others; refused";
    return -EPERM;
  }
  return 0;
}

int read_small_file(const std::string& path, size_t limit, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // not a fifo, a device...
    close(fd);
    return -EINVAL;
  }
  out->clear();
  char buf[65536];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return -e;
    }
    if (r == 0) break;
    if (out->size() + static_cast<size_t>(r) > limit) {
      close(fd);
      return -EFBIG;
    }
    out->append(buf, static_cast<size_t>(r));
  }
  close(fd);
  return 0;
}

}  // namespace rbtrace::detail
