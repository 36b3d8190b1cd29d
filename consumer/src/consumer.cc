// consumer.cc - the consumer: a drain thread (read_page -> io_uring/pwritev
// -> spool files; drainer.cc) and a publish thread (segment -> trace.dat ->
// atomic publish; publisher.cc). This file: create in steps, flush, stop.
// See consumer.h, consumer_impl.h and docs/DESIGN.md, "Consumer".
//
// Threads and what they own: consumer_impl.h. mu is never held across I/O
// or across read_page.
#include "rbtrace/consumer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>
#include <cstring>

#include "consumer_impl.h"
#include "rbtrace/event.h"
#include "rbtrace/library_thread.h"
#include "spool.h"

namespace rbtrace {

namespace detail {

uint64_t thread_cpu_ns() {
  rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
  return (static_cast<uint64_t>(ru.ru_utime.tv_sec) + static_cast<uint64_t>(ru.ru_stime.tv_sec)) *
             1000000000ull +
         (static_cast<uint64_t>(ru.ru_utime.tv_usec) + static_cast<uint64_t>(ru.ru_stime.tv_usec)) *
             1000ull;
}

int set_error(Error* err, int code, std::string msg) {
  if (err) {
    err->code = code;
    err->message = std::move(msg);
  }
  return code;
}

void ConsumerContext::message(const std::string& m) const {
  // After stop() gave up, the application may have destroyed what its
  // callback uses: the threads still running say it on stderr.
  std::lock_guard<std::mutex> g(msg_mu);
  if (opts.on_message && !msg_off) opts.on_message(m);
  else std::fprintf(stderr, "%s\n", m.c_str());
}

std::string ConsumerContext::seg_path(uint64_t seq, const char* suffix) const {
  return spool + "/" + segment_file(seq, suffix);
}

int ConsumerContext::write_meta(const SpoolMeta& m, uint64_t seq, std::string* what,
                                bool durable) const {
  const std::string text = encode_meta(m);
  const std::string tmp = seg_path(seq, ".meta.tmp");
  const int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    *what = "create " + tmp;
    return -errno;
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t r = write(fd, text.data() + done, text.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = r < 0 ? errno : EIO;
      close(fd);
      unlink(tmp.c_str());
      *what = "write " + tmp;
      return -e;
    }
    done += static_cast<size_t>(r);
  }
  if (durable && fsync(fd) != 0) {
    const int e = errno;
    close(fd);
    unlink(tmp.c_str());
    *what = "fsync " + tmp;
    return -e;
  }
  close(fd);
  if (rename(tmp.c_str(), seg_path(seq, ".meta").c_str()) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    *what = "rename " + tmp;
    return -e;
  }
  if (durable) {
    const int dfd = open(spool.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  return 0;
}

}  // namespace detail

using namespace detail;

// ===========================================================================
// fork: a child must not keep a session's lock alive
// ===========================================================================
//
// flock belongs to the open file, which a fork shares: a child that never
// destroys its copy of the Consumer (a prefork server's worker, a daemon)
// would keep the session locked after the parent died, and recover would
// take it for live for as long as the child runs. The atfork child handler
// closes the child's copies of every live consumer's lock and cmdlines
// descriptors (the parent's lock stays: it keeps its own descriptor).
namespace {

std::mutex g_live_mu;  // held across fork (prepare); constant-initialized
// Made on first use, not by a dynamic initializer: a Consumer may be made
// before this file's initializers ran (rbtrace::autostart's, from a
// constructor of another object file). Reachable, never freed.
std::vector<Consumer::Impl*>& live_list() {
  static auto* v = new std::vector<Consumer::Impl*>;
  return *v;
}

void live_prepare() { g_live_mu.lock(); }
void live_parent() { g_live_mu.unlock(); }
void live_child() {
  for (Consumer::Impl* i : live_list()) {
    if (i->lock_fd >= 0) close(i->lock_fd);
    if (i->drain.cmdlines.fd >= 0) close(i->drain.cmdlines.fd);
    i->lock_fd = i->drain.cmdlines.fd = -1;
  }
  g_live_mu.unlock();
}

void live_add(Consumer::Impl* i) {
  static const int once = pthread_atfork(live_prepare, live_parent, live_child);
  (void)once;
  std::lock_guard<std::mutex> g(g_live_mu);
  live_list().push_back(i);
}

void live_remove(Consumer::Impl* i) {
  std::lock_guard<std::mutex> g(g_live_mu);
  live_list().erase(std::remove(live_list().begin(), live_list().end(), i), live_list().end());
}

}  // namespace

namespace {

// YYYYmmdd-HHMMSS-NNNNNNNNN-PID: the time to the nanosecond, then the pid.
// Two sessions of one pid in one second (pid 1 in containers, a process
// that records twice) never share a name, as they did with the second
// alone: recover takes a public file of the same name for this session's,
// already published. Names sort in the order the sessions began.
std::string session_name() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  localtime_r(&ts.tv_sec, &t);
  char b[80];
  std::snprintf(b, sizeof b, "%04d%02d%02d-%02d%02d%02d-%09ld-%d", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec,
                static_cast<int>(getpid()));
  return b;
}

// "consumer: cannot <what>: <strerror(e)>" into *err; returns e.
int fail_errno(Error* err, int e, const std::string& what) {
  return set_error(err, e, "consumer: cannot " + what + ": " + std::strerror(e));
}

}  // namespace

// ===========================================================================
// create's steps

// Defaults, ring parameters, stats vectors, publish policy.
void Consumer::Impl::configure() {
  RingBuffer& rb = ctx.rb;
  ConsumerOptions& op = ctx.opts;
  drain.ncpus = rb.ncpus();
  ctx.page_size = rb.page_size();
  if (op.period_us == 0) op.period_us = 10000;
  if (op.batch_pages == 0) op.batch_pages = 64;
  if (op.pool_pages == 0) op.pool_pages = (8u << 20) / ctx.page_size;
  op.pool_pages = std::clamp<uint32_t>(op.pool_pages, 16, 4096);
  ctx.clock_name = rb.clock().trace_clock_name();
  ctx.pid = static_cast<int32_t>(getpid());
  drain.type_hi = Drainer::kFirstEventId + static_cast<uint32_t>(registered_events().size());
  ctx.tsc2nsec = rb.clock().kind() == ClockKind::kCounter;
  sh.st.events_read.assign(drain.ncpus, 0);
  sh.st.events_published.assign(drain.ncpus, 0);
  sh.st.events_lost.assign(drain.ncpus, 0);
  sh.st.pages_lost.assign(drain.ncpus, 0);
  switch (op.publish) {
    case PublishKind::kTmpFile: ctx.publish_how = AtomicHow::kTmpFile; break;
    case PublishKind::kPrivate: ctx.publish_how = AtomicHow::kPrivate; break;
    default: ctx.publish_how = atomic_how_from_env(AtomicHow::kAuto); break;
  }
}

// Directories and the session's lock (held for the consumer's life), the
// cmdlines file. 0 or an errno (err set).
int Consumer::Impl::open_session(Error* err) {
  const std::string& dir = ctx.opts.dir;
  // Directories we create: searchable by whom the traces are readable by.
  const unsigned fm = ctx.opts.file_mode;
  const unsigned dmode = 0700 | ((fm & 0040) ? 0050 : 0) | ((fm & 0004) ? 0005 : 0);
  int rc = make_dirs(dir, dmode);
  if (rc) return fail_errno(err, -rc, "create " + dir);
  // Nobody else may replace what we check below (spool/, tmp/, sessions):
  // the directory is ours or root's and not writable by others (unless
  // sticky), and spool/ and tmp/ are ours, real directories, 0700.
  std::string why;
  if ((rc = check_output_dir(dir, &why)) != 0 ||
      (rc = check_own_dir(dir + "/spool", true, 0700, &why)) != 0 ||
      (rc = check_own_dir(dir + "/tmp", true, 0700, &why)) != 0)
    return set_error(err, -rc, "consumer: " + why);
  // The session directory appears under its name with its lock already
  // held: it is made as ".new-<session>" (recover skips names that start
  // with a dot), locked, then renamed into place without replacing
  // anything. A recover that lists the spool meanwhile never sees a
  // session directory whose lock is missing or free while it is alive.
  const std::string spool_dir = dir + "/spool/";
  for (int k = 0;; k++) {
    ctx.session = session_name();
    const std::string tmp = spool_dir + ".new-" + ctx.session;
    ctx.spool = spool_dir + ctx.session;
    if (mkdir(tmp.c_str(), 0700) != 0) {
      if (errno == EEXIST && k < 100) continue;
      return fail_errno(err, errno, "create " + tmp);
    }
    lock_fd = open((tmp + "/lock").c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW,
                   0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      if (lock_fd >= 0) close(lock_fd);
      lock_fd = -1;
      unlink((tmp + "/lock").c_str());
      rmdir(tmp.c_str());
      return fail_errno(err, e, "lock " + tmp + "/lock");
    }
    int rc2 = renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, ctx.spool.c_str(), RENAME_NOREPLACE);
    if (rc2 != 0 && (errno == EINVAL || errno == ENOSYS)) {
      // A file system without RENAME_NOREPLACE: rename when the name is
      // free (the random part makes a race for it all but impossible).
      struct stat st;
      rc2 = lstat(ctx.spool.c_str(), &st) == 0 ? (errno = EEXIST, -1)
                                              : rename(tmp.c_str(), ctx.spool.c_str());
    }
    if (rc2 == 0) break;
    const int e = errno;
    close(lock_fd);
    lock_fd = -1;
    unlink((tmp + "/lock").c_str());
    rmdir(tmp.c_str());
    if (e == EEXIST && k < 100) continue;  // a name taken meanwhile: another
    return fail_errno(err, e, "rename " + tmp + " to " + ctx.spool);
  }
  drain.cmdlines.rb = &ctx.rb;
  drain.cmdlines.ring_mu = &sh.ring_mu;
  drain.cmdlines.ring_gone = &sh.ring_gone;
  drain.cmdlines.fd =
      open((ctx.spool + "/cmdlines").c_str(), O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0600);
  // The process's own name first (its main thread's, as the cmdlines name
  // every writer), whether or not that thread writes: the traces name the
  // process from it (ctx.process), and so does recover, from the spool's
  // cmdlines. (The drain thread has not started.)
  std::vector<int32_t> self{ctx.pid};
  drain.cmdlines.note(&self);
  for (const auto& [tid, comm] : drain.cmdlines.seen())
    if (tid == ctx.pid) ctx.process = comm;
  choose_layout();
  return 0;
}

