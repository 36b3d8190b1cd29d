// publish.cc - atomic publication by O_TMPFILE + linkat, or a private name
// + link(2) + unlink (the build-id cache pattern); see publish.h.
#include "publish.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace rbtrace::detail {

namespace {
int fail(std::string* err, int e, const std::string& what) {
  if (err) *err = what + ": " + std::strerror(e);
  return -e;
}
}  // namespace

PublishHow publish_how_from_env(PublishHow dflt) {
  const char* v = std::getenv("RBTRACE_PUBLISH");
  if (v == nullptr) return dflt;
  if (std::strcmp(v, "tmpfile") == 0) return PublishHow::kTmpFile;
  if (std::strcmp(v, "private") == 0) return PublishHow::kPrivate;
  return dflt;
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

int begin_file(const std::string& dir, const std::string& private_name, PublishHow how,
               PendingFile* out, std::string* err) {
  *out = PendingFile{};
  if (how != PublishHow::kPrivate) {
    int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
    if (fd >= 0) {
      out->fd = fd;
      out->tmpfile = true;
      return 0;
    }
    // EOPNOTSUPP/EISDIR/EINVAL: the file system (or kernel) has no O_TMPFILE.
    if (how == PublishHow::kTmpFile) return fail(err, errno, "open(" + dir + ", O_TMPFILE)");
  }
  const std::string tmpdir = dir + "/tmp";
  if (mkdir(tmpdir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(err, errno, "mkdir " + tmpdir);
  out->private_path = tmpdir + "/" + private_name;
  int fd = open(out->private_path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) {
    // A stale private file of ours (same session and segment): ours to
    // replace, nobody else writes under this name.
    unlink(out->private_path.c_str());
    fd = open(out->private_path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
  }
  if (fd < 0) {
    int e = errno;
    std::string p = out->private_path;
    out->private_path.clear();
    return fail(err, e, "create " + p);
  }
  out->fd = fd;
  return 0;
}

int publish_file(PendingFile* f, const std::string& dir, const std::string& public_name,
                 bool do_fsync, std::string* err) {
  const std::string pub = dir + "/" + public_name;
  if (do_fsync && fsync(f->fd) != 0) return fail(err, errno, "fsync " + pub);
  if (f->tmpfile) {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for
    // everyone where /proc is mounted.
    if (linkat(f->fd, "", AT_FDCWD, pub.c_str(), AT_EMPTY_PATH) != 0) {
      if (errno == EEXIST) return -EEXIST;
      const std::string proc = "/proc/self/fd/" + std::to_string(f->fd);
      if (linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, pub.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        if (errno == EEXIST) return -EEXIST;
        return fail(err, errno, "linkat " + pub);
      }
    }
  } else {
    // link(2) is atomic and fails safely when the public name exists.
    if (link(f->private_path.c_str(), pub.c_str()) != 0) {
      if (errno == EEXIST) return -EEXIST;
      return fail(err, errno, "link " + f->private_path + " -> " + pub);
    }
    unlink(f->private_path.c_str());
    f->private_path.clear();
  }
  if (do_fsync) {
    // Make the new name durable too.
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  close(f->fd);
  f->fd = -1;
  return 0;
}

void abandon_file(PendingFile* f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  if (!f->private_path.empty()) unlink(f->private_path.c_str());
  f->private_path.clear();
}

}  // namespace rbtrace::detail
