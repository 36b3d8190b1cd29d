// publish.h - atomic publication of finished files (internal).
//
// A file gets its public name only once it is complete:
//   O_TMPFILE: an unnamed file in DIR, filled, fsync'ed (optional), then
//     named with linkat(fd, "", AT_EMPTY_PATH), or where that is refused
//     linkat("/proc/self/fd/N", AT_SYMLINK_FOLLOW). A crash leaves nothing.
//   private name: DIR/tmp/<private name> (O_EXCL, mode 0600), filled,
//     fsync'ed, link(2)ed to the public name, then unlinked. A crash leaves
//     at most the private file, which `rbtrace recover` cleans up.
// Both refuse to replace an existing public name (-EEXIST, nothing changed).
// Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>

namespace rbtrace::detail {

enum class PublishHow : uint8_t { kAuto, kTmpFile, kPrivate };

// kAuto, unless $RBTRACE_PUBLISH is "tmpfile" or "private".
PublishHow publish_how_from_env(PublishHow dflt);

struct PendingFile {
  int fd = -1;               // read-write, empty at start
  bool tmpfile = false;      // O_TMPFILE (no name yet)
  std::string private_path;  // DIR/tmp/<name> when !tmpfile
};

// Creates the unnamed or privately named file. 0 or -errno with *err.
int begin_file(const std::string& dir, const std::string& private_name, PublishHow how,
               PendingFile* out, std::string* err);
// Optionally fsyncs, then names the file DIR/<public_name> and forgets the
// private name; closes the fd. 0, -EEXIST (public name taken, the pending
// file is kept: call abandon_file), or -errno with *err.
int publish_file(PendingFile* f, const std::string& dir, const std::string& public_name,
                 bool do_fsync, std::string* err);
// Closes the fd and removes the private name, if any.
void abandon_file(PendingFile* f);

// mkdir -p with `mode` for the directories created. 0 or -errno.
int make_dirs(const std::string& path, unsigned mode);

}  // namespace rbtrace::detail
