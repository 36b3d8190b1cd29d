// control_dir.cc - the control plane's private directory: where the
// sockets live, and the checks that keep it private. See rbtrace/control.h.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "rbtrace/control.h"

namespace rbtrace::control {

std::string default_dir() {
  if (const char* d = std::getenv("RBTRACE_CONTROL_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/rbtrace";
  return "/tmp/rbtrace-" + std::to_string(geteuid());
}

int open_private_dir(const std::string& dir, bool create, std::string* err) {
  auto bad = [&](int code, const std::string& msg) {
    if (err) *err = dir + ": " + msg;
    return -code;
  };
  if (dir.empty()) return bad(EINVAL, "empty directory name");
  if (create && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return bad(errno, std::string("cannot create: ") + std::strerror(errno));
  // O_NOFOLLOW: a symlink planted in a shared /tmp is refused, not followed.
  const int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return bad(errno, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return bad(e, "cannot stat");
  }
  if (!S_ISDIR(st.st_mode)) {
    close(fd);
    return bad(ENOTDIR, "not a directory");
  }
  if (st.st_uid != geteuid()) {
    close(fd);
    return bad(EPERM, "owned by uid " + std::to_string(st.st_uid) + ", not by us (" +
                          std::to_string(geteuid()) + "): refused");
  }
  if ((st.st_mode & 077) != 0) {
    close(fd);
    char m[8];
    std::snprintf(m, sizeof m, "%03o", st.st_mode & 0777);
    return bad(EPERM, std::string("mode ") + m + " gives access to others (0700 required): refused");
  }
  return fd;
}

}  // namespace rbtrace::control
