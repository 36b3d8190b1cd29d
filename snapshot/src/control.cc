// control.cc - the control protocol codec, the private directory, the
// embedded server and the client. See rbtrace/control.h.
#include "rbtrace/control.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "rbtrace/event.h"
#include "rbtrace/snapshot.h"

namespace rbtrace::control {
namespace {

constexpr uint32_t kMaxMessage = 1024;  // reply message text
constexpr uint32_t kStatCpuSize = 8 + 16 * 8;
constexpr uint32_t kSnapCpuSize = 32;

// ---- little helpers: append / bounded cursor -------------------------------
template <class T>
void put(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof v);
  std::memcpy(out->data() + at, &v, sizeof v);
}

struct Cursor {
  const uint8_t* p;
  size_t left;
  template <class T>
  bool get(T* v) {
    if (left < sizeof *v) return false;
    std::memcpy(v, p, sizeof *v);
    p += sizeof *v;
    left -= sizeof *v;
    return true;
  }
  bool bytes(size_t n, std::string* s) {
    if (left < n) return false;
    s->assign(reinterpret_cast<const char*>(p), n);
    p += n;
    left -= n;
    return true;
  }
};

int fail(int code, std::string* why, const char* msg) {
  if (why) *why = msg;
  return code;
}

void put_header(std::vector<uint8_t>* out, MsgType type, uint32_t length) {
  put<uint32_t>(out, kMagic);
  put<uint16_t>(out, kVersion);
  put<uint16_t>(out, static_cast<uint16_t>(type));
  put<uint32_t>(out, length);
  put<uint32_t>(out, 0);
}

void put_stats(std::vector<uint8_t>* out, const CpuStats& s) {
  for (uint64_t v : {s.entries, s.bytes, s.overrun, s.commit_overrun, s.dropped,
                     s.nested_dropped, s.disabled, s.read})
    put<uint64_t>(out, v);
}

bool get_stats(Cursor* c, CpuStats* s) {
  return c->get(&s->entries) && c->get(&s->bytes) && c->get(&s->overrun) &&
         c->get(&s->commit_overrun) && c->get(&s->dropped) && c->get(&s->nested_dropped) &&
         c->get(&s->disabled) && c->get(&s->read);
}

bool valid_event_name(const std::string& s) {
  const size_t colon = s.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  if (s.find(':', colon + 1) != std::string::npos) return false;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == ':' || ch == '*';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

// ===========================================================================
// Codec
// ===========================================================================

int parse_header(const void* buf, size_t len, uint32_t max_payload, uint16_t* type,
                 uint32_t* length, std::string* why) {
  if (len < kHeaderSize) return fail(-EBADMSG, why, "truncated header");
  Cursor c{static_cast<const uint8_t*>(buf), len};
  uint32_t magic = 0, n = 0, flags = 0;
  uint16_t version = 0, t = 0;
  c.get(&magic);
  c.get(&version);
  c.get(&t);
  c.get(&n);
  c.get(&flags);
  if (magic != kMagic) return fail(-EPROTO, why, "bad magic");
  if (version != kVersion) return fail(-EPROTONOSUPPORT, why, "unsupported protocol version");
  if (flags != 0) return fail(-EBADMSG, why, "nonzero flags");
  if (n > max_payload) return fail(-EMSGSIZE, why, "payload over the limit");
  *type = t;
  *length = n;
  return 0;
}

int parse_request(const void* buf, size_t len, Request* out, std::string* why) {
  uint16_t type = 0;
  uint32_t n = 0;
  int rc = parse_header(buf, len, kMaxRequestPayload, &type, &n, why);
  if (rc != 0) return rc;
  if (len - kHeaderSize < n) return fail(-EBADMSG, why, "truncated payload");
  if (len - kHeaderSize > n) return fail(-EBADMSG, why, "trailing bytes");
  Cursor c{static_cast<const uint8_t*>(buf) + kHeaderSize, n};
  Request r;
  switch (static_cast<MsgType>(type)) {
    case MsgType::kStat:
      r.type = MsgType::kStat;
      break;
    case MsgType::kSnapshot: {
      r.type = MsgType::kSnapshot;
      if (!c.get(&r.cpu) || !c.get(&r.timeout_ms)) return fail(-EBADMSG, why, "short snapshot request");
      if (r.cpu < -1 || r.cpu >= static_cast<int32_t>(kMaxCpus))
        return fail(-EBADMSG, why, "bad CPU number");
      if (r.timeout_ms == 0 || r.timeout_ms > 60000) return fail(-EBADMSG, why, "bad timeout");
      break;
    }
    case MsgType::kEvents: {
      r.type = MsgType::kEvents;
      uint8_t enable = 0, pad = 0;
      uint16_t nlen = 0;
      if (!c.get(&enable) || !c.get(&pad) || !c.get(&nlen)) return fail(-EBADMSG, why, "short events request");
      if (enable > 1 || pad != 0) return fail(-EBADMSG, why, "bad events flags");
      if (nlen == 0 || nlen > kMaxEventName) return fail(-EBADMSG, why, "bad event name length");
      if (!c.bytes(nlen, &r.event)) return fail(-EBADMSG, why, "truncated event name");
      if (!valid_event_name(r.event)) return fail(-EBADMSG, why, "bad event name");
      r.enable = enable != 0;
      break;
    }
    default:
      return fail(-EPROTO, why, "unknown request type");
  }
  if (c.left != 0) return fail(-EBADMSG, why, "trailing bytes in payload");
  *out = std::move(r);
  return 0;
}

std::vector<uint8_t> encode_request(const Request& r) {
  std::vector<uint8_t> p;
  switch (r.type) {
    case MsgType::kSnapshot:
      put<int32_t>(&p, r.cpu);
      put<uint32_t>(&p, r.timeout_ms);
      break;
    case MsgType::kEvents:
      put<uint8_t>(&p, r.enable ? 1 : 0);
      put<uint8_t>(&p, 0);
      put<uint16_t>(&p, static_cast<uint16_t>(r.event.size()));
      p.insert(p.end(), r.event.begin(), r.event.end());
      break;
    default:
      break;
  }
  std::vector<uint8_t> out;
  put_header(&out, r.type, static_cast<uint32_t>(p.size()));
  out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<uint8_t> encode_reply(const Reply& r) {
  std::vector<uint8_t> p;
  put<int32_t>(&p, r.status);
  const std::string msg = r.message.substr(0, kMaxMessage);
  put<uint16_t>(&p, static_cast<uint16_t>(msg.size()));
  p.insert(p.end(), msg.begin(), msg.end());
  if (r.status == 0) {
    switch (r.for_type) {
      case MsgType::kStat:
        put<uint32_t>(&p, r.stat.page_size);
        put<uint32_t>(&p, r.stat.pages_per_cpu);
        put<uint32_t>(&p, r.stat.mode);
        put<uint32_t>(&p, static_cast<uint32_t>(r.stat.cpus.size()));
        put<uint64_t>(&p, r.stat.snapshots);
        for (const StatCpu& c : r.stat.cpus) {
          put<int32_t>(&p, c.owner);
          put<uint32_t>(&p, 0);
          put_stats(&p, c.live);
          put_stats(&p, c.total);
        }
        break;
      case MsgType::kSnapshot:
        put<uint64_t>(&p, r.snapshot.total_ns);
        put<uint32_t>(&p, static_cast<uint32_t>(r.snapshot.cpus.size()));
        put<uint32_t>(&p, 0);
        for (const SnapshotReplyCpu& c : r.snapshot.cpus) {
          put<uint32_t>(&p, c.cpu);
          put<int32_t>(&p, c.swap_result);
          put<uint32_t>(&p, c.pages);
          put<uint32_t>(&p, 0);
          put<uint64_t>(&p, c.bytes);
          put<uint64_t>(&p, c.swap_ns);
        }
        break;
      case MsgType::kEvents:
        put<uint32_t>(&p, r.events_changed);
        break;
      default:
        break;
    }
  }
  std::vector<uint8_t> out;
  put_header(&out, MsgType::kReply, static_cast<uint32_t>(p.size()));
  out.insert(out.end(), p.begin(), p.end());
  return out;
}

int parse_reply(const void* buf, size_t len, MsgType for_type, Reply* out, std::string* why) {
  uint16_t type = 0;
  uint32_t n = 0;
  int rc = parse_header(buf, len, kMaxReplyPayload, &type, &n, why);
  if (rc != 0) return rc;
  if (type != static_cast<uint16_t>(MsgType::kReply)) return fail(-EPROTO, why, "not a reply");
  if (len - kHeaderSize < n) return fail(-EBADMSG, why, "truncated payload");
  if (len - kHeaderSize > n) return fail(-EBADMSG, why, "trailing bytes");
  Cursor c{static_cast<const uint8_t*>(buf) + kHeaderSize, n};
  Reply r;
  r.for_type = for_type;
  uint16_t mlen = 0;
  if (!c.get(&r.status) || !c.get(&mlen)) return fail(-EBADMSG, why, "short reply");
  if (r.status > 0 || mlen > kMaxMessage) return fail(-EBADMSG, why, "bad reply status");
  if (!c.bytes(mlen, &r.message)) return fail(-EBADMSG, why, "truncated reply message");
  if (r.status == 0) {
    switch (for_type) {
      case MsgType::kStat: {
        uint32_t ncpus = 0;
        if (!c.get(&r.stat.page_size) || !c.get(&r.stat.pages_per_cpu) || !c.get(&r.stat.mode) ||
            !c.get(&ncpus) || !c.get(&r.stat.snapshots))
          return fail(-EBADMSG, why, "short stat reply");
        if (ncpus > kMaxCpus || c.left != static_cast<size_t>(ncpus) * kStatCpuSize)
          return fail(-EBADMSG, why, "bad stat CPU count");
        r.stat.cpus.resize(ncpus);
        for (StatCpu& sc : r.stat.cpus) {
          uint32_t pad = 0;
          if (!c.get(&sc.owner) || !c.get(&pad) || !get_stats(&c, &sc.live) ||
              !get_stats(&c, &sc.total))
            return fail(-EBADMSG, why, "short stat CPU");
        }
        break;
      }
      case MsgType::kSnapshot: {
        uint32_t ncpus = 0, pad = 0;
        if (!c.get(&r.snapshot.total_ns) || !c.get(&ncpus) || !c.get(&pad))
          return fail(-EBADMSG, why, "short snapshot reply");
        if (ncpus > kMaxCpus || c.left != static_cast<size_t>(ncpus) * kSnapCpuSize)
          return fail(-EBADMSG, why, "bad snapshot CPU count");
        r.snapshot.cpus.resize(ncpus);
        for (SnapshotReplyCpu& sc : r.snapshot.cpus) {
          if (!c.get(&sc.cpu) || !c.get(&sc.swap_result) || !c.get(&sc.pages) || !c.get(&pad) ||
              !c.get(&sc.bytes) || !c.get(&sc.swap_ns))
            return fail(-EBADMSG, why, "short snapshot CPU");
        }
        break;
      }
      case MsgType::kEvents:
        if (!c.get(&r.events_changed)) return fail(-EBADMSG, why, "short events reply");
        break;
      default:
        return fail(-EPROTO, why, "reply to an unknown request type");
    }
  }
  if (c.left != 0) return fail(-EBADMSG, why, "trailing bytes in reply");
  *out = std::move(r);
  return 0;
}

// ===========================================================================
// The private directory
// ===========================================================================

std::string default_dir() {
  if (const char* d = std::getenv("RBTRACE_CONTROL_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/rbtrace";
  return "/tmp/rbtrace-" + std::to_string(geteuid());
}

int open_private_dir(const std::string& dir, bool create, std::string* err) {
  auto bad = [&](int code, const std::string& msg) {
    if (err) *err = dir + ": " + msg;
    return -code;
  };
  if (dir.empty()) return bad(EINVAL, "empty directory name");
  if (create && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return bad(errno, std::string("cannot create: ") + std::strerror(errno));
  // O_NOFOLLOW: a symlink planted in a shared /tmp is refused, not followed.
  const int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return bad(errno, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return bad(e, "cannot stat");
  }
  if (!S_ISDIR(st.st_mode)) {
    close(fd);
    return bad(ENOTDIR, "not a directory");
  }
  if (st.st_uid != geteuid()) {
    close(fd);
    return bad(EPERM, "owned by uid " + std::to_string(st.st_uid) + ", not by us (" +
                          std::to_string(geteuid()) + "): refused");
  }
  if ((st.st_mode & 077) != 0) {
    close(fd);
    char m[8];
    std::snprintf(m, sizeof m, "%03o", st.st_mode & 0777);
    return bad(EPERM, std::string("mode ") + m + " gives access to others (0700 required): refused");
  }
  return fd;
}

namespace {

// A path naming `name` inside the directory open as `dirfd`, through
// /proc/self/fd: binding and connecting through it cannot be redirected by
// a rename of the directory after it was checked.
bool proc_path(int dirfd, const std::string& name, sockaddr_un* sa, std::string* err) {
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

// Reads exactly n bytes into buf. Descriptors that arrive are collected in
// *fds (at most `max_fds`; any more, or a truncated control message, make
// the read fail with -EBADMSG after closing them all). 0, -EBADMSG (EOF
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

void close_all(std::vector<int>* fds) {
  for (int f : *fds) close(f);
  fds->clear();
}

}  // namespace

// ===========================================================================
// Server
// ===========================================================================

struct Server::Impl {
  Snapshot* snap = nullptr;
  ServerOptions opts;
  int dirfd = -1;
  int listen_fd = -1;
  int stop_fd = -1;
  std::string name;
  std::thread thread;
  mutable std::mutex mu;
  ServerCounters counters;

  ~Impl() {
    if (stop_fd >= 0) {
      uint64_t one = 1;
      (void)!write(stop_fd, &one, sizeof one);
    }
    if (thread.joinable()) thread.join();
    if (dirfd >= 0 && !name.empty()) unlinkat(dirfd, name.c_str(), 0);
    if (listen_fd >= 0) close(listen_fd);
    if (stop_fd >= 0) close(stop_fd);
    if (dirfd >= 0) close(dirfd);
  }

  void count(uint64_t ServerCounters::*field) {
    std::lock_guard<std::mutex> g(mu);
    counters.*field += 1;
  }

  void run() {
    for (;;) {
      pollfd p[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents) return;
      if (!(p[0].revents & POLLIN)) continue;
      const int c = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      serve_connection(c);
      close(c);
    }
  }

  void reply_error(int c, MsgType t, int status, const std::string& msg) {
    Reply r;
    r.for_type = t;
    r.status = status;
    r.message = msg;
    (void)send_all(c, encode_reply(r), -1);
  }

  void serve_connection(int c) {
    set_timeouts(c, opts.io_timeout);
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
      count(&ServerCounters::refused);
      reply_error(c, MsgType::kStat, -EACCES, "permission denied: peer uid differs");
      return;
    }
    std::vector<int> fds;
    uint8_t buf[kHeaderSize + kMaxRequestPayload];
    int rc = recv_exact(c, buf, kHeaderSize, &fds, 1);
    uint16_t type = 0;
    uint32_t len = 0;
    std::string why;
    if (rc == 0) rc = parse_header(buf, kHeaderSize, kMaxRequestPayload, &type, &len, &why);
    if (rc == 0) {
      rc = recv_exact(c, buf + kHeaderSize, len, &fds, 1);
      if (rc != 0) why = "truncated or unreadable payload";
    } else if (why.empty()) {
      why = "truncated or unreadable header";
    }
    Request req;
    if (rc == 0) rc = parse_request(buf, kHeaderSize + len, &req, &why);
    if (rc == 0 && req.type != MsgType::kSnapshot && !fds.empty()) {
      rc = -EBADMSG;
      why = "unexpected file descriptor";
    }
    if (rc != 0) {
      close_all(&fds);
      count(&ServerCounters::malformed);
      reply_error(c, static_cast<MsgType>(type), rc, "rejected: " + why);
      return;
    }
    Reply r;
    r.for_type = req.type;
    switch (req.type) {
      case MsgType::kStat:
        fill_stat(&r);
        break;
      case MsgType::kSnapshot:
        do_snapshot(req, fds.empty() ? -1 : fds[0], &r);
        break;
      case MsgType::kEvents:
        do_events(req, &r);
        break;
      default:
        break;
    }
    close_all(&fds);
    count(r.status == 0 ? &ServerCounters::served : &ServerCounters::failed);
    (void)send_all(c, encode_reply(r), -1);
  }

  void fill_stat(Reply* r) {
    const RingBuffer& rb = snap->live();
    r->stat.page_size = rb.page_size();
    r->stat.pages_per_cpu = rb.options().pages_per_cpu;
    r->stat.mode = static_cast<uint32_t>(rb.options().mode);
    r->stat.snapshots = snap->snapshots_taken();
    r->stat.cpus.resize(rb.ncpus());
    for (uint32_t c = 0; c < rb.ncpus(); c++) {
      r->stat.cpus[c].owner = rb.cpu_owner(c);
      r->stat.cpus[c].live = snap->live_stats(c);
      r->stat.cpus[c].total = snap->total_stats(c);
    }
  }

  void do_snapshot(const Request& req, int fd, Reply* r) {
    if (fd < 0) {
      r->status = -EBADF;
      r->message = "snapshot needs the output file's descriptor (SCM_RIGHTS)";
      return;
    }
    struct stat st {};
    const int fl = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || fl < 0 ||
        (fl & O_ACCMODE) == O_RDONLY || st.st_size != 0 || (fl & O_APPEND)) {
      r->status = -EINVAL;
      r->message = "the descriptor must be an empty regular file open for writing";
      return;
    }
    if (req.cpu >= static_cast<int32_t>(snap->live().ncpus())) {
      r->status = -EINVAL;
      r->message = "no CPU " + std::to_string(req.cpu);
      return;
    }
    SnapshotResult res;
    std::string err;
    r->status = snap->take(fd, req.cpu, &err, &res, std::chrono::milliseconds(req.timeout_ms));
    r->message = err;
    r->snapshot.total_ns = static_cast<uint64_t>(res.total_time.count());
    for (const SnapshotCpu& sc : res.cpus) {
      SnapshotReplyCpu o;
      o.cpu = sc.cpu;
      o.swap_result = sc.swap_result;
      o.pages = sc.pages;
      o.bytes = sc.bytes;
      o.swap_ns = static_cast<uint64_t>(sc.swap_time.count());
      r->snapshot.cpus.push_back(o);
    }
  }

  void do_events(const Request& req, Reply* r) {
    const size_t colon = req.event.find(':');
    const std::string sys = req.event.substr(0, colon);
    const std::string ev = req.event.substr(colon + 1);
    uint32_t changed = 0;
    for (const EventType* t : registered_events()) {
      if (sys != t->system) continue;
      if (ev != "*" && ev != t->name) continue;
      if (t->enabled) t->enabled->store(req.enable, std::memory_order_relaxed);  // a flag only
      changed++;
    }
    r->events_changed = changed;
    if (changed == 0) {
      r->status = -ENOENT;
      r->message = "no event " + req.event;
    }
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

ServerCounters Server::counters() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->counters;
}

std::unique_ptr<Server> Server::start(Snapshot& snap, const ServerOptions& opts, Error* err) {
  auto fail_with = [&](int code, const std::string& msg) -> std::unique_ptr<Server> {
    if (err) {
      err->code = code;
      err->message = msg;
    }
    return nullptr;
  };
  auto impl = std::make_unique<Impl>();
  impl->snap = &snap;
  impl->opts = opts;
  const std::string dir = opts.dir.empty() ? default_dir() : opts.dir;
  std::string e;
  impl->dirfd = open_private_dir(dir, true, &e);
  if (impl->dirfd < 0) return fail_with(-impl->dirfd, e);
  impl->name = std::to_string(getpid()) + ".sock";
  sockaddr_un sa;
  if (!proc_path(impl->dirfd, impl->name, &sa, &e)) return fail_with(ENAMETOOLONG, e);
  // A socket left by a dead process with our pid: the directory is ours.
  unlinkat(impl->dirfd, impl->name.c_str(), 0);
  impl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (impl->listen_fd < 0) return fail_with(errno, std::string("socket: ") + std::strerror(errno));
  const std::string path = dir + "/" + impl->name;
  if (bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int code = errno;
    impl->name.clear();
    return fail_with(code, "bind " + path + ": " + std::strerror(code));
  }
  fchmodat(impl->dirfd, impl->name.c_str(), 0600, 0);
  if (listen(impl->listen_fd, 8) != 0)
    return fail_with(errno, std::string("listen: ") + std::strerror(errno));
  impl->stop_fd = eventfd(0, EFD_CLOEXEC);
  if (impl->stop_fd < 0) return fail_with(errno, std::string("eventfd: ") + std::strerror(errno));
  Impl* raw = impl.get();
  // The server thread must not take the application's signals (its tick
  // timers, the doorbell): block them all there.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  raw->thread = std::thread([raw] { raw->run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  std::unique_ptr<Server> s(new Server(std::move(impl)));
  s->path_ = path;
  return s;
}

// ===========================================================================
// Client
// ===========================================================================

int connect_to(pid_t pid, const std::string& dir_in, std::string* err) {
  const std::string dir = dir_in.empty() ? default_dir() : dir_in;
  const int dirfd = open_private_dir(dir, false, err);
  if (dirfd < 0) return dirfd;
  sockaddr_un sa;
  const bool ok = proc_path(dirfd, std::to_string(pid) + ".sock", &sa, err);
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
  std::vector<uint8_t> buf(kHeaderSize);
  rc = recv_exact(sock, buf.data(), kHeaderSize, &fds, 0);
  uint16_t type = 0;
  uint32_t len = 0;
  std::string why;
  if (rc == 0) rc = parse_header(buf.data(), kHeaderSize, kMaxReplyPayload, &type, &len, &why);
  if (rc == 0) {
    buf.resize(kHeaderSize + len);
    rc = recv_exact(sock, buf.data() + kHeaderSize, len, &fds, 0);
  }
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
