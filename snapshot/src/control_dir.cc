// control_dir.cc - the control plane's private directory: where the
// sockets live (choose_dir, the one rule the server and the client share),
// and the checks that keep it private, with errors that say what was found
// and how to fix it. See rbtrace/control.h.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control {

using namespace detail;

namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string octal(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
  return b;
}

std::string uid_text(uid_t u) { return "uid " + std::to_string(u); }

// What kind of file a stat says it is (for "is not a directory (...)").
const char* file_kind(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a directory";
}

}  // namespace

DirChoice choose_dir(const std::string& control_dir, const std::string& runtime_dir, uid_t uid,
                     const DirBases& bases) {
  if (!control_dir.empty()) return {control_dir, DirSource::kControlDirEnv};
  if (!runtime_dir.empty()) return {runtime_dir + "/rbtrace", DirSource::kRuntimeDirEnv};
  // systemd-logind makes /run/user/<uid> (0700, the user's) at the first
  // login and no other user can make it first (/run/user is root's): the
  // same place XDG_RUNTIME_DIR names in a login session, for a process
  // started without it (a service, cron, sudo -u). Only when it is exactly
  // that: a directory (not a symlink) of this uid's, private.
  const std::string run = bases.run_user + "/" + std::to_string(uid);
  const int fd = open(run.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st {};
    const bool ok = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid &&
                    (st.st_mode & 0777) == 0700;
    close(fd);
    if (ok) return {run + "/rbtrace", DirSource::kRunUser};
  }
  return {bases.tmp + "/rbtrace-" + std::to_string(uid), DirSource::kTmp};
}

std::string default_dir() {
  return choose_dir(env_or_empty("RBTRACE_CONTROL_DIR"), env_or_empty("XDG_RUNTIME_DIR"), geteuid())
      .dir;
}