// The spool's layout (ConsumerContext::per_cpu_files). One file per
// segment: a region per CPU the ring can ever have, each holding the most
// a CPU can put in a segment (segment_bytes and a page), at most
// 4 TiB / max_cpus (a CPU that fills its region ends the segment). It
// needs a file system that collapses ranges, and files as large as the
// layout: a finite RLIMIT_FSIZE (holes count against it; a write past it
// would fail, or raise SIGXFSZ) or a file system whose files cannot be that
// large (a probe) gives a file per CPU instead, each at most a segment.
void Consumer::Impl::choose_layout() {
  const uint64_t page = ctx.page_size;
  ctx.max_cpus = std::max<uint32_t>(ctx.rb.max_cpus(), 1);
  uint64_t region = (4ULL << 40) / ctx.max_cpus / page * page;
  if (ctx.opts.segment_bytes)
    region = std::min(region, (ctx.opts.segment_bytes + page - 1) / page * page + page);
  ctx.cpu_region = std::max(region, 16 * page);
  // The header's room is a few MiB at most (drainer.cc, segment_layout).
  const uint64_t end = ctx.max_cpus * ctx.cpu_region + (1ULL << 30);
  std::string why;
  struct rlimit rl;
  if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    why = "a file size limit (RLIMIT_FSIZE, ulimit -f) is set";
  } else {
    switch (probe_one_file_layout(ctx.spool, ctx.page_size, end)) {
      case 0: break;
      case -EOPNOTSUPP: why = "the file system cannot collapse ranges (fallocate)"; break;
      case -EFBIG: why = "the file system's files cannot be large enough for its layout"; break;
      default: why = "the one-file layout could not be probed"; break;
    }
  }
  ctx.per_cpu_files = !why.empty();
  if (ctx.per_cpu_files)
    sh.add_note("the spool of " + ctx.opts.dir + " is a file per CPU and segments are "
                "published by copying: " + why);
}

