// recover.cc - recover_spool (`rbtrace recover DIR`): turns the spool of a
// killed consumer into trace.dat files. Uses only what the spool holds; see
// spool.h for the layout and consumer.h for the contract.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rbtrace/atomic_file.h"
#include "rbtrace/consumer.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_page.h"
#include "rbtrace/tracedat_reader.h"
#include "spool.h"

namespace rbtrace {

using namespace detail;

namespace {

// The pid at the end of a session name ("...-<pid>"), 0 if there is none.
int32_t session_pid(const std::string& session) {
  const size_t dash = session.rfind('-');
  if (dash == std::string::npos || dash + 1 >= session.size() || session.size() - dash > 11) return 0;
  int64_t v = 0;
  for (size_t i = dash + 1; i < session.size(); i++) {
    if (session[i] < '0' || session[i] > '9') return 0;
    v = v * 10 + (session[i] - '0');
  }
  return v > 0 && v <= 0x7fffffff ? static_cast<int32_t>(v) : 0;
}

std::vector<std::string> list_dir(const std::string& path, int* err) {
  std::vector<std::string> v;
  DIR* d = opendir(path.c_str());
  if (!d) {
    *err = errno;
    return v;
  }
  *err = 0;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") v.push_back(n);
  }
  closedir(d);
  std::sort(v.begin(), v.end());
  return v;
}

bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// An unnamed scratch file in `dir` (O_TMPFILE, else created and unlinked).
int scratch_file(const std::string& dir) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  for (int k = 0; k < 100; k++) {
    std::string p = dir + "/.recover-" + std::to_string(getpid()) + "-" + std::to_string(k);
    fd = open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
      unlink(p.c_str());
      return fd;
    }
    if (errno != EEXIST) return -errno;
  }
  return -EEXIST;
}

int write_all_at(int fd, const void* p, size_t n, uint64_t off) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = pwrite(fd, c, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? -errno : -EIO;
    c += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return 0;
}

// Pages named in a segment's messages, at most (then "and N more").
constexpr size_t kCorruptNamed = 5;

struct CpuData {
  int fd = -1;  // scratch file with the valid pages, back to back
  uint64_t size = 0;
  uint64_t pages = 0;
  uint64_t rejected = 0;    // all skipped pages: incomplete + corrupt
  uint64_t incomplete = 0;  // holes (never written), short reads, a torn tail
  uint64_t corrupt = 0;     // failed the reader's page check
  uint64_t events = 0;
  std::vector<std::string> why;  // the first kCorruptNamed corrupt pages: where, what
  ~CpuData() {
    if (fd >= 0) close(fd);
  }
};

// Opens a spool file for reading: never through a link, only a regular
// file of ours (the spool may be anyone's work, and recover may run as
// root). The fd, -ENOENT (no *err) when it does not exist, or -errno with
// *err.
int open_spool_file(const std::string& path, uint64_t* size, std::string* err) {
  const int in = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (in < 0) {
    if (errno == ENOENT) return -ENOENT;
    const int e = errno;
    *err = "open " + path + ": " +
           (e == ELOOP ? std::string("a symbolic link; refused") : std::string(std::strerror(e)));
    return -e;
  }
  struct stat st;
  if (fstat(in, &st) != 0) {
    const int e = errno;
    close(in);
    *err = "stat " + path + ": " + std::strerror(e);
    return -e;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    close(in);
    *err = path + ": not a regular file of ours; refused";
    return -EPERM;
  }
  *size = static_cast<uint64_t>(st.st_size);
  return in;
}

// The data extents of [start, end) in `fd` (SEEK_DATA/SEEK_HOLE; a file
// system without them reports one extent: all data).
std::vector<std::pair<uint64_t, uint64_t>> data_extents(int fd, uint64_t start, uint64_t end) {
  std::vector<std::pair<uint64_t, uint64_t>> v;
  uint64_t pos = start;
  while (pos < end) {
    const off_t d = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno != ENXIO) v.emplace_back(pos, end);  // no SEEK_DATA: all data
      break;
    }
    if (static_cast<uint64_t>(d) >= end) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    const uint64_t he = h < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(h), end);
    v.emplace_back(static_cast<uint64_t>(d), he);
    pos = he;
  }
  return v;
}

