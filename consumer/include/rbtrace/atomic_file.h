// rbtrace/atomic_file.h - files that get their name only once complete,
// with one policy for existing names: never replaced.
//
// AtomicFile::open creates the file without its public name:
//   O_TMPFILE: an unnamed file in the target directory, named by publish()
//     with linkat(fd, "", AT_EMPTY_PATH), or where that is refused (it
//     needs CAP_DAC_READ_SEARCH) linkat("/proc/self/fd/N",
//     AT_SYMLINK_FOLLOW). A crash leaves nothing.
//   a private name <prefix>.<pid>.<n> (O_EXCL), where the file system has
//     no O_TMPFILE or when asked for: named by link(2), then unlinked. A
//     crash leaves at most the private file (the consumer keeps its private
//     files in DIR/tmp/, which `rbtrace recover` cleans up).
// publish() never replaces an existing name: it answers -EEXIST and keeps
// the file, so that the caller can try another name (the consumer: .1,
// .2, ...) or give up (the CLI's -o: "exists (never replaced)").
//
// Users: the consumer's and recovery's trace.dat publication,
// `rbtrace export -o` and `rbtrace snapshot -o`. Thread-safe: AtomicFile
// objects share no state.
#pragma once

#include <cstdint>
#include <string>

namespace rbtrace {

enum class AtomicHow : uint8_t { kAuto, kTmpFile, kPrivate };

// `dflt`, unless $RBTRACE_PUBLISH is "tmpfile" or "private".
AtomicHow atomic_how_from_env(AtomicHow dflt);

class AtomicFile {
 public:
  AtomicFile() = default;
  ~AtomicFile() { abandon(); }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Creates the file, empty and open for reading and writing, to be named
  // in `dir`: unnamed (O_TMPFILE) or, with kPrivate or where the file
  // system has no O_TMPFILE (kAuto), under a private name that starts with
  // `private_prefix` (a path; its directory is created with mode 0700 when
  // it is not `dir`). `mode` is the file's mode as open(2) takes it (the
  // umask applies): 0600 by default, a trace is the owner's to read. 0 or
  // -errno with *err.
  int open(const std::string& dir, const std::string& private_prefix, AtomicHow how,
           std::string* err, unsigned mode = 0600);
  // open() for a file to be named `path`: in its directory, a private name
  // beside it (<path>.<pid>.<n>).
  int open_for(const std::string& path, AtomicHow how, std::string* err, unsigned mode = 0600);
  int fd() const { return fd_; }
  // Names the file `path` (in the directory given to open) and closes it;
  // with `durable`, fsyncs the file before and the directory after. 0;
  // -EEXIST with *err when `path` exists (never replaced; the file is kept:
  // publish it under another name, or abandon it); or -errno with *err.
  int publish(const std::string& path, bool durable, std::string* err);
  // Closes the file and removes its private name, if any. Idempotent.
  void abandon();

  // The same policy before any work is done: -EEXIST with *err when `path`
  // exists (as anything, a dangling symlink too), else 0.
  static int refuse_existing(const std::string& path, std::string* err);

 private:
  int fd_ = -1;
  bool tmpfile_ = false;      // O_TMPFILE (no name yet)
  std::string dir_;           // where the public name goes
  std::string private_path_;  // the private name when !tmpfile_
};

// mkdir -p with `mode` for the directories created. 0 or -errno.
int make_dirs(const std::string& path, unsigned mode);

}  // namespace rbtrace