void Consumer::Impl::start() {
  // A snapshot of this ring now hands the pages it swaps out back to us
  // (RingBuffer::hand_back): it takes nothing from the recording.
  ctx.rb.set_recorded(true);
  // Threads of rbtrace's own: every signal blocked, no CPU slot (an
  // on_message callback that traces is refused and counted).
  sh.threads_running = 2;
  pub_thread = start_library_thread("rbtrace-publish", [this] {
    pub.run();
    thread_ended();
  });
  drain_thread = start_library_thread("rbtrace-drain", [this] {
    drain.run();
    thread_ended();
  });
}

// The end of one of the two threads. After a stop() that gave up, the last
// one releases the session's lock: nothing writes to the spool any more,
// and `rbtrace recover` may take it (a lock held until exit would do too,
// later).
void Consumer::Impl::thread_ended() {
  std::lock_guard<std::mutex> g(sh.mu);
  if (--sh.threads_running == 0) {
    sh.cv.notify_all();
    if (sh.abandoned) close_lock();
  }
}

// ===========================================================================
// control

int Consumer::Impl::flush() {
  if (in_child()) return -ECHILD;  // the parent's threads; a mutex maybe held at the fork
  std::unique_lock<std::mutex> lk(sh.mu);
  if (stopped || sh.drain_stop) return -ESRCH;
  const uint64_t gen = ++sh.flush_req;
  lk.unlock();
  drain.wake();
  lk.lock();
  // Bounded as stop() is (stop_timeout_ms without progress): a file system
  // that stops answering must not hold the caller (the control server's one
  // thread) for ever. The flush goes on; stop() waits for it again.
  if (!wait_progressing(lk, [&] { return sh.flush_done >= gen; })) return -ETIMEDOUT;
  return sh.flush_result;
}