// Copies the pages of one CPU, [start, end) of spool file `in`, that pass
// the trace.dat reader's page check (check_trace_page, against the
// segment's event formats) into a scratch file; counts the others: a hole
// (a page that was never written: no data there, or length 0) before the
// last page with data, a short read or a torn tail (end - start not a page
// multiple) as incomplete, a page the check refuses as corrupt (a page a
// crash cut inside, its rest a hole, is among those: its events end in
// zeros).
int collect_cpu(int in, uint64_t start, uint64_t end, const std::string& scratch_dir,
                uint32_t page_size, const TraceEventTable& formats, CpuData* out,
                std::string* err) {
  if (end <= start) return 0;
  if ((end - start) % page_size) {
    out->incomplete++;  // a torn last page
    end -= (end - start) % page_size;
  }
  const auto ext = data_extents(in, start, end);
  if (!ext.empty()) {
    const uint64_t last = ext.back().second;
    end = std::min(end, start + (last - start + page_size - 1) / page_size * page_size);
  } else {
    end = start;  // all holes: nothing was ever written here
  }
  std::unique_ptr<unsigned char[]> buf(new unsigned char[page_size]);
  int rc = 0;
  std::string why;
  size_t e = 0;  // the first extent that may overlap the page
  for (uint64_t off = start; off + page_size <= end; off += page_size) {
    while (e < ext.size() && ext[e].second <= off) e++;
    if (e == ext.size() || ext[e].first >= off + page_size) {
      // Holes (writes the crash cut) up to the page of the next data,
      // counted in one step: a region is mostly hole.
      const uint64_t next =
          e == ext.size() ? end
                          : std::min(end, start + (ext[e].first - start) / page_size * page_size);
      out->incomplete += (next - off) / page_size;
      off = next - page_size;
      continue;
    }
    ssize_t r = pread(in, buf.get(), page_size, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) {
      off -= page_size;
      continue;
    }
    if (r != static_cast<ssize_t>(page_size)) {
      out->incomplete++;
      continue;
    }
    TracePageInfo info;
    if (!check_trace_page(buf.get(), page_size, formats, &info, &why)) {
      out->corrupt++;
      if (out->why.size() < kCorruptNamed)
        out->why.push_back("page " + std::to_string((off - start) / page_size) + " (offset " +
                           std::to_string(off) + "): " + why);
      continue;
    }
    if (info.header.length == 0) {  // a hole: a write the crash cut
      out->incomplete++;
      continue;
    }
    const uint64_t ev = info.records;
    if (out->fd < 0) {
      out->fd = scratch_file(scratch_dir);
      if (out->fd < 0) {
        rc = out->fd;
        out->fd = -1;
        *err = "scratch file in " + scratch_dir + ": " + std::strerror(-rc);
        break;
      }
    }
    rc = write_all_at(out->fd, buf.get(), page_size, out->size);
    if (rc) {
      *err = "writing recovered pages: " + std::string(std::strerror(-rc));
      break;
    }
    out->size += page_size;
    out->pages++;
    out->events += ev;
  }
  out->rejected = out->incomplete + out->corrupt;
  return rc;
}

