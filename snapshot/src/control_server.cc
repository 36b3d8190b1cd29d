// control_server.cc - the control server embedded in the application: one
// thread, a poll loop over the listening socket, the stop eventfd and every
// open connection; requests read and replies written in pieces, without
// blocking, each under its deadline; complete requests executed one at a
// time. See rbtrace/control.h.
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "control_internal.h"
#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/event.h"
#include "rbtrace/library_thread.h"
#include "rbtrace/snapshot.h"

namespace rbtrace::control {

using namespace detail;

namespace {

// fork(): a child must close its copies of the open connections (else a
// client that reads until EOF waits for the child too) and nothing else.
// The list of connections is changed by the server thread (accept, close);
// a fork taken in the middle of a change would leave the child a list that
// does not match its descriptor table (an fd in the list that the child
// does not have, or has as something else). So every change of the list
// (accept4 and recording, close and forgetting: non-blocking system calls
// only) holds g_fork_mu, and a pthread_atfork prepare handler takes it
// around fork: the child's copy of the list is exactly its descriptors.
//
// The child also closes its copies of every live server's listening
// socket, lock, stop eventfd and directory (fork_child): a child that
// never destroys its copy of the Server (a prefork worker, a daemon) would
// otherwise keep the lock held and the socket accepting after the parent
// died; a later process with the parent's pid could not serve, and a
// client of the dead process would wait for its reply timeout instead of
// being refused at once. The registry of live servers changes under
// g_fork_mu too.
std::mutex g_fork_mu;
void fork_child();  // below Server::Impl

void install_fork_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork([] { g_fork_mu.lock(); }, [] { g_fork_mu.unlock(); }, fork_child);
  });
}

// The pseudo file systems a snapshot must not be written to: a descriptor
// of /proc/self/comm or of a /sys or /proc/sys knob passes as an empty
// regular file open for writing. Null: a real file system.
const char* pseudo_fs_name(long type) {
  switch (static_cast<unsigned long>(type)) {
    case PROC_SUPER_MAGIC: return "procfs";
    case SYSFS_MAGIC: return "sysfs";
    case DEBUGFS_MAGIC: return "debugfs";
    case TRACEFS_MAGIC: return "tracefs";
    case SECURITYFS_MAGIC: return "securityfs";
    case CGROUP_SUPER_MAGIC: return "cgroupfs";
    case CGROUP2_SUPER_MAGIC: return "cgroup2";
    case BPF_FS_MAGIC: return "bpffs";
    case PSTOREFS_MAGIC: return "pstore";
    case EFIVARFS_MAGIC: return "efivarfs";
    case SELINUX_MAGIC: return "selinuxfs";
    case SMACK_MAGIC: return "smackfs";
    case BINFMTFS_MAGIC: return "binfmt_misc";
    case 0x62656570: return "configfs";  // CONFIGFS_MAGIC (not in every linux/magic.h)
    case 0x65735543: return "fusectl";   // FUSE_CTL_SUPER_MAGIC
    default: return nullptr;
  }
}

// The consumer's sentence `m` with the directory named as the client knows
// it ("<the output directory>"), not by the descriptor's /proc path `proc`.
std::string output_dir_named(const std::string& m, const std::string& proc) {
  std::string text = m;
  for (size_t at; (at = text.find(proc)) != std::string::npos;)
    text.replace(at, proc.size(), "<the output directory>");
  return text;
}

}  // namespace

struct Server::Impl {
  // One open connection: reading its request until it is complete, then
  // writing its reply; `deadline` is that of the current phase.
  struct Conn {
    int fd = -1;  // -1 once closed (then swept out of `conns`)
    pid_t peer = 0;
    Clock::time_point deadline;
    MessageReader in{kMaxRequestPayload, 1};
    std::unique_ptr<MessageWriter> out;  // the reply, once there is one
  };