int Consumer::Impl::stop() {
  if (in_child()) return -ECHILD;
  if (stopped) return abandoned ? -ETIMEDOUT : 0;
  // The last flush, then both threads' end; each may be stuck in a system
  // call on a file system that hangs. stop_timeout_ms bounds the time
  // without progress (wait_progressing), so a slow but working disk gets
  // all the time it needs.
  int rc = 0;
  bool timed_out = false;
  {
    std::unique_lock<std::mutex> lk(sh.mu);
    if (sh.drain_stop) {
      rc = -ESRCH;
    } else {
      const uint64_t gen = ++sh.flush_req;
      lk.unlock();
      drain.wake();
      lk.lock();
      timed_out = !wait_progressing(lk, [&] { return sh.flush_done >= gen; });
      rc = sh.flush_result;
    }
  }
  if (timed_out) return give_up();  // sh.mu not held: give_up takes it
  if (drain.waker) ctx.rb.set_page_hook(nullptr);
  {
    // The drain thread ends the publisher once it handed its last segment
    // over (Drainer::run), so the publisher publishes it, not us.
    std::unique_lock<std::mutex> lk(sh.mu);
    sh.drain_stop = true;
    lk.unlock();
    drain.wake();
    lk.lock();
    if (!wait_progressing(lk, [&] { return sh.threads_running == 0; })) {
      lk.unlock();
      return give_up();
    }
  }
  if (drain_thread.joinable()) drain_thread.join();
  ctx.rb.set_recorded(false);  // the recording is over
  ctx.rb.release_consumer();
  if (pub_thread.joinable()) pub_thread.join();
  // Publish anything the last flush did not cover (nothing, normally).
  for (auto& s : sh.queue)
    if (s->seq != 0) pub.publish(*s);
  sh.queue.clear();
  stopped = true;
  live_remove(this);  // before its descriptors close (see live_child)
  drain.release();
  const std::string& spool = ctx.spool;
  unlink((spool + "/cmdlines").c_str());
  unlink((spool + "/lock").c_str());
  rmdir(spool.c_str());
  close_lock();
  return rc;
}

