// atomic_file.cc - AtomicFile: O_TMPFILE + linkat, or a private name +
// link(2) + unlink (the build-id cache pattern); see rbtrace/atomic_file.h.
#include "rbtrace/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace rbtrace {

namespace {

int fail(std::string* err, int e, const std::string& what) {
  if (err) *err = what + ": " + std::strerror(e);
  return -e;
}

int exists(std::string* err, const std::string& path) {
  if (err) *err = path + ": exists (never replaced)";
  return -EEXIST;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// O_TMPFILE is not available: an old kernel (EISDIR: the flag reads as
// O_DIRECTORY) or a file system without it (EOPNOTSUPP, EINVAL).
bool no_tmpfile(int e) { return e == EOPNOTSUPP || e == EISDIR || e == EINVAL; }

// Names the unnamed file `fd` as `path`. 0 or -errno.
int link_unnamed(int fd, const std::string& path) {
  if (linkat(fd, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) == 0) return 0;
  if (errno == EEXIST) return -EEXIST;
  // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for
  // everyone where /proc is mounted.
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) return 0;
  return -errno;
}

// The <n> of private names <prefix>.<pid>.<n>. relaxed: it only has to
// differ between calls, it orders nothing.
std::atomic<uint64_t> g_private_seq{0};

}  // namespace

AtomicHow atomic_how_from_env(AtomicHow dflt) {
  const char* v = std::getenv("RBTRACE_PUBLISH");
  if (v == nullptr) return dflt;
  if (std::strcmp(v, "tmpfile") == 0) return AtomicHow::kTmpFile;
  if (std::strcmp(v, "private") == 0) return AtomicHow::kPrivate;
  return dflt;
}

int AtomicFile::open(const std::string& dir, const std::string& private_prefix, AtomicHow how,
                     std::string* err, unsigned mode) {
  const mode_t m = static_cast<mode_t>(mode & 07777);
  abandon();
  dir_ = dir;
  if (how != AtomicHow::kPrivate) {
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, m);
    if (fd_ >= 0) {
      tmpfile_ = true;
      return 0;
    }
    if (how == AtomicHow::kTmpFile || !no_tmpfile(errno))
      return fail(err, errno, "create a file in " + dir);
  }
  tmpfile_ = false;
  const std::string pdir = dir_of(private_prefix);
  if (pdir != dir && mkdir(pdir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(err, errno, "mkdir " + pdir);
  const std::string stem = private_prefix + "." + std::to_string(getpid()) + ".";
  for (int k = 0; k < 100; k++) {
    const uint64_t n = g_private_seq.fetch_add(1, std::memory_order_relaxed);
    const std::string p = stem + std::to_string(n);
    fd_ = ::open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, m);
    if (fd_ >= 0) {
      private_path_ = p;
      return 0;
    }
    if (errno != EEXIST) return fail(err, errno, "create " + p);
  }
  return fail(err, EEXIST, "create " + stem + "*");
}

int AtomicFile::open_for(const std::string& path, AtomicHow how, std::string* err,
                         unsigned mode) {
  return open(dir_of(path), path, how, err, mode);
}

int AtomicFile::publish(const std::string& path, bool durable, std::string* err) {
  if (fd_ < 0) return fail(err, EBADF, "publish " + path);
  if (durable && fsync(fd_) != 0) return fail(err, errno, "fsync " + path);
  // linkat and link(2) are atomic and fail safely when `path` exists.
  int rc = 0;
  if (tmpfile_) rc = link_unnamed(fd_, path);
  else if (link(private_path_.c_str(), path.c_str()) != 0) rc = -errno;
  if (rc == -EEXIST) return exists(err, path);
  if (rc != 0) return fail(err, -rc, "link " + path);
  if (!tmpfile_) unlink(private_path_.c_str());  // the file has its own name now
  private_path_.clear();
  if (durable) {
    // Make the new name durable too.
    const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  close(fd_);
  fd_ = -1;
  return 0;
}

void AtomicFile::abandon() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (!private_path_.empty()) unlink(private_path_.c_str());
  private_path_.clear();
}

int AtomicFile::refuse_existing(const std::string& path, std::string* err) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 ? exists(err, path) : 0;
}

int make_dirs(const std::string& path, unsigned mode) {
  if (path.empty()) return -EINVAL;
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t next = path.find('/', pos + 1);
    cur = path.substr(0, next);
    pos = next;
    if (cur.empty() || cur == "/") continue;
    if (mkdir(cur.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) return -errno;
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return -errno;
  if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
  return 0;
}

}  // namespace rbtrace