// Where each CPU's pages are in a version-2 segment file of `size` bytes
// (spool.h): the regions of the layout, or, when the publisher had begun
// to compact it, where the collapses done so far (told by the size) put
// them. Sets ranges[c] = [start, end).
void segment_ranges(const SpoolMeta& m, uint64_t size,
                    std::vector<std::pair<uint64_t, uint64_t>>* ranges) {
  const SegmentLayout l{m.header_room, m.cpu_region};
  ranges->assign(m.ncpus, {0, 0});
  SegmentLayout::Plan plan;
  if (!m.final_sizes.empty() && l.plan(m.final_sizes, m.final_data_start, &plan)) {
    const long stage = plan.stage_of_size(size);
    if (stage >= 0) {
      for (uint32_t c = 0; c < m.ncpus; c++) {
        const uint64_t at = plan.offset_after(l, c, static_cast<size_t>(stage));
        (*ranges)[c] = {at, std::min(size, at + m.final_sizes[c])};
      }
      return;
    }
  }
  for (uint32_t c = 0; c < m.ncpus; c++) {
    const uint64_t at = l.base(c);
    (*ranges)[c] = {at, std::min(size, at + m.cpu_region)};
  }
}

// Reads the trace written in `fd` to its end as `rbtrace report` does
// (every page checked, every record returned): 0, or -EINVAL with *err.
// Every page passed check_trace_page already; this also covers the
// header the writer made from the sidecar.
int read_back(int fd, std::string* err) {
  std::string e;
  auto r = TraceDatReader::open_fd(fd, &e);
  if (!r) {
    *err = "the recovered trace does not open in the reader: " + e;
    return -EINVAL;
  }
  TraceRecord rec;
  int n;
  while ((n = r->next(&rec)) > 0) {
  }
  if (n < 0) {
    *err = "the recovered trace does not read to its end: " + r->error();
    return -EINVAL;
  }
  return 0;
}

void remove_segment(const std::string& sdir, uint64_t seq, uint32_t ncpus) {
  unlink((sdir + "/" + segment_file(seq, ".meta")).c_str());
  unlink((sdir + "/" + segment_file(seq, ".dat")).c_str());
  for (uint32_t c = 0; c < ncpus; c++)  // spool version 1
    unlink((sdir + "/" + segment_file(seq, (".cpu" + std::to_string(c)).c_str())).c_str());
}

// The name of CPU c's pages in messages.
std::string cpu_place(const SpoolMeta& m, uint32_t c) {
  return m.version == 1 ? segment_file(m.segment, (".cpu" + std::to_string(c)).c_str())
                        : segment_file(m.segment, ".dat") + " CPU " + std::to_string(c);
}

// One segment. 0, or -errno with *err.
// A public file of ours (a regular file owned by us, not a link): one
// another user planted under the name in a sticky directory is not taken
// for our published segment.
bool published_by_us(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid();
}

// A segment published in place is its spool file under another name: a
// name taken by someone else made it `name.k` (publisher.cc), which
// published_by_us does not see. True when `name` or a `name.k` is the
// same file as `spool_dat`.
bool linked_in_place(const std::string& dir, const std::string& name,
                     const std::string& spool_dat) {
  struct stat sp;
  if (lstat(spool_dat.c_str(), &sp) != 0 || !S_ISREG(sp.st_mode) || sp.st_nlink < 2) return false;
  for (int k = 0; k < 100; k++) {
    const std::string p = dir + "/" + name + (k ? "." + std::to_string(k) : std::string());
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) {
      if (k > 0) return false;  // names are taken in order: no later one
      continue;
    }
    if (st.st_dev == sp.st_dev && st.st_ino == sp.st_ino) return true;
  }
  return false;
}

