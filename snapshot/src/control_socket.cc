// control_socket.cc - whole control messages over a Unix stream socket,
// descriptors attached, for the server and the client; socket addresses
// inside the private directory. See control_internal.h.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control::detail {

namespace {

// Reads exactly n bytes into buf. Descriptors that arrive are collected in
// *fds (at most `max_fds`; any more, or a truncated control message, make
// the read fail with -EBADMSG; the caller closes them). 0, -EBADMSG (EOF
// before n bytes), or -errno (EAGAIN on timeout).
int recv_exact(int fd, uint8_t* buf, size_t n, std::vector<int>* fds, size_t max_fds) {
  size_t off = 0;
  bool bad = false;
  while (off < n) {
    iovec iov{buf + off, n - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    const ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      const size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int got;
        std::memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        fds->push_back(got);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) bad = true;
    if (r == 0) return -EBADMSG;  // EOF: truncated
    off += static_cast<size_t>(r);
  }
  if (bad || fds->size() > max_fds) return -EBADMSG;
  return 0;
}

}  // namespace

bool socket_address(int dirfd, const std::string& name, sockaddr_un* sa, std::string* err) {
  std::memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  const std::string p = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  if (p.size() >= sizeof sa->sun_path) {
    if (err) *err = "socket path too long";
    return false;
  }
  std::memcpy(sa->sun_path, p.c_str(), p.size() + 1);
  return true;
}

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int send_all(int fd, const std::vector<uint8_t>& buf, int pass_fd) {
  size_t off = 0;
  while (off < buf.size()) {
    iovec iov{const_cast<uint8_t*>(buf.data() + off), buf.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
    if (off == 0 && pass_fd >= 0) {
      std::memset(cbuf, 0, sizeof cbuf);
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
    }
    const ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    off += static_cast<size_t>(n);
  }
  return 0;
}

int recv_message(int fd, uint32_t max_payload, size_t max_fds, std::vector<uint8_t>* buf,
                 std::vector<int>* fds, uint16_t* type, std::string* why) {
  buf->assign(kHeaderSize, 0);
  int rc = recv_exact(fd, buf->data(), kHeaderSize, fds, max_fds);
  if (rc != 0) {
    *why = "truncated or unreadable header";
    return rc;
  }
  uint32_t len = 0;
  rc = parse_header(buf->data(), kHeaderSize, max_payload, type, &len, why);
  if (rc != 0) return rc;
  buf->resize(kHeaderSize + len);
  rc = recv_exact(fd, buf->data() + kHeaderSize, len, fds, max_fds);
  if (rc != 0) *why = "truncated or unreadable payload";
  return rc;
}

void close_all(std::vector<int>* fds) {
  for (int f : *fds) close(f);
  fds->clear();
}

}  // namespace rbtrace::control::detail
