// recover.cc - recover_spool (`rbtrace recover DIR`): turns the spool of a
// killed consumer into trace.dat files. Uses only what the spool holds; see
// spool.h for the layout and consumer.h for the contract.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
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
#include "spool.h"

namespace rbtrace {

using namespace detail;

namespace {

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

struct CpuData {
  int fd = -1;  // scratch file with the valid pages, back to back
  uint64_t size = 0;
  uint64_t pages = 0;
  uint64_t rejected = 0;
  uint64_t events = 0;
  ~CpuData() {
    if (fd >= 0) close(fd);
  }
};

// Copies the valid pages of one spool file into a scratch file.
int collect_cpu(const std::string& spool_file, const std::string& scratch_dir, uint32_t page_size,
                CpuData* out, std::string* err) {
  // Never through a link, only a regular file of ours: the spool may be
  // anyone's work, and recover may run as root.
  int in = open(spool_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (in < 0) {
    if (errno == ENOENT) return 0;  // this CPU had no page in the segment
    const int e = errno;
    *err = "open " + spool_file + ": " +
           (e == ELOOP ? std::string("a symbolic link; refused") : std::string(std::strerror(e)));
    return -e;
  }
  struct stat st;
  if (fstat(in, &st) != 0) {
    int e = errno;
    close(in);
    *err = "stat " + spool_file + ": " + std::strerror(e);
    return -e;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    close(in);
    *err = spool_file + ": not a regular file of ours; refused";
    return -EPERM;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size % page_size) out->rejected++;  // a torn last page
  std::unique_ptr<unsigned char[]> buf(new unsigned char[page_size]);
  int rc = 0;
  for (uint64_t off = 0; off + page_size <= size; off += page_size) {
    ssize_t r = pread(in, buf.get(), page_size, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) {
      off -= page_size;
      continue;
    }
    if (r != static_cast<ssize_t>(page_size)) {
      out->rejected++;
      continue;
    }
    uint64_t ev = 0;
    if (!check_page(buf.get(), page_size, &ev, nullptr)) {
      out->rejected++;
      continue;
    }
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
  close(in);
  return rc;
}

void remove_segment(const std::string& sdir, uint64_t seq, uint32_t ncpus) {
  unlink((sdir + "/" + segment_file(seq, ".meta")).c_str());
  for (uint32_t c = 0; c < ncpus; c++)
    unlink((sdir + "/" + segment_file(seq, (".cpu" + std::to_string(c)).c_str())).c_str());
}

// One segment. 0, or -errno with *err.
// A public file of ours (a regular file owned by us, not a link): one
// another user planted under the name in a sticky directory is not taken
// for our published segment.
bool published_by_us(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid();
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
  if (published_by_us(dir + "/" + m.public_name)) {
    // Published before the crash; only the clean-up was missing.
    res->messages.push_back(m.public_name + " was already published; spool removed");
    remove_segment(sdir, m.segment, m.ncpus);
    return 0;
  }
  std::vector<CpuData> cpus(m.ncpus);
  TraceDatInput in;
  in.page_size = m.page_size;
  in.clock = m.clock;
  in.tsc2nsec = m.tsc2nsec;
  in.calibration = m.calibration;
  in.events = m.events;
  in.cmdlines = cmdlines;
  in.cpus.resize(m.ncpus);
  uint64_t pages = 0, rejected = 0, events = 0;
  for (uint32_t c = 0; c < m.ncpus; c++) {
    const std::string f = sdir + "/" + segment_file(m.segment, (".cpu" + std::to_string(c)).c_str());
    rc = collect_cpu(f, sdir, m.page_size, &cpus[c], err);
    if (rc) return rc;
    in.cpus[c].fd = cpus[c].fd;
    in.cpus[c].size = cpus[c].size;
    in.cpus[c].stats = "recovered pages: " + std::to_string(cpus[c].pages) +
                       "\nrejected pages: " + std::to_string(cpus[c].rejected) +
                       "\nrecovered events: " + std::to_string(cpus[c].events) + "\n";
    pages += cpus[c].pages;
    rejected += cpus[c].rejected;
    events += cpus[c].events;
  }
  res->pages_rejected += rejected;
  if (pages == 0) {
    res->messages.push_back("segment " + std::to_string(m.segment) + " of " + m.session +
                            " held no complete page (" + std::to_string(rejected) +
                            " rejected); nothing to publish");
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
  if (rejected)
    res->messages.push_back(m.public_name + ": " + std::to_string(rejected) +
                            " incomplete pages skipped (writes cut by the crash)");
  remove_segment(sdir, m.segment, m.ncpus);
  return 0;
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
