// control_internal.h - what the control server and client share (internal
// to rbtrace::snapshot): addressing a socket inside the checked private
// directory, and whole messages over a Unix stream socket, read and written
// in pieces without ever blocking (control_socket.cc), so that a peer that
// trickles, stalls or does not read never holds the other end for longer
// than the deadline the caller keeps.
#pragma once

#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rbtrace/control.h"

namespace rbtrace::control::detail {

using Clock = std::chrono::steady_clock;

// What open_dir_checked found at a directory's path.
struct DirCheck {
  enum Kind { kOk, kMissing, kSymlink, kNotDir, kOwner, kMode, kError };
  Kind kind = kError;
  int err = 0;       // kMissing, kError: the errno
  uid_t uid = 0;     // the owner found (kSymlink: the link's)
  mode_t mode = 0;   // its type and permission bits (st_mode)
  std::string link;  // kSymlink: where it points
  uid_t want = 0;    // the owner required
};

// Opens `dir` (with `create`, mkdir 0700 first) with O_PATH|O_NOFOLLOW, so
// that a symlink as its last component is seen, never followed, and checks
// what it is: a directory owned by `owner` or `alt_owner` (pass `owner`
// twice for one) with no group/other bits. The open O_PATH descriptor, or
// -errno: -ENOENT missing, -EPERM refused (a symlink, another owner, a
// mode open to others), -ENOTDIR, or what open/mkdir said; *c says what
// was found.
int open_dir_checked(const std::string& dir, uid_t owner, uid_t alt_owner, bool create,
                     DirCheck* c);
// What is wrong with a refused or failed directory, to follow its path:
// "is owned by uid 1001", "has mode 0755, which gives access to others
// (0700 required)", "is a symbolic link (made by uid 1001, to /x), which
// is never followed", "does not exist", ...
std::string dir_problem(const DirCheck& c);
// How to fix a refused directory chosen by `source` (null: given
// explicitly). `process`: said to the client about the process it asked
// for (which cannot serve there either), else to the server's user.
std::string dir_fix(const DirCheck& c, const DirSource* source, bool process);

// The address of `name` inside the directory open as `dirfd`, through
// /proc/self/fd: binding and connecting through it cannot be redirected by
// a rename of the directory after it was checked. false (with *err) when
// the path does not fit.
bool socket_address(int dirfd, const std::string& name, sockaddr_un* sa, std::string* err);

// Milliseconds from now until `deadline`, for poll(): rounded up (a poll
// never wakes just before its deadline and spins), 0 once it has passed.
int poll_timeout(Clock::time_point deadline);

// Waits until `fd` has one of `events` (or an error or hang-up, which the
// next read or write reports) or `deadline` passes: 1 ready, 0 timed out.
int wait_for(int fd, short events, Clock::time_point deadline);

// One message arriving in pieces: the 16-byte header, checked with
// parse_header against `max_payload` as soon as it is complete, then the
// payload it announces, and never a byte more (what a peer sends after its
// message stays in the socket). Descriptors that arrive are collected (at
// most `max_fds`; any more, or a truncated control message: -EBADMSG) and
// closed by the destructor unless taken.
class MessageReader {
 public:
  MessageReader(uint32_t max_payload, size_t max_fds) : max_payload_(max_payload), max_fds_(max_fds) {}
  ~MessageReader();
  MessageReader(const MessageReader&) = delete;
  MessageReader& operator=(const MessageReader&) = delete;

  // Reads what has arrived, without blocking (MSG_DONTWAIT). 1: the message
  // is complete; 0: more is to come; < 0: -errno, -EBADMSG (EOF before the
  // end, too many or truncated descriptors) or the header's error, with
  // *why.
  int read_some(int fd, std::string* why);
  bool complete() const { return complete_; }
  bool started() const { return have_ != 0 || header_; }  // a byte has come
  // Header and payload (complete once read_some returned 1).
  const std::vector<uint8_t>& bytes() const { return buf_; }
  // The header's type, once the header parsed (else 0).
  uint16_t type() const { return type_; }
  // The descriptors received so far; the caller closes them.
  std::vector<int> take_fds();

 private:
  uint32_t max_payload_;
  size_t max_fds_;
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(kHeaderSize);  // then the whole message
  size_t have_ = 0;
  bool header_ = false;
  bool complete_ = false;
  uint16_t type_ = 0;
  std::vector<int> fds_;
};

// One message leaving in pieces, `pass_fd` (when >= 0; not owned) attached
// to its first byte with SCM_RIGHTS.
class MessageWriter {
 public:
  MessageWriter(std::vector<uint8_t> bytes, int pass_fd) : buf_(std::move(bytes)), pass_fd_(pass_fd) {}
  // Sends what the socket takes, without blocking (MSG_DONTWAIT, and
  // MSG_NOSIGNAL: a peer that went away is -EPIPE, not SIGPIPE). 1: all
  // sent; 0: the socket is full; -errno.
  int write_some(int fd);
  bool started() const { return off_ > 0; }

 private:
  std::vector<uint8_t> buf_;
  int pass_fd_;
  size_t off_ = 0;
};

// Closes and forgets every descriptor in *fds.
void close_all(std::vector<int>* fds);

}  // namespace rbtrace::control::detail