  Snapshot* snap = nullptr;
  ServerOptions opts;
  int dirfd = -1;
  int listen_fd = -1;
  int stop_fd = -1;
  int lock_fd = -1;
  std::string name;       // the socket's name in dirfd, once it is ours (bound)
  std::string lock_name;  // the lock file's name in dirfd, once locked
  std::thread thread;
  mutable std::mutex mu;
  ServerCounters counters;
  // Server thread only; the list itself (not the Conns' buffers) changes
  // under g_fork_mu (see install_fork_handlers).
  std::vector<std::unique_ptr<Conn>> conns;
  Clock::time_point accept_paused_until{};  // out of descriptors: accept later

  pid_t pid = getpid();  // the process whose server this is

  // The recording a client started (kRecordStart), server thread only
  // (and ~Impl after the thread ended). `rec_dirfd` is the output
  // directory the client passed; the Consumer reaches it as
  // /proc/self/fd/<rec_dirfd>, so every name it opens is looked up in that
  // directory, never through the path the client gave (which it, or
  // another user, could redirect). It stays open while the consumer's
  // threads may use it: for ever, when a stop timed out (they end when
  // their system calls return; a reused descriptor number would send them
  // elsewhere).
  std::unique_ptr<Consumer> recording;
  int rec_dirfd = -1;
  size_t rec_files_reported = 0;  // published() entries already returned by a flush/stop
  // The consumer's last message: its threads write it (on_message), and
  // may outlive the Impl after a stop that timed out: shared with them.
  struct Note {
    std::mutex mu;
    std::string text;
  };
  std::shared_ptr<Note> rec_note = std::make_shared<Note>();

