// control_client.cc - the client side of the control plane, as the
// `rbtrace` CLI uses it: connect, one request and its reply, the list of
// traced processes. See rbtrace/control.h.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "control_internal.h"
#include "rbtrace/control.h"

namespace rbtrace::control {

using namespace detail;

int connect_to(pid_t pid, const std::string& dir_in, std::string* err) {
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
    } else if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      rc = -errno;
      close(s);
      if (err)
        *err = "cannot connect to process " + std::to_string(pid) + " (" + dir + "/" +
               std::to_string(pid) + ".sock): " + std::strerror(-rc);
    } else {
      rc = s;
    }
  }
  close(dirfd);
  return rc;
}

int call(int sock, const Request& req, int pass_fd, Reply* reply, std::string* err,
         std::chrono::milliseconds timeout) {
  set_timeouts(sock, timeout);
  int rc = send_all(sock, encode_request(req), pass_fd);
  if (rc != 0) {
    if (err) *err = std::string("send: ") + std::strerror(-rc);
    return rc;
  }
  std::vector<int> fds;
  std::vector<uint8_t> buf;
  uint16_t type = 0;
  std::string why;
  rc = recv_message(sock, kMaxReplyPayload, 0, &buf, &fds, &type, &why);
  close_all(&fds);
  if (rc == 0) rc = parse_reply(buf.data(), buf.size(), req.type, reply, &why);
  if (rc != 0 && err) {
    *err = rc == -EAGAIN ? "no reply in time"
                         : "bad reply: " + (why.empty() ? std::string(std::strerror(-rc)) : why);
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
