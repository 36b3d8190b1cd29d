// control_server.cc - the control server embedded in the application: one
// thread, one connection at a time. See rbtrace/control.h.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "control_internal.h"
#include "rbtrace/control.h"
#include "rbtrace/event.h"
#include "rbtrace/library_thread.h"
#include "rbtrace/snapshot.h"

namespace rbtrace::control {

using namespace detail;

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

  pid_t pid = getpid();  // the process whose server this is

  ~Impl() {
    if (getpid() != pid) {
      // A forked child: the server thread, the socket's name and the stop
      // eventfd are the parent's. Writing the eventfd would stop the
      // parent's server and unlinking would take its name: only the
      // child's own descriptors are closed.
      // std::thread cannot be detached here (no such thread: ESRCH) nor
      // destroyed joinable: its handle is moved out and forgotten.
      static auto* forgotten = new std::vector<std::thread*>;  // reachable
      if (thread.joinable()) forgotten->push_back(new std::thread(std::move(thread)));
      for (int fd : {listen_fd, stop_fd, dirfd})
        if (fd >= 0) close(fd);
      return;
    }
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
    std::vector<uint8_t> buf;
    uint16_t type = 0;
    std::string why;
    int rc = recv_message(c, kMaxRequestPayload, 1, &buf, &fds, &type, &why);
    Request req;
    if (rc == 0) rc = parse_request(buf.data(), buf.size(), &req, &why);
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
    r->stat.no_slot_dropped = rb.no_cpu_dropped();
    const uint32_t n = rb.ncpus();  // once: it grows while we run
    r->stat.cpus.resize(n);
    for (uint32_t c = 0; c < n; c++) {
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
      o.owner = sc.trace.owner;  // the thread the swap was asked of
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
  if (!socket_address(impl->dirfd, impl->name, &sa, &e)) return fail_with(ENAMETOOLONG, e);
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
  // timers, the doorbell) nor a CPU slot: a thread of rbtrace's own.
  raw->thread = start_library_thread("rbtrace-control", [raw] { raw->run(); });
  std::unique_ptr<Server> s(new Server(std::move(impl)));
  s->path_ = path;
  return s;
}

}  // namespace rbtrace::control
