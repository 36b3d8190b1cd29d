// control_client.cc - the client side of the control plane, as the
// `rbtrace` CLI uses it: connect, one request and its reply, the list of
// traced processes. See rbtrace/control.h.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control {

using namespace detail;

std::string socket_path(pid_t pid, const std::string& dir) {
  return (dir.empty() ? default_dir() : dir) + "/" + std::to_string(pid) + ".sock";
}

namespace {

// Why a connect failed, for a person.
std::string connect_failure(int e, std::chrono::milliseconds timeout) {
  switch (e) {
    case ETIMEDOUT:
      return "no room in its control server's queue within " + std::to_string(timeout.count()) +
             " ms (the server is stalled or flooded with connections)";
    case ENOENT:
      return "no control socket (the process does not serve one, or has exited)";
    case ECONNREFUSED:
      return "connection refused (a stale socket: the process has exited or stopped its server)";
    default:
      return std::strerror(e);
  }
}

}  // namespace

int connect_to(pid_t pid, const std::string& dir_in, std::string* err,
               std::chrono::milliseconds timeout) {
  const std::string dir = dir_in.empty() ? default_dir() : dir_in;
  const int dirfd = open_private_dir(dir, false, err);
  if (dirfd < 0) return dirfd;
  sockaddr_un sa;
  const bool ok = socket_address(dirfd, std::to_string(pid) + ".sock", &sa, err);
  int rc = -ENAMETOOLONG;
  if (ok) {
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      rc = -errno;
      if (err) *err = std::string("socket: ") + std::strerror(errno);
    } else {
      // A Unix socket's connect completes at once, or, when the listener's
      // queue is full, waits for room: not for ever. A non-blocking connect
      // would fail with EAGAIN at once and nothing can be polled for, so the
      // wait is a blocking one bounded by SO_SNDTIMEO (which bounds a Unix
      // connect's wait, then EAGAIN), set to what is left of `timeout`.
      const Clock::time_point deadline = Clock::now() + timeout;
      for (;;) {
        const auto left = std::chrono::ceil<std::chrono::microseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
          rc = -ETIMEDOUT;
          break;
        }
        const timeval tv{static_cast<time_t>(left.count() / 1000000),
                         static_cast<suseconds_t>(left.count() % 1000000)};
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
          rc = s;
          break;
        }
        if (errno == EINTR) continue;  // still unconnected: try again with what is left
        rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
        break;
      }
      if (rc == s) {
        const timeval none{0, 0};  // call() never blocks; a caller's own I/O is not bounded by us
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
      } else {
        close(s);
        if (err)
          *err = "cannot connect to process " + std::to_string(pid) + " (" +
                 socket_path(pid, dir) + "): " + connect_failure(-rc, timeout);
      }
    }
  }
  close(dirfd);
  return rc;
}

int call(int sock, const Request& req, int pass_fd, Reply* reply, std::string* err,
         std::chrono::milliseconds timeout) {
  // One deadline for the whole exchange (sending the request, the process
  // serving it, receiving the whole reply), not one per read: a server that
  // trickles cannot hold us for longer than `timeout`.
  const Clock::time_point deadline = Clock::now() + timeout;
  const std::string within = " within " + std::to_string(timeout.count()) + " ms";
  MessageWriter out(encode_request(req), pass_fd);
  int sent = 0;
  while ((sent = out.write_some(sock)) == 0) {
    if (!wait_for(sock, POLLOUT, deadline)) {
      if (err) *err = "the process did not take the request" + within;
      return -ETIMEDOUT;
    }
  }
  // A server that refused the connection at once (too many connections,
  // another uid) answered before it closed: read that answer even when
  // our request could not be sent.
  const bool refused = sent < 0 && (sent == -EPIPE || sent == -ECONNRESET);
  if (sent < 0 && !refused) {
    if (err) *err = std::string("send: ") + std::strerror(-sent);
    return sent;
  }
  MessageReader in(kMaxReplyPayload, 0);
  std::string why;
  int rc;
  while ((rc = in.read_some(sock, &why)) == 0) {
    if (!wait_for(sock, POLLIN, deadline)) {
      if (err) *err = "no complete reply" + within;
      return -ETIMEDOUT;
    }
  }
  if (rc == 1) rc = parse_reply(in.bytes().data(), in.bytes().size(), req.type, reply, &why);
  if (rc != 0) {
    if (refused) {
      if (err) *err = std::string("send: ") + std::strerror(-sent);
      return sent;
    }
    if (err) *err = "bad reply: " + (why.empty() ? std::string(std::strerror(-rc)) : why);
  }
  return rc;
}

std::vector<pid_t> list_processes(const std::string& dir_in) {
  std::vector<pid_t> out;
  const std::string dir = dir_in.empty() ? default_dir() : dir_in;
  std::string err;
  const int dirfd = open_private_dir(dir, false, &err);
  if (dirfd < 0) return out;
  const int rfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  close(dirfd);
  if (rfd < 0) return out;
  DIR* d = fdopendir(rfd);
  if (!d) {
    close(rfd);
    return out;
  }
  while (dirent* de = readdir(d)) {
    const std::string n = de->d_name;
    if (n.size() < 6 || n.compare(n.size() - 5, 5, ".sock") != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(n.c_str(), &end, 10);
    if (end != n.c_str() + n.size() - 5 || pid <= 0) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace rbtrace::control
