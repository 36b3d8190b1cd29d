// control_internal.h - what the control server and client share (internal
// to rbtrace::snapshot): addressing a socket inside the checked private
// directory, and whole messages over a Unix stream socket
// (control_socket.cc).
#pragma once

#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rbtrace::control::detail {

// The address of `name` inside the directory open as `dirfd`, through
// /proc/self/fd: binding and connecting through it cannot be redirected by
// a rename of the directory after it was checked. false (with *err) when
// the path does not fit.
bool socket_address(int dirfd, const std::string& name, sockaddr_un* sa, std::string* err);

// SO_RCVTIMEO and SO_SNDTIMEO.
void set_timeouts(int fd, std::chrono::milliseconds t);

// Sends all of `buf`, with `pass_fd` attached (SCM_RIGHTS) when >= 0.
// 0 or -errno.
int send_all(int fd, const std::vector<uint8_t>& buf, int pass_fd);

// Receives one message: the header, checked with parse_header against
// `max_payload`, then its payload; *buf holds both, *type the header's
// type (once it parsed). Descriptors that arrive are collected in *fds (at
// most `max_fds`; any more, or a truncated control message: -EBADMSG).
// 0, or -errno (-EAGAIN on timeout, -EBADMSG at EOF) with *why.
int recv_message(int fd, uint32_t max_payload, size_t max_fds, std::vector<uint8_t>* buf,
                 std::vector<int>* fds, uint16_t* type, std::string* why);

// Closes and forgets every descriptor in *fds.
void close_all(std::vector<int>* fds);

}  // namespace rbtrace::control::detail