// Closes the session's lock (releases it). Under g_live_mu: a fork between
// the close and the store could otherwise leave the child a number the
// parent reused, which the atfork handler would close.
void Consumer::Impl::close_lock() {
  std::lock_guard<std::mutex> g(g_live_mu);
  if (lock_fd >= 0) close(lock_fd);
  lock_fd = -1;
}

// Waits under sh.mu for `done`, giving up (false) once stop_timeout_ms
// passed without progress: no page taken, written or failed, no segment
// published or failed, no flush handed over. 0: waits for ever.
template <class Done>
bool Consumer::Impl::wait_progressing(std::unique_lock<std::mutex>& lk, Done done) {
  const uint32_t limit = ctx.opts.stop_timeout_ms;
  if (limit == 0) {
    sh.cv.wait(lk, done);
    return true;
  }
  auto progress = [&] {
    const ConsumerStats& st = sh.st;
    return st.pages_read + st.pages_written + st.pages_failed + st.segments_published +
           st.segments_failed + sh.flush_taken;
  };
  uint64_t seen = progress();
  auto deadline = SteadyClock::now() + std::chrono::milliseconds(limit);
  while (!done()) {
    const auto now = SteadyClock::now();
    if (now >= deadline) return false;
    // Progress is counted under the mutex without a notification: look
    // every 100 ms.
    sh.cv.wait_until(lk, std::min(deadline, now + std::chrono::milliseconds(100)), done);
    if (const uint64_t p = progress(); p != seen) {
      seen = p;
      deadline = SteadyClock::now() + std::chrono::milliseconds(limit);
    }
  }
  return true;
}

// stop() waited stop_timeout_ms without progress: the threads are stuck in
// the file system.
// From here the ring is not touched (ring_gone, under ring_mu: once we
// hold it no access is under way), the threads end on their own when their
// system calls return, and this object is never freed (they use it).
int Consumer::Impl::give_up() {
  if (drain.waker) ctx.rb.set_page_hook(nullptr);
  {
    std::lock_guard<std::mutex> g(sh.ring_mu);
    sh.ring_gone = true;
  }
  ctx.rb.set_recorded(false);
  ctx.rb.release_consumer();  // the threads no longer touch the ring
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.abandoned = true;
    sh.drain_stop = true;
    sh.pub_stop = true;
    sh.cv.notify_all();
    if (sh.threads_running == 0) close_lock();  // they ended meanwhile
  }
  drain.wake();
  if (drain_thread.joinable()) drain_thread.detach();
  if (pub_thread.joinable()) pub_thread.detach();
  stopped = abandoned = true;
  const std::string said = "rbtrace consumer: stop() gave up after " +
                           std::to_string(ctx.opts.stop_timeout_ms) + " ms without progress: the file system under " +
                           ctx.opts.dir + " does not answer. The recording is over; what was not published stays in " +
                           ctx.spool + " for `rbtrace recover " + ctx.opts.dir + "`";
  ctx.message(said);
  {
    // From here the threads' messages go to stderr (message()).
    std::lock_guard<std::mutex> g(ctx.msg_mu);
    ctx.msg_off = true;
  }
  return -ETIMEDOUT;
}