int recover_segment(const std::string& dir, const std::string& sdir, const std::string& meta_name,
                    const std::vector<std::pair<int32_t, std::string>>& cmdlines, bool tmp_ok,
                    RecoverResult* res, std::string* err) {
  std::string text;
  int rc = read_small_file(sdir + "/" + meta_name, 64u << 20, &text);
  if (rc) {
    *err = "read " + sdir + "/" + meta_name + ": " + std::strerror(-rc);
    return rc;
  }
  SpoolMeta m;
  if (!decode_meta(text, &m, err)) {
    *err = sdir + "/" + meta_name + ": " + *err;
    return -EINVAL;
  }
  if (segment_file(m.segment, ".meta") != meta_name) {
    *err = sdir + "/" + meta_name + ": segment number does not match the file name";
    return -EINVAL;
  }
  if (published_by_us(dir + "/" + m.public_name) ||
      linked_in_place(dir, m.public_name, sdir + "/" + segment_file(m.segment, ".dat"))) {
    // Published before the crash; only the clean-up was missing.
    res->messages.push_back(m.public_name + " was already published; spool removed");
    remove_segment(sdir, m.segment, m.ncpus);
    return 0;
  }
  // The formats as the reader will parse them from the trace: the pages
  // are checked against them. One the reader would refuse makes the whole
  // trace unreadable: an error, the spool is kept.
  TraceEventTable formats;
  for (size_t i = 0; i < m.events.size(); i++) {
    std::string why;
    if (!formats.add(m.events[i].system, m.events[i].format, &why)) {
      *err = sdir + "/" + meta_name + ": event format " + std::to_string(i) + " (system " +
             m.events[i].system + ") is not one the trace.dat reader reads: " + why;
      return -EINVAL;
    }
  }
  std::vector<CpuData> cpus(m.ncpus);
  TraceDatInput in;
  in.page_size = m.page_size;
  in.clock = m.clock;
  in.tsc2nsec = m.tsc2nsec;
  in.calibration = m.calibration;
  in.events = m.events;
  in.cmdlines = cmdlines;
  // The traced process: the pid that ends the session's name (consumer.cc,
  // session_name), named from cmdlines as its main thread was.
  in.pid = session_pid(m.session);
  for (const auto& [tid, comm] : cmdlines)
    if (tid == in.pid) in.process = comm;
  in.cpus.resize(m.ncpus);
  uint64_t pages = 0, rejected = 0, incomplete = 0, corrupt = 0, events = 0;
  // Version 2: one file, a range per CPU; version 1: a file per CPU.
  int seg_fd = -1;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  if (m.version >= 2) {
    uint64_t size = 0;
    seg_fd = open_spool_file(sdir + "/" + segment_file(m.segment, ".dat"), &size, err);
    if (seg_fd < 0 && seg_fd != -ENOENT) return seg_fd;
    if (seg_fd >= 0) segment_ranges(m, size, &ranges);
    else ranges.assign(m.ncpus, {0, 0});  // no page was ever written
  }
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) close(fd);
    }
  } seg_closer{seg_fd};
  for (uint32_t c = 0; c < m.ncpus; c++) {
    if (m.version >= 2) {
      if (seg_fd >= 0)
        rc = collect_cpu(seg_fd, ranges[c].first, ranges[c].second, sdir, m.page_size, formats,
                         &cpus[c], err);
    } else {
      uint64_t size = 0;
      const int fd = open_spool_file(
          sdir + "/" + segment_file(m.segment, (".cpu" + std::to_string(c)).c_str()), &size, err);
      if (fd < 0 && fd != -ENOENT) return fd;  // missing: the CPU had no page
      if (fd >= 0) {
        rc = collect_cpu(fd, 0, size, sdir, m.page_size, formats, &cpus[c], err);
        close(fd);
      }
    }
    if (rc) return rc;
    in.cpus[c].fd = cpus[c].fd;
    in.cpus[c].size = cpus[c].size;
    in.cpus[c].stats = "recovered pages: " + std::to_string(cpus[c].pages) +
                       "\nrejected pages: " + std::to_string(cpus[c].rejected) +
                       "\ncorrupt pages: " + std::to_string(cpus[c].corrupt) +
                       "\nrecovered events: " + std::to_string(cpus[c].events) + "\n";
    pages += cpus[c].pages;
    rejected += cpus[c].rejected;
    incomplete += cpus[c].incomplete;
    corrupt += cpus[c].corrupt;
    events += cpus[c].events;
  }
  // Counted whether or not the segment is published: these pages are gone.
  res->pages_rejected += rejected;
  res->pages_corrupt += corrupt;
  if (res->corrupt_per_cpu.size() < m.ncpus) res->corrupt_per_cpu.resize(m.ncpus, 0);
  for (uint32_t c = 0; c < m.ncpus; c++) res->corrupt_per_cpu[c] += cpus[c].corrupt;
  const std::string what =
      pages ? m.public_name : "segment " + std::to_string(m.segment) + " of " + m.session;
  if (corrupt) {
    // "N corrupt pages skipped (cpu 0: 2, cpu 3: 1)", then the first few.
    std::string per;
    for (uint32_t c = 0; c < m.ncpus; c++)
      if (cpus[c].corrupt)
        per += (per.empty() ? "" : ", ") + ("cpu " + std::to_string(c)) + ": " +
               std::to_string(cpus[c].corrupt);
    res->messages.push_back(what + ": " + std::to_string(corrupt) +
                            " corrupt pages skipped (" + per +
                            "): they fail the trace.dat reader's page check");
    for (uint32_t c = 0; c < m.ncpus; c++) {
      for (const std::string& w : cpus[c].why) res->messages.push_back("  " + cpu_place(m, c) + " " + w);
      if (cpus[c].corrupt > cpus[c].why.size())
        res->messages.push_back("  " + cpu_place(m, c) + ": and " +
                                std::to_string(cpus[c].corrupt - cpus[c].why.size()) + " more");
    }
  }
  if (pages == 0) {
    res->messages.push_back(what + " held no valid page (" + std::to_string(incomplete) +
                            " incomplete, " + std::to_string(corrupt) +
                            " corrupt); nothing to publish");
    remove_segment(sdir, m.segment, m.ncpus);
    return 0;
  }
  AtomicFile f;  // abandoned unless published
  const std::string priv = dir + "/tmp/" + m.session + "-" + segment_file(m.segment, ".dat");
  // Through tmp/ only when it is ours (checked by the caller): else an
  // unnamed file in DIR (O_TMPFILE), or nothing.
  rc = f.open(dir, priv, tmp_ok ? atomic_how_from_env(AtomicHow::kAuto) : AtomicHow::kTmpFile,
              err);
  if (rc) return rc;
  rc = write_trace_dat(f.fd(), in, err);
  if (rc == 0) rc = read_back(f.fd(), err);  // never publish what the reader stops in
  std::string name = m.public_name;
  if (rc == 0) rc = f.publish(dir + "/" + name, true, err);
  for (int k = 1; rc == -EEXIST && k < 100; k++) {
    if (published_by_us(dir + "/" + m.public_name)) {
      // Someone else recovered it meanwhile.
      remove_segment(sdir, m.segment, m.ncpus);
      return 0;
    }
    // The name is taken by a file not ours: publish beside it.
    name = m.public_name + "." + std::to_string(k);
    rc = f.publish(dir + "/" + name, true, err);
  }
  if (rc) return rc;
  res->published.push_back(dir + "/" + name);
  res->segments++;
  res->pages += pages;
  res->events += events;
  if (incomplete)
    res->messages.push_back(m.public_name + ": " + std::to_string(incomplete) +
                            " incomplete pages skipped (writes cut by the crash)");
  remove_segment(sdir, m.segment, m.ncpus);
  return 0;
}