namespace detail {

int open_dir_checked(const std::string& dir_in, uid_t owner, uid_t alt_owner, bool create,
                     DirCheck* c) {
  *c = DirCheck{};
  c->want = owner;
  // A trailing slash would make the kernel follow a symlink in the last
  // component despite O_NOFOLLOW ("link/" is the directory it points to).
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  auto failed = [&](DirCheck::Kind k, int e) {
    c->kind = k;
    c->err = e;
    return -e;
  };
  if (dir.empty()) return failed(DirCheck::kError, EINVAL);
  if (create && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return failed(errno == ENOENT ? DirCheck::kMissing : DirCheck::kError, errno);
  // O_PATH|O_NOFOLLOW without O_DIRECTORY: a symlink opens as itself (with
  // O_DIRECTORY it would be a bare ENOTDIR), so we can say what it is.
  const int fd = open(dir.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return failed(errno == ENOENT ? DirCheck::kMissing : DirCheck::kError, errno);
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return failed(DirCheck::kError, e);
  }
  c->uid = st.st_uid;
  c->mode = st.st_mode;
  int rc = fd;
  if (S_ISLNK(st.st_mode)) {
    char buf[4096];
    const ssize_t n = readlinkat(fd, "", buf, sizeof buf - 1);
    if (n >= 0) c->link.assign(buf, static_cast<size_t>(n));
    c->kind = DirCheck::kSymlink;
    rc = -EPERM;
  } else if (!S_ISDIR(st.st_mode)) {
    c->kind = DirCheck::kNotDir;
    rc = -ENOTDIR;
  } else if (st.st_uid != owner && st.st_uid != alt_owner) {
    c->kind = DirCheck::kOwner;
    rc = -EPERM;
  } else if ((st.st_mode & 077) != 0) {
    c->kind = DirCheck::kMode;
    rc = -EPERM;
  } else {
    c->kind = DirCheck::kOk;
  }
  if (rc < 0) {
    c->err = -rc;
    close(fd);
  }
  return rc;
}

std::string dir_problem(const DirCheck& c) {
  switch (c.kind) {
    case DirCheck::kOk:
      return "is fine";
    case DirCheck::kMissing:
      return "does not exist";
    case DirCheck::kSymlink:
      return "is a symbolic link (made by " + uid_text(c.uid) +
             (c.link.empty() ? std::string() : ", to " + c.link) + "), which is never followed";
    case DirCheck::kNotDir:
      return std::string("is not a directory (") + file_kind(c.mode) + ", owned by " +
             uid_text(c.uid) + ")";
    case DirCheck::kOwner:
      return "is owned by " + uid_text(c.uid);
    case DirCheck::kMode:
      return "has mode " + octal(c.mode) + ", which gives access to others (0700 required)";
    case DirCheck::kError:
      break;
  }
  return std::string("cannot be used: ") + std::strerror(c.err);
}

std::string dir_fix(const DirCheck& c, const DirSource* source, bool process) {
  if (c.kind == DirCheck::kOk || c.kind == DirCheck::kMissing || c.kind == DirCheck::kError)
    return "";
  std::string action;
  if (c.kind == DirCheck::kMode && c.uid == c.want)
    action = "make it private (chmod 700) or remove it";
  else if (c.uid != c.want)
    action = "remove it (another user made it: root can)";
  else
    action = "remove it";
  const std::string whose =
      process ? "a private directory its user owns" : "a private directory you own";
  std::string origin, vars;
  if (!source) {
    origin = "It was given explicitly";
  } else {
    switch (*source) {
      case DirSource::kControlDirEnv:
        origin = process ? "It is the process's RBTRACE_CONTROL_DIR" : "It is $RBTRACE_CONTROL_DIR";
        vars = "RBTRACE_CONTROL_DIR";
        break;
      case DirSource::kRuntimeDirEnv:
        origin = process ? "It is in the process's XDG_RUNTIME_DIR" : "It is in $XDG_RUNTIME_DIR";
        vars = "RBTRACE_CONTROL_DIR (or XDG_RUNTIME_DIR)";
        break;
      case DirSource::kRunUser:
      case DirSource::kTmp:
        origin = process ? "It is the default control directory (the process has neither "
                           "RBTRACE_CONTROL_DIR nor XDG_RUNTIME_DIR)"
                         : "It is the default control directory (RBTRACE_CONTROL_DIR and "
                           "XDG_RUNTIME_DIR are unset)";
        vars = "RBTRACE_CONTROL_DIR or XDG_RUNTIME_DIR";
        break;
    }
  }
  std::string alternative;
  if (vars.empty())
    alternative = process ? "or give the process's own directory" : "or use another directory";
  else if (process)
    alternative = "or start the process with " + vars + " set to " + whose;
  else
    alternative = "or set " + vars + " to " + whose;
  return origin + (process ? ", where it cannot serve either: " : ": ") + action + ", " +
         alternative + ".";
}

}  // namespace detail

int open_private_dir(const std::string& dir, bool create, std::string* err) {
  DirCheck c;
  const int fd = open_dir_checked(dir, geteuid(), geteuid(), create, &c);
  if (fd >= 0 || !err) return fd;
  // Was it our default (or environment's) choice? Then the fix names it.
  const DirChoice ours =
      choose_dir(env_or_empty("RBTRACE_CONTROL_DIR"), env_or_empty("XDG_RUNTIME_DIR"), geteuid());
  const DirSource* source = ours.dir == dir ? &ours.source : nullptr;
  switch (c.kind) {
    case DirCheck::kMissing:
      *err = dir + (create ? ": cannot create: " : ": cannot open: ") + std::strerror(c.err);
      break;
    case DirCheck::kError:
      *err =
          dir + (create ? ": cannot create or open: " : ": cannot open: ") + std::strerror(c.err);
      break;
    case DirCheck::kOwner:
      *err = dir + " " + dir_problem(c) + ", not by us (" + uid_text(geteuid()) + "): refused. " +
             dir_fix(c, source, false);
      break;
    default:
      *err = dir + " " + dir_problem(c) + ": refused. " + dir_fix(c, source, false);
      break;
  }
  return fd;
}

}  // namespace rbtrace::control