  // The child's copies of every descriptor of this server (fork_child;
  // g_fork_mu held). Nothing is unlinked, written or unlocked: the names,
  // the eventfd and the lock are the parent's.
  void close_child_copies() {
    for (auto& c : conns) {
      if (c->fd >= 0) close(c->fd);
      c->fd = -1;
    }
    for (int* fd : {&listen_fd, &stop_fd, &lock_fd, &dirfd, &rec_dirfd}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }

  ~Impl() {
    if (getpid() == pid) unregister();
    if (getpid() != pid) {
      // A forked child: the server thread, the socket's name, the lock file
      // and the stop eventfd are the parent's. Writing the eventfd would stop
      // the parent's server, unlinking would take its names, and the lock
      // (flock belongs to the open file, which the parent keeps) is the
      // parent's: only the child's own copies of the descriptors are closed.
      // std::thread cannot be detached here (no such thread: ESRCH) nor
      // destroyed joinable: its handle is moved out and forgotten; so are
      // the connections (a reader's received descriptors may have been in
      // the middle of a change at the fork), once their copies are closed.
      static auto* forgotten = new std::vector<std::thread*>;  // reachable
      static auto* forgotten_conns = new std::vector<std::unique_ptr<Conn>>;  // reachable
      if (thread.joinable()) forgotten->push_back(new std::thread(std::move(thread)));
      for (auto& c : conns) {
        if (c->fd >= 0) close(c->fd);
        forgotten_conns->push_back(std::move(c));
      }
      for (int fd : {listen_fd, stop_fd, lock_fd, dirfd, rec_dirfd})
        if (fd >= 0) close(fd);
      return;  // `recording` is destroyed as a forked child's (consumer.h)
    }
    if (stop_fd >= 0) {
      uint64_t one = 1;
      (void)!write(stop_fd, &one, sizeof one);
    }
    if (thread.joinable()) thread.join();
    for (auto& c : conns) close_conn(c.get());
    // Before the Snapshot (and its ring) can go: the application destroys
    // its Server first. What was recorded is published.
    stop_recording(nullptr);
    // The name goes before the listening socket closes and the lock before
    // it is released: a server starting meanwhile finds the path free, or
    // finds it held (and fails); never our socket with nobody to serve it.
    if (dirfd >= 0 && !name.empty()) unlinkat(dirfd, name.c_str(), 0);
    if (listen_fd >= 0) close(listen_fd);
    if (dirfd >= 0 && !lock_name.empty()) unlinkat(dirfd, lock_name.c_str(), 0);
    if (lock_fd >= 0) close(lock_fd);
    if (stop_fd >= 0) close(stop_fd);
    if (dirfd >= 0) close(dirfd);
  }

  void register_live();
  void unregister();

  void count(uint64_t ServerCounters::*field) {
    std::lock_guard<std::mutex> g(mu);
    counters.*field += 1;
  }

  static Reply error_reply(MsgType t, int status, const std::string& msg) {
    Reply r;
    r.for_type = t;
    r.status = status;
    r.message = msg;
    return r;
  }

  // A short answer to a connection about to be closed: one non-blocking
  // send (the socket is new or idle: it fits), whatever it gives.
  static void answer_once(int fd, const Reply& r) {
    MessageWriter w(encode_reply(r), -1);
    (void)w.write_some(fd);
  }

  void close_conn(Conn* c) {
    if (c->fd < 0) return;
    std::lock_guard<std::mutex> g(g_fork_mu);
    close(c->fd);
    c->fd = -1;
  }

  // Forgets closed connections.
  void sweep() {
    std::lock_guard<std::mutex> g(g_fork_mu);
    conns.erase(std::remove_if(conns.begin(), conns.end(),
                               [](const std::unique_ptr<Conn>& c) { return c->fd < 0; }),
                conns.end());
  }

  void run() {
    std::vector<pollfd> pfds;
    std::vector<Conn*> polled;
    for (;;) {
      pfds.clear();
      polled.clear();
      pfds.push_back({stop_fd, POLLIN, 0});
      const auto now = Clock::now();
      const bool accepting = now >= accept_paused_until;
      pfds.push_back({accepting ? listen_fd : -1, POLLIN, 0});
      Clock::time_point next = accepting ? Clock::time_point::max() : accept_paused_until;
      for (auto& c : conns) {
        pfds.push_back({c->fd, static_cast<short>(c->out ? POLLOUT : POLLIN), 0});
        polled.push_back(c.get());
        next = std::min(next, c->deadline);
      }
      const int timeout = next == Clock::time_point::max() ? -1 : poll_timeout(next);
      if (poll(pfds.data(), pfds.size(), timeout) < 0) {
        if (errno == EINTR || errno == ENOMEM || errno == EAGAIN) continue;
        return;
      }
      if (pfds[0].revents) return;
      // Connections first: what arrived is served before deadlines are
      // enforced (and a request that completed while another was executing
      // is read in expire(), not timed out).
      for (size_t i = 0; i < polled.size(); i++)
        if (pfds[i + 2].revents && polled[i]->fd >= 0) step(polled[i]);
      if (pfds[1].revents & POLLIN) accept_some();
      expire();
      sweep();
    }
  }

  // Accepts what is waiting (a bounded number per round): checks the peer
  // and the caps at once, so a refused connection costs one accept and one
  // close.
  void accept_some() {
    for (int n = 0; n < 256; n++) {
      std::lock_guard<std::mutex> g(g_fork_mu);  // the accept and the list change: see above
      const int c = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Left in the queue: poll would report it at once for ever.
          accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
          return;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // EAGAIN: nothing more waiting
      }
      ucred cred{};
      socklen_t cl = sizeof cred;
      if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
          (cred.uid != geteuid() && cred.uid != 0)) {
        count(&ServerCounters::refused);
        answer_once(c, error_reply(MsgType::kStat, -EACCES, "permission denied: peer uid differs"));
        close(c);
        continue;
      }
      const size_t max_total = std::max<uint32_t>(opts.max_connections, 1);
      const size_t max_peer = std::max<uint32_t>(opts.max_per_peer, 1);
      size_t open = 0, of_peer = 0;
      Conn* idle = nullptr;  // the oldest connection that has sent nothing
      for (auto& k : conns) {
        if (k->fd < 0) continue;
        open++;
        if (k->peer == cred.pid) of_peer++;
        if (!k->out && !k->in.started() && (!idle || k->deadline < idle->deadline)) {
          int pending = 0;  // bytes not read yet count as having sent something
          if (ioctl(k->fd, FIONREAD, &pending) == 0 && pending == 0) idle = k.get();
        }
      }
      if (open >= max_total && of_peer < max_peer && idle) {
        // Full of connections: the oldest one that has sent nothing makes
        // room, so that many processes holding idle connections (each
        // under its own cap) cannot keep every new client out.
        count(&ServerCounters::over_cap);
        answer_once(idle->fd, error_reply(MsgType::kStat, -EBUSY,
                                          "closed to make room: the control server is full and "
                                          "this connection had sent nothing"));
        close(idle->fd);  // g_fork_mu held (the accept's)
        idle->fd = -1;
        open--;
      }
      if (open >= max_total || of_peer >= max_peer) {
        count(&ServerCounters::over_cap);
        const std::string why =
            open >= max_total
                ? "the control server has " + std::to_string(open) +
                      " connections open, its limit: try again later"
                : "process " + std::to_string(cred.pid) + " has " + std::to_string(of_peer) +
                      " connections open, the limit per process: try again later";
        answer_once(c, error_reply(MsgType::kStat, -EBUSY, why));
        close(c);
        continue;
      }
      auto conn = std::make_unique<Conn>();
      conn->fd = c;
      conn->peer = cred.pid;
      conn->deadline = Clock::now() + io_timeout();
      conns.push_back(std::move(conn));
    }
  }

  std::chrono::milliseconds io_timeout() const {
    return std::max(opts.io_timeout, std::chrono::milliseconds(1));
  }

  // Progress on one connection that poll reported.
  void step(Conn* c) {
    if (c->out) {
      flush(c);
      return;
    }
    std::string why;
    const int rc = c->in.read_some(c->fd, &why);
    if (rc == 0) return;
    if (rc < 0) {
      reject(c, rc, why);
      return;
    }
    execute(c);
  }

  // Writes what the socket takes of the reply; closes once it is all sent
  // (or the peer is gone).
  void flush(Conn* c) {
    if (c->out->write_some(c->fd) != 0) close_conn(c);
  }

  void reply(Conn* c, const Reply& r) {
    c->out = std::make_unique<MessageWriter>(encode_reply(r), -1);
    c->deadline = Clock::now() + io_timeout();
    flush(c);  // most replies go at once
  }

  void reject(Conn* c, int rc, const std::string& why) {
    std::vector<int> fds = c->in.take_fds();
    close_all(&fds);
    count(&ServerCounters::malformed);
    reply(c, error_reply(static_cast<MsgType>(c->in.type()), rc, "rejected: " + why));
  }

  // Closes the connections whose deadline passed. A reading one is read
  // once more first: its request may have come while the server was
  // executing another (that time is the server's, not the client's).
  void expire() {
    for (size_t i = 0; i < conns.size(); i++) {
      Conn* c = conns[i].get();
      if (c->fd < 0 || Clock::now() < c->deadline) continue;
      if (!c->out) {
        std::string why;
        const int rc = c->in.read_some(c->fd, &why);
        if (rc == 1) {
          execute(c);
          continue;
        }
        if (rc < 0) {
          reject(c, rc, why);
          continue;
        }
        count(&ServerCounters::timed_out);
        answer_once(c->fd, error_reply(static_cast<MsgType>(c->in.type()), -ETIMEDOUT,
                                       "the request was not complete within " +
                                           std::to_string(io_timeout().count()) + " ms"));
      } else {
        count(&ServerCounters::timed_out);  // the client did not take its reply
      }
      close_conn(c);
    }
  }

  // Runs a complete request and starts its reply.
  void execute(Conn* c) {
    std::vector<int> fds = c->in.take_fds();
    std::string why;
    Request req;
    int rc = parse_request(c->in.bytes().data(), c->in.bytes().size(), &req, &why);
    const bool takes_fd = req.type == MsgType::kSnapshot || req.type == MsgType::kRecordStart;
    if (rc == 0 && !takes_fd && !fds.empty()) {
      rc = -EBADMSG;
      why = "unexpected file descriptor";
    }
    if (rc != 0) {
      close_all(&fds);
      count(&ServerCounters::malformed);
      reply(c, error_reply(static_cast<MsgType>(c->in.type()), rc, "rejected: " + why));
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
      case MsgType::kEventList:
        list_events(req, &r);
        break;
      case MsgType::kRecordStart:
        start_recording(req.record, fds.empty() ? -1 : fds[0], &r);
        break;
      case MsgType::kRecordStop:
        stop_recording(&r);
        break;
      case MsgType::kRecordFlush:
        flush_recording(&r);
        break;
      case MsgType::kRecordStatus:
        fill_record(&r.record, true);
        break;
      case MsgType::kRecordSwitch:
        if (req.on) snap->live().record_on();
        else snap->live().record_off();
        r.message = req.on ? "tracing on" : "tracing off: events are refused until record on";
        fill_record(&r.record, false);
        break;
      default:
        break;
    }
    close_all(&fds);
    count(r.status == 0 ? &ServerCounters::served : &ServerCounters::failed);
    reply(c, r);
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
    // A /proc or /sys file is "regular", empty and may be writable (a
    // thread's comm, a sysctl): the trace would go into the kernel's knob.
    struct statfs fs {};
    if (fstatfs(fd, &fs) != 0) {
      r->status = -errno;
      r->message = std::string("the descriptor's file system: ") + std::strerror(errno);
      return;
    }
    if (const char* pseudo = pseudo_fs_name(static_cast<long>(fs.f_type))) {
      r->status = -EINVAL;
      r->message = std::string("the descriptor is a file on ") + pseudo +
                   ", not on a real file system: refused";
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
    uint32_t changed = 0;
    for (const EventType* t : registered_events()) {
      if (!event_matches(req.event, t->system, t->name)) continue;
      if (t->enabled) t->enabled->store(req.enable, std::memory_order_relaxed);  // a flag only
      changed++;
    }
    r->events_changed = changed;
    if (changed == 0) {
      r->status = -ENOENT;
      r->message = "no event matches " + req.event;
    }
  }

  void list_events(const Request& req, Reply* r) {
    // Within the reply's limit with room for its header: an application
    // with more events than that gets the first ones and `truncated`.
    size_t bytes = 64;
    for (const EventType* t : registered_events()) {
      if (!req.event.empty() && !event_matches(req.event, t->system, t->name)) continue;
      EventState e;
      e.name = std::string(t->system ? t->system : "?") + ":" + (t->name ? t->name : "?");
      e.name.resize(std::min<size_t>(e.name.size(), kMaxEventName));
      e.enabled = !t->enabled || t->enabled->load(std::memory_order_relaxed);  // a flag only
      bytes += 4 + e.name.size();
      if (bytes > kMaxReplyPayload) {
        r->events_truncated = true;
        break;
      }
      r->events.push_back(std::move(e));
    }
    if (r->events.empty() && !req.event.empty()) {
      r->status = -ENOENT;
      r->message = "no event matches " + req.event;
    }
  }

  // ---- the recording (kRecord*) ---------------------------------------------

  // The recording's state; its files: all of them (`all`) or those
  // published since the last flush or stop reported them.
  void fill_record(RecordReply* out, bool all) {
    out->recording_on = snap->live().record_is_on();
    {
      std::lock_guard<std::mutex> g(rec_note->mu);
      out->note = rec_note->text;
    }
    if (!recording) return;
    out->active = true;
    const ConsumerStats st = recording->stats();
    out->pages_published = st.pages_published;
    out->segments_published = st.segments_published;
    out->segments_failed = st.segments_failed;
    for (uint64_t v : st.events_published) out->events_published += v;
    for (uint64_t v : st.events_lost) out->events_lost += v;
    for (uint64_t v : st.pages_lost) out->pages_lost += v;
    const std::vector<std::string> files = recording->published();
    const size_t from = all ? 0 : std::min(rec_files_reported, files.size());
    if (!all) rec_files_reported = files.size();
    // The newest ones, within the reply's limit (half of it: the rest is
    // the message and the counters).
    size_t bytes = 0, first = files.size();
    while (first > from && files.size() - first < kMaxRecordFiles) {
      const size_t slash = files[first - 1].rfind('/');
      bytes += 2 + files[first - 1].size() - (slash == std::string::npos ? 0 : slash + 1);
      if (bytes > kMaxReplyPayload / 2) break;
      first--;
    }
    for (size_t i = first; i < files.size(); i++) {
      const size_t slash = files[i].rfind('/');
      std::string base = slash == std::string::npos ? files[i] : files[i].substr(slash + 1);
      if (base.size() > kMaxFileName) base.resize(kMaxFileName);
      out->files.push_back(std::move(base));
    }
  }

  void start_recording(const RecordOptions& ro, int fd, Reply* r) {
    auto refuse = [&](int status, const std::string& why) {
      r->status = status;
      r->message = why;
    };
    if (!opts.allow_recording)
      return refuse(-EPERM, "this application does not let the control socket record (it "
                            "records with a consumer of its own, or chose not to)");
    if (recording)
      return refuse(-EALREADY, "a recording is already running (rbtrace record stop first)");
    if (fd < 0) return refuse(-EBADF, "record start needs the output directory's descriptor");
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode))
      return refuse(-ENOTDIR, "the descriptor is not a directory");
    // The traces go where the application's user owns the directory and
    // nobody else can replace what is in it: a root client's directory, or
    // another user's, is not written into by this process on its behalf.
    if (st.st_uid != geteuid())
      return refuse(-EPERM, "the output directory is owned by uid " + std::to_string(st.st_uid) +
                                ", not by the traced process's user (uid " +
                                std::to_string(geteuid()) + "): refused");
    if (st.st_mode & (S_IWGRP | S_IWOTH))
      return refuse(-EPERM, "the output directory is writable by group or others: refused");
    struct statfs fs {};
    if (fstatfs(fd, &fs) != 0) return refuse(-errno, std::string("fstatfs: ") + std::strerror(errno));
    if (const char* pseudo = pseudo_fs_name(static_cast<long>(fs.f_type)))
      return refuse(-EINVAL, std::string("the output directory is on ") + pseudo + ": refused");
    // The consumer takes a path: /proc/self/fd/N is one that the kernel
    // resolves to the open directory itself (not by its name), as
    // socket_address does for the control socket.
    if (access("/proc/self/fd", X_OK) != 0)
      return refuse(-ENOENT, "recording needs /proc (the consumer reaches the directory's "
                             "descriptor through /proc/self/fd), which is not mounted here");
    const int mine = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mine < 0) return refuse(-errno, std::string("dup: ") + std::strerror(errno));
    ConsumerOptions co;
    co.dir = "/proc/self/fd/" + std::to_string(mine);
    co.segment_bytes = ro.segment_bytes;
    co.segment_seconds = ro.segment_seconds;
    co.pool_pages = ro.pool_pages;
    co.period_us = ro.period_us;
    co.watermark_pages = ro.watermark_pages;
    co.batch_pages = ro.batch_pages;
    co.file_mode = ro.file_mode;
    co.backend = static_cast<IoBackendKind>(ro.backend);
    co.publish = static_cast<PublishKind>(ro.publish);
    co.fsync = ro.fsync;
    co.direct_io = ro.direct_io;
    co.prefix = ro.prefix;
    co.stop_timeout_ms = static_cast<uint32_t>(
        std::clamp<int64_t>(opts.record_stop_timeout.count(), 0, INT32_MAX));
    // The consumer's sentences go to the client (the last one, in every
    // record reply) instead of the application's stderr.
    rec_note = std::make_shared<Note>();
    co.on_message = [note = rec_note, proc = co.dir](const std::string& m) {
      std::string text = output_dir_named(m, proc);
      std::lock_guard<std::mutex> g(note->mu);
      note->text = std::move(text);
    };
    Error err;
    recording = Consumer::create(snap->live(), co, &err);
    if (!recording) {
      close(mine);
      if (err.code == EBUSY)
        return refuse(-EBUSY, "the application records this ring with a consumer of its own "
                              "(one per ring): refused");
      return refuse(err.code > 0 ? -err.code : -EIO,
                    "cannot start the recording: " + output_dir_named(err.message, co.dir));
    }
    rec_dirfd = mine;
    rec_files_reported = 0;
    r->message = "recording started";
    fill_record(&r->record, true);
  }

  void flush_recording(Reply* r) {
    if (!recording) {
      r->status = -ENOTCONN;
      r->message = "no recording is running (rbtrace record start first)";
      return;
    }
    const size_t reported = rec_files_reported;
    const int rc = recording->flush();
    fill_record(&r->record, false);
    if (rc != 0) {
      // A failed reply carries no file names: the next flush or stop
      // reports the ones this one published.
      rec_files_reported = reported;
      r->status = rc;
      r->message = "flush: " + (r->record.note.empty() ? std::string(std::strerror(-rc))
                                                      : r->record.note);
      return;
    }
    r->message = "flushed";
  }

  // Stops the recording (r null: at the server's end, nothing to answer).
  void stop_recording(Reply* r) {
    if (!recording) {
      if (r) {
        r->status = -ENOTCONN;
        r->message = "no recording is running";
        fill_record(&r->record, false);
      }
      return;
    }
    const int rc = recording->stop();
    if (r) fill_record(&r->record, false);
    recording.reset();
    // A stop that timed out leaves the consumer's threads inside system
    // calls on the directory: its descriptor stays open (see rec_dirfd).
    if (rc != -ETIMEDOUT) close(rec_dirfd);
    rec_dirfd = -1;
    if (!r) return;
    r->record.active = false;
    if (rc != 0) {
      r->status = rc;
      r->message = "the recording stopped with an error: " +
                   (r->record.note.empty() ? std::string(std::strerror(-rc)) : r->record.note);
      return;
    }
    r->message = "recording stopped";
  }

  // One server per socket path. A lock file <pid>.lock beside the socket,
  // flock()ed for the server's life, decides between servers that could
  // claim the same path: two Servers of one process (flock is per open
  // file, so two opens in one process exclude each other too), or two
  // processes with the same pid in different pid namespaces sharing the
  // directory. A probe alone (connect, then unlink and bind if refused) is
  // not enough: two starts can both see "nobody" and the second's unlink
  // takes the first's socket. The lock is race-free, is released by the
  // kernel when a process dies (a crashed server's lock file is stale, not
  // held), and lives in the private directory (0700, ours: nobody else can
  // plant it; opened O_NOFOLLOW|O_NONBLOCK through the directory's
  // descriptor and checked to be a regular file all the same). Once the
  // lock is ours, a socket at the path that still accepts connections is a
  // server that does not take the lock (an older rbtrace, a forked child
  // that kept a dead parent's socket): also refused; one that refuses
  // (ECONNREFUSED: nobody listens) is stale and replaced.
  //
  // The lock file is removed at stop, before it is unlocked; a starter that
  // opened it just before, and locks it just after, holds a lock on a file
  // that is no longer there: it checks that the name still leads to the
  // file it locked, and starts over when not.
  int claim_path(const std::string& path, std::string* err) {
    const std::string lname = std::to_string(pid) + ".lock";
    for (int attempt = 0;; attempt++) {
      const int fd = openat(dirfd, lname.c_str(),
                            O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
      if (fd < 0) {
        const int e = errno;
        *err = "cannot open the lock file " + lname + " beside " + path + ": " + std::strerror(e);
        return -e;
      }
      struct stat st {};
      if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        *err = "the lock file " + lname + " beside " + path + " is not a regular file of ours";
        return -EEXIST;
      }
      if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        const bool unlinked = fstat(fd, &st) == 0 && st.st_nlink == 0;  // its server is stopping
        close(fd);
        if (e == EWOULDBLOCK && unlinked && attempt < 16) continue;
        if (e == EWOULDBLOCK) {
          *err = "a control server already serves " + path +
                 " (another Server in this process, or a process with the same pid in another "
                 "pid namespace sharing the directory: give each its own RBTRACE_CONTROL_DIR)";
          return -EADDRINUSE;
        }
        *err = "cannot lock " + lname + " beside " + path + ": " + std::strerror(e);
        return -e;
      }
      struct stat named {};
      if (fstatat(dirfd, lname.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
          named.st_ino != st.st_ino || named.st_dev != st.st_dev) {
        close(fd);  // locked a file its server removed meanwhile: again
        if (attempt < 16) continue;
        *err = "the lock file " + lname + " beside " + path + " keeps changing";
        return -EAGAIN;
      }
      lock_fd = fd;
      lock_name = lname;
      break;
    }
    const std::string sname = std::to_string(pid) + ".sock";
    sockaddr_un sa;
    if (!socket_address(dirfd, sname, &sa, err)) return -ENAMETOOLONG;
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) {
      const int e = errno;
      *err = std::string("socket: ") + std::strerror(e);
      return -e;
    }
    const int rc = connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    const int e = rc == 0 ? 0 : errno;
    close(probe);
    if (rc == 0 || e == EAGAIN) {  // someone listens (EAGAIN: with a full queue)
      *err = "a control server already serves " + path +
             " (it does not hold the lock file " + lname + ": another rbtrace version?)";
      return -EADDRINUSE;
    }
    // ENOENT: nothing there; ECONNREFUSED: a stale socket (its process
    // died), replaced. Anything else: we cannot tell, and touch nothing.
    if (e == ECONNREFUSED) unlinkat(dirfd, sname.c_str(), 0);
    else if (e != ENOENT) {
      *err = "cannot tell whether a control server serves " + path + ": " + std::strerror(e);
      return -e;
    }
    return 0;
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
  install_fork_handlers();
  auto impl = std::make_unique<Impl>();
  impl->snap = &snap;
  impl->opts = opts;
  const std::string dir = opts.dir.empty() ? default_dir() : opts.dir;
  std::string e;
  impl->dirfd = open_private_dir(dir, true, &e);
  if (impl->dirfd < 0) return fail_with(-impl->dirfd, e);
  const std::string sname = std::to_string(impl->pid) + ".sock";
  const std::string path = dir + "/" + sname;
  sockaddr_un sa;
  if (!socket_address(impl->dirfd, sname, &sa, &e)) return fail_with(ENAMETOOLONG, e);
  // Nothing of another server's is touched (and ~Impl removes only what
  // is ours: `lock_name` once locked, `name` once bound) when this fails.
  if (int rc = impl->claim_path(path, &e); rc != 0) return fail_with(-rc, e);
  impl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (impl->listen_fd < 0) return fail_with(errno, std::string("socket: ") + std::strerror(errno));
  if (bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int code = errno;
    return fail_with(code, "bind " + path + ": " + std::strerror(code));
  }
  impl->name = sname;
  fchmodat(impl->dirfd, impl->name.c_str(), 0600, 0);
  // The kernel's limit (net.core.somaxconn), not 8: a burst of connections
  // waits in the queue instead of making connect() wait or fail.
  if (listen(impl->listen_fd, SOMAXCONN) != 0)
    return fail_with(errno, std::string("listen: ") + std::strerror(errno));
  impl->stop_fd = eventfd(0, EFD_CLOEXEC);
  if (impl->stop_fd < 0) return fail_with(errno, std::string("eventfd: ") + std::strerror(errno));
  Impl* raw = impl.get();
  raw->register_live();
  // The server thread must not take the application's signals (its tick
  // timers, the doorbell) nor a CPU slot: a thread of rbtrace's own.
  raw->thread = start_library_thread("rbtrace-control", [raw] { raw->run(); });
  std::unique_ptr<Server> s(new Server(std::move(impl)));
  s->path_ = path;
  return s;
}

namespace {

// Live servers, as (close their child copies, server): under g_fork_mu.
using ChildClose = void (*)(void*);
auto* g_live_servers = new std::vector<std::pair<ChildClose, void*>>;  // reachable

// The child's side of fork (g_fork_mu held since prepare; one thread).
void fork_child() {
  for (auto& [fn, server] : *g_live_servers) fn(server);
  g_live_servers->clear();
  g_fork_mu.unlock();
}

}  // namespace

void Server::Impl::register_live() {
  std::lock_guard<std::mutex> g(g_fork_mu);
  g_live_servers->emplace_back(
      [](void* p) { static_cast<Impl*>(p)->close_child_copies(); }, this);
}

void Server::Impl::unregister() {
  std::lock_guard<std::mutex> g(g_fork_mu);
  auto& v = *g_live_servers;
  v.erase(std::remove_if(v.begin(), v.end(), [this](const auto& e) { return e.second == this; }),
          v.end());
}

}  // namespace rbtrace::control