// ===========================================================================

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Consumer::~Consumer() {
  if (!impl_) return;
  if (impl_->in_child()) {
    // A forked child: the drain and publish threads are the parent's (not
    // here: joining them would wait for ever), and so are the spool, the
    // lock and the recording. Nothing is stopped, unlinked or closed; the
    // object is left as it is (a leak of the child's copy, by design).
    // The child's copies of the lock's and the cmdlines' descriptors are
    // closed (the parent's lock stays: flock belongs to the open file,
    // which the parent keeps; LOCK_UN would release it for both). The rest
    // is kept, reachable (a leak checker in the child stays quiet), never
    // run: its std::threads are not here and are never joined.
    // (The atfork handler closed them already; this is for a child made
    // by a raw clone.) The object stays reachable through g_live.
    if (impl_->lock_fd >= 0) close(impl_->lock_fd);
    if (impl_->drain.cmdlines.fd >= 0) close(impl_->drain.cmdlines.fd);
    impl_->lock_fd = impl_->drain.cmdlines.fd = -1;
    (void)impl_.release();
    return;
  }
  impl_->stop();
  if (impl_->abandoned) {
    // stop() gave up on threads stuck in the file system: they still use
    // the object. Kept, reachable through g_live, for the life of the
    // process.
    (void)impl_.release();
    return;
  }
  live_remove(impl_.get());
}
int Consumer::flush() { return impl_->flush(); }
int Consumer::stop() { return impl_->stop(); }
const std::string& Consumer::spool_dir() const { return impl_->ctx.spool; }
const ConsumerOptions& Consumer::options() const { return impl_->ctx.opts; }

ConsumerStats Consumer::stats() const {
  ConsumerStats s;
  {
    std::lock_guard<std::mutex> g(impl_->sh.mu);
    s = impl_->sh.st;
  }
  return s;
}

std::vector<std::string> Consumer::published() const {
  std::lock_guard<std::mutex> g(impl_->sh.mu);
  return impl_->sh.published;
}

std::unique_ptr<Consumer> Consumer::create(RingBuffer& rb, const ConsumerOptions& o,
                                           Error* err) {
  if (o.dir.empty()) {
    set_error(err, EINVAL, "consumer: no output directory");
    return nullptr;
  }
  if (!safe_name(o.prefix)) {
    set_error(err, EINVAL, "consumer: bad file prefix '" + o.prefix + "'");
    return nullptr;
  }
  if ((o.file_mode & ~0666u) != 0 || (o.file_mode & 0600u) != 0600u) {
    char m[16];
    std::snprintf(m, sizeof m, "%04o", o.file_mode);
    set_error(err, EINVAL,
              std::string("consumer: file_mode ") + m +
                  " must let the owner read and write and set nothing beyond 0666");
    return nullptr;
  }
  // One reader per ring: a second Consumer (an application's own and one
  // started from the control socket) would take pages from the first.
  if (!rb.claim_consumer()) {
    set_error(err, EBUSY, "consumer: the ring already has a consumer (one per ring)");
    return nullptr;
  }
  struct Claim {
    RingBuffer* rb;
    ~Claim() {
      if (rb) rb->release_consumer();
    }
  } claim{&rb};
  auto impl = std::make_unique<Impl>(rb, o);
  impl->configure();
  if (impl->open_session(err) != 0) return nullptr;
  impl->drain.init_backend();
  if (impl->drain.init_pool(err) != 0) return nullptr;
  impl->drain.register_fixed();
  impl->drain.init_waker();
  impl->start();
  claim.rb = nullptr;  // the consumer's now: given back when it stops
  live_add(impl.get());
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

}  // namespace rbtrace
