// control_internal.h - what the control server and client share (internal
// to rbtrace::snapshot): addressing a socket inside the checked private
// directory, and whole messages over a Unix stream socket, read and written
// in pieces without ever blocking (control_socket.cc), so that a peer that
// trickles, stalls or does not read never holds the other end for longer
// than the deadline the caller keeps.
#pragma once

#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rbtrace/control.h"

namespace rbtrace::control::detail {

using Clock = std::chrono::steady_clock;

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