// ---- `.new-*`: session directories a crash left before their rename ----

// A `.new-*` directory younger than this may be a consumer between its
// mkdir and its flock (consumer.cc, open_session: mkdir, lock created,
// flock, rename; microseconds): left alone whatever its lock says.
constexpr int64_t kStaleNewSeconds = 60;

// The names in the directory `dfd` (not closed), "." and ".." left out;
// false with errno when it cannot be read.
bool names_at(int dfd, std::vector<std::string>* out) {
  const int d2 = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  if (d2 < 0) return false;
  DIR* d = fdopendir(d2);
  if (!d) {
    const int e = errno;
    close(d2);
    errno = e;
    return false;
  }
  rewinddir(d);
  out->clear();
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out->push_back(n);
  }
  closedir(d);
  return true;
}

int64_t age_seconds(const struct stat& st) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) - static_cast<int64_t>(st.st_mtim.tv_sec);
}

// One `spool/.new-<session>` entry (`name`, in the spool directory
// `spool_fd`). Removed only when all of this holds, checked through
// descriptors, never through a link: a real directory (O_NOFOLLOW), owned
// by us and not writable by group or others; not modified for
// kStaleNewSeconds (it nor its lock); holding nothing but `lock` (what a
// consumer puts there before the rename); and that lock, if present, a
// regular file of ours whose flock we take (LOCK_EX|LOCK_NB): a consumer
// holding it is between its lock and its rename, alive. Anything else is
// left alone, and said (a young one silently: a consumer making it).
void clean_new_dir(int spool_fd, const std::string& spool, const std::string& name,
                   RecoverResult* res) {
  const std::string path = spool + "/" + name;
  auto leave = [&](const std::string& why) {
    res->messages.push_back(path + ": " + why + "; left alone");
  };
  const int dfd = openat(spool_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    const int e = errno;
    if (e == ENOENT) return;  // gone meanwhile (the consumer renamed it)
    struct stat lst;
    if ((e == ELOOP || e == ENOTDIR) &&
        fstatat(spool_fd, name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0)
      leave(S_ISLNK(lst.st_mode) ? "a symbolic link (not followed; a consumer never makes one)"
                                 : "not a directory");
    else
      leave(std::string("cannot open: ") + std::strerror(e));
    return;
  }
  struct stat st;
  if (fstat(dfd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
    leave("not a directory of ours (owner, or writable by others)");
    close(dfd);
    return;
  }
  std::vector<std::string> names;
  if (!names_at(dfd, &names)) {
    leave(std::string("cannot list it: ") + std::strerror(errno));
    close(dfd);
    return;
  }
  int lock = -1;
  struct stat lst {};
  bool has_lock = false;
  for (const std::string& n : names) {
    if (n == "lock") {
      has_lock = true;
      continue;
    }
    leave("holds '" + n + "', more than the lock a consumer makes there");
    close(dfd);
    return;
  }
  if (has_lock) {
    lock = openat(dfd, "lock", O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (lock < 0) {
      const int e = errno;
      if (e != ENOENT)
        leave(e == ELOOP ? std::string("its lock is a symbolic link (not followed)")
                         : std::string("cannot open its lock: ") + std::strerror(e));
      close(dfd);
      return;
    }
    if (fstat(lock, &lst) != 0 || !S_ISREG(lst.st_mode) || lst.st_uid != geteuid()) {
      leave("its lock is not a regular file of ours");
      close(lock);
      close(dfd);
      return;
    }
  }
  if (age_seconds(st) < kStaleNewSeconds || (has_lock && age_seconds(lst) < kStaleNewSeconds)) {
    // Maybe a consumer between mkdir and rename: not a word, not a touch.
    if (lock >= 0) close(lock);
    close(dfd);
    return;
  }
  if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0) {
    leave("its lock is held (a consumer is making this session)");
    close(lock);
    close(dfd);
    return;
  }
  // Ours, old, only its lock, and the lock is ours now: remove the lock,
  // then the directory (not a link: AT_REMOVEDIR removes only an empty
  // directory, and this name was a directory when opened above).
  if (has_lock && unlinkat(dfd, "lock", 0) != 0 && errno != ENOENT) {
    leave(std::string("cannot remove its lock: ") + std::strerror(errno));
  } else if (unlinkat(spool_fd, name.c_str(), AT_REMOVEDIR) != 0) {
    leave(std::string("cannot remove it: ") + std::strerror(errno));
  } else {
    res->stale_new_dirs_removed++;
    res->messages.push_back(path + ": a session directory a crash left before its rename (" +
                            (has_lock ? "only its free lock" : "empty") + "); removed");
  }
  if (lock >= 0) close(lock);
  close(dfd);
}

// Every `.new-*` entry of the spool directory, through its descriptor.
void clean_new_dirs(const std::string& spool, RecoverResult* res) {
  const int spool_fd = open(spool.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (spool_fd < 0) return;  // checked by the caller just before: a race, nothing to do
  struct stat st;
  std::vector<std::string> names;
  if (fstat(spool_fd, &st) == 0 && st.st_uid == geteuid() && names_at(spool_fd, &names)) {
    for (const std::string& n : names)
      if (starts_with(n, ".new-")) clean_new_dir(spool_fd, spool, n, res);
  }
  close(spool_fd);
}

}  // namespace

int recover_spool(const std::string& dir, RecoverResult* res, std::string* err) {
  RecoverResult local;
  if (!res) res = &local;
  std::string e2;
  if (!err) err = &e2;
  const std::string spool = dir + "/spool";
  // Only a directory nobody else can change under us (spool.h): recover
  // deletes and publishes what it finds there, as whoever runs it (root).
  std::string why;
  if (int rc = check_output_dir(dir, &why); rc != 0) {
    *err = "recover: " + why;
    return rc;
  }
  if (int rc = check_own_dir(spool, false, 0, &why); rc != 0) {
    if (rc == -ENOENT) return 0;  // nothing was ever spooled here
    *err = "recover: " + why;
    return rc;
  }
  // Session directories a crash left while they were being made.
  clean_new_dirs(spool, res);
  // tmp/ made if missing; a link or a directory not ours is never used.
  const bool tmp_ok = check_own_dir(dir + "/tmp", true, 0700, &why) == 0;
  int lerr = 0;
  std::vector<std::string> sessions = list_dir(spool, &lerr);
  if (lerr == ENOENT) return 0;
  if (lerr) {
    *err = "cannot read " + spool + ": " + std::strerror(lerr);
    return -lerr;
  }
  int first = 0;
  for (const std::string& s : sessions) {
    // ".new-*": a session being made (consumer.cc, open_session); it gets
    // its name only once its lock is held.
    if (!safe_name(s) || s[0] == '.') continue;
    const std::string sdir = spool + "/" + s;
    if (check_own_dir(sdir, false, 0, &why) != 0) {  // a link, or not ours: not touched
      res->messages.push_back("skipped: " + why);
      continue;
    }
    int lock = open((sdir + "/lock").c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (lock < 0 && errno != ENOENT) {
      // Only a missing lock says "dead" (a crash before it was made);
      // a lock we cannot open (a link, EMFILE...) says nothing: not touched.
      res->messages.push_back(s + ": cannot open its lock (" + std::strerror(errno) +
                              "); left alone");
      continue;
    }
    if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0) {
      close(lock);
      res->sessions_live++;
      res->messages.push_back(s + " is still recording; left alone");
      continue;
    }
    res->sessions++;
    std::string cm;
    std::vector<std::pair<int32_t, std::string>> cmdlines;
    if (read_small_file(sdir + "/cmdlines", 64u << 20, &cm) == 0) cmdlines = parse_cmdlines(cm);
    int rc = 0;
    for (const std::string& f : list_dir(sdir, &lerr)) {
      if (!ends_with(f, ".meta")) continue;
      std::string e;
      int r = recover_segment(dir, sdir, f, cmdlines, tmp_ok, res, &e);
      if (r) {
        res->messages.push_back("cannot recover " + sdir + "/" + f + ": " + e);
        if (!rc) rc = r;
        if (!first) {
          first = r;
          *err = e;
        }
      }
    }
    if (rc == 0) {
      // Everything of the session is done: remove what is left (pages of
      // segments whose meta never made it, temporary metas, the lock).
      for (const std::string& f : list_dir(sdir, &lerr)) unlink((sdir + "/" + f).c_str());
      rmdir(sdir.c_str());
      if (tmp_ok)  // tmp/ is ours too (else it is not touched)
        for (const std::string& f : list_dir(dir + "/tmp", &lerr))
          if (starts_with(f, s + "-")) unlink((dir + "/tmp/" + f).c_str());
    }
    if (lock >= 0) close(lock);
  }
  return first;
}

}  // namespace rbtrace
