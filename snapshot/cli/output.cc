// output.cc - write_output (cli.h): the CLI's -o files (export, snapshot)
// through the AtomicFile the consumer publishes with, so that they share one
// policy: a file is named only once complete, and an existing name is never
// replaced (unless --force, and then only a regular file, once the new one
// is complete). $RBTRACE_PUBLISH=tmpfile|private chooses the path, as for
// the consumer.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"
#include "rbtrace/atomic_file.h"

namespace rbtrace::cli {

namespace {

// What --force may replace: a regular file (lstat: not a symlink's target).
int replaceable(const std::string& out, std::string* err) {
  struct stat st {};
  if (lstat(out.c_str(), &st) != 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISREG(st.st_mode)) {
    *err = out + " exists and is not a regular file: --force replaces only a regular file";
    return -EEXIST;
  }
  return 1;
}

}  // namespace

std::string output_path(const char* o, const std::string& default_name) {
  if (!o) return default_name;
  // Without its trailing slashes: "link/" would make lstat (and open)
  // follow the link.
  std::string path = o;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  struct stat st {};
  // lstat: a symlink named by -o is a name to create (and refused as
  // existing), never a directory to go into.
  if (lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return path + "/" + default_name;
  return path;
}

int write_output(const Args& args, const std::string& out, bool durable,
                 const std::function<int(int fd)>& fill, bool force) {
  std::string err;
  if (force) {
    if (replaceable(out, &err) < 0) return args.fail(err.empty() ? out + ": cannot check" : err);
  } else if (AtomicFile::refuse_existing(out, &err) != 0) {
    return args.fail(err + " (--force replaces it)");
  }
  AtomicFile f;  // abandoned (nothing left behind) unless published
  // 0666 less the umask, as any file a user's command creates (cp, trace-cmd
  // record -o): the CLI runs as the user who names the file.
  if (f.open_for(out, atomic_how_from_env(AtomicHow::kAuto), &err, 0666) != 0)
    return args.fail(err);
  if (const int rc = fill(f.fd())) return rc;
  int rc = f.publish(out, durable, &err);
  if (rc == -EEXIST && force) {
    // The old file is replaced only now that the new one is complete, in
    // one step: the new one is published under a private name beside it,
    // then renamed over it (rename replaces a regular file or a link
    // itself, never what a link points to); the name checked again first
    // (never a directory or a link). A failure leaves the old file.
    if (replaceable(out, &err) < 0) return args.fail(err);
    const std::string tmp = out + ".rbtrace-new-" + std::to_string(getpid());
    err.clear();
    rc = f.publish(tmp, durable, &err);
    if (rc != 0) return args.fail(err);
    if (replaceable(out, &err) < 0 || rename(tmp.c_str(), out.c_str()) != 0) {
      const std::string why = err.empty() ? std::strerror(errno) : err;
      unlink(tmp.c_str());
      return args.fail("cannot replace " + out + ": " + why);
    }
    return 0;
  }
  if (rc != 0) return args.fail(err);
  return 0;
}

}  // namespace rbtrace::cli
