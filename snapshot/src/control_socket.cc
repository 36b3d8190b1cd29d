// control_socket.cc - whole control messages over a Unix stream socket,
// read and written in pieces without blocking, descriptors attached, for
// the server and the client; socket addresses inside the private
// directory. See control_internal.h.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control::detail {

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

int poll_timeout(Clock::time_point deadline) {
  const auto now = Clock::now();
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

int wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, poll_timeout(deadline));
    if (n > 0) return 1;
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;  // woke a little early (clock granularity)
    }
    if (errno != EINTR) return 1;  // let the read or write report it
  }
}

MessageReader::~MessageReader() { close_all(&fds_); }

std::vector<int> MessageReader::take_fds() {
  std::vector<int> out;
  out.swap(fds_);
  return out;
}

int MessageReader::read_some(int fd, std::string* why) {
  while (!complete_) {
    iovec iov{buf_.data() + have_, buf_.size() - have_};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    const ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      const int e = errno;
      *why = std::string("receive: ") + std::strerror(e);
      return -e;
    }
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      const size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int got;
        std::memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        fds_.push_back(got);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) || fds_.size() > max_fds_) {
      *why = "unexpected or truncated file descriptors";
      return -EBADMSG;
    }
    if (r == 0) {  // EOF before the end of the message
      *why = header_ ? "truncated or unreadable payload" : "truncated or unreadable header";
      return -EBADMSG;
    }
    have_ += static_cast<size_t>(r);
    if (!header_ && have_ == kHeaderSize) {
      uint32_t len = 0;
      if (int rc = parse_header(buf_.data(), kHeaderSize, max_payload_, &type_, &len, why); rc != 0)
        return rc;
      header_ = true;
      buf_.resize(kHeaderSize + len);
    }
    if (header_ && have_ == buf_.size()) complete_ = true;
  }
  return 1;
}

int MessageWriter::write_some(int fd) {
  while (off_ < buf_.size()) {
    iovec iov{buf_.data() + off_, buf_.size() - off_};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
    if (off_ == 0 && pass_fd_ >= 0) {  // with the first byte that goes
      std::memset(cbuf, 0, sizeof cbuf);
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &pass_fd_, sizeof(int));
    }
    const ssize_t n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -errno;
    }
    off_ += static_cast<size_t>(n);
  }
  return 1;
}

void close_all(std::vector<int>* fds) {
  for (int f : *fds) close(f);
  fds->clear();
}

}  // namespace rbtrace::control::detail
