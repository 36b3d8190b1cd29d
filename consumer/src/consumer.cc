// consumer.cc - the consumer: a drain thread (read_page -> io_uring/pwritev
// -> spool files) and a publish thread (segment -> trace.dat -> atomic
// publish). See consumer.h and docs/DESIGN.md, "Consumer".
//
// Threads and what they own:
//   drain thread: the pool (slots), the I/O backend, the open segment, the
//     closing segments (waiting for their writes), the tid -> comm map.
//   publish thread: segments handed over (queue_ under mu_), one at a time.
//   callers: flush/stop post a request (under mu_) and wake the drain thread.
// mu_ guards the hand-over queue, the flush/stop state and the stats; it is
// never held across I/O or across read_page.
#include "rbtrace/consumer.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "io_backend.h"
#include "rbtrace/atomic_file.h"
#include "rbtrace/event.h"
#include "rbtrace/tracedat.h"
#include "spool.h"

namespace rbtrace {

using namespace detail;

namespace {

using SteadyClock = std::chrono::steady_clock;

void futex_wait(std::atomic<uint32_t>* w, uint32_t val, int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), FUTEX_WAIT_PRIVATE, val, &ts, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>* w) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// ---------------------------------------------------------------------------
// Watermark wake-up. The writer that moves a CPU's tail to a new page calls
// the ring's page hook (ring_buffer.h, PageHook), i.e. at most once per
// page. Wakers are never freed: a writer may still be inside the hook after
// the consumer removed it. They are recycled through a global free list
// (a late writer then at worst wakes some other consumer early: harmless)
// and stay reachable, so leak checkers do not flag them.
// ---------------------------------------------------------------------------
struct Waker {
  PageHook hook{};
  // 1 while the drain thread sleeps in futex_wait on it. relaxed
  // everywhere: it is only a flag, and the futex system call orders the
  // sleep against the wake (FUTEX_WAIT rechecks the value in the kernel).
  std::atomic<uint32_t> sleeping{0};
  std::atomic<uint32_t> watermark{1};
  std::atomic<uint32_t> filled[kMaxCpus];  // pages since the sleep began
};

void waker_hook(void* arg, uint32_t cpu) {
  Waker* w = static_cast<Waker*>(arg);
  if (w->sleeping.load(std::memory_order_relaxed) == 0) return;  // the usual case
  if (cpu >= kMaxCpus) return;
  if (w->filled[cpu].fetch_add(1, std::memory_order_relaxed) + 1 <
      w->watermark.load(std::memory_order_relaxed))
    return;
  if (w->sleeping.exchange(0, std::memory_order_relaxed) == 1) futex_wake(&w->sleeping);
}

std::mutex& waker_mutex() {
  static std::mutex m;
  return m;
}
std::vector<Waker*>& free_wakers() {
  static std::vector<Waker*>* v = new std::vector<Waker*>();  // immortal
  return *v;
}
std::vector<Waker*>& all_wakers() {
  static std::vector<Waker*>* v = new std::vector<Waker*>();  // keeps them reachable
  return *v;
}
Waker* get_waker() {
  std::lock_guard<std::mutex> g(waker_mutex());
  if (!free_wakers().empty()) {
    Waker* w = free_wakers().back();
    free_wakers().pop_back();
    return w;
  }
  Waker* w = new Waker();
  w->hook.fn = waker_hook;
  w->hook.arg = w;
  all_wakers().push_back(w);
  return w;
}
void put_waker(Waker* w) {
  std::lock_guard<std::mutex> g(waker_mutex());
  free_wakers().push_back(w);
}

uint64_t thread_cpu_ns() {
  rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
  return (static_cast<uint64_t>(ru.ru_utime.tv_sec) + static_cast<uint64_t>(ru.ru_stime.tv_sec)) *
             1000000000ull +
         (static_cast<uint64_t>(ru.ru_utime.tv_usec) + static_cast<uint64_t>(ru.ru_stime.tv_usec)) *
             1000ull;
}

std::string errstr(int e) {
  std::string s = std::strerror(e);
  switch (e) {
    case ENOSPC: s += " (ENOSPC)"; break;
    case EFBIG: s += " (EFBIG)"; break;
    case EDQUOT: s += " (EDQUOT)"; break;
    default: break;
  }
  return s;
}

std::string session_name() {
  time_t now = time(nullptr);
  tm t;
  localtime_r(&now, &t);
  char b[64];
  std::snprintf(b, sizeof b, "%04d%02d%02d-%02d%02d%02d-%d", t.tm_year + 1900, t.tm_mon + 1,
                t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(getpid()));
  return b;
}

std::string thread_comm(int32_t tid) {
  std::string s;
  if (read_small_file("/proc/self/task/" + std::to_string(tid) + "/comm", 256, &s) != 0)
    return {};
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  for (char& c : s)
    if (c == '\n' || c == ' ') c = '_';
  return s;
}

// One CPU's spool file within a segment.
struct CpuRun {
  int fd = -1;
  uint64_t next_off = 0;     // where the next page goes
  uint64_t good_end = 0;     // [0, good_end) written completely
  uint64_t good_events = 0;  // events in [0, good_end)
  uint64_t events = 0;       // events in every page submitted
  uint64_t pages = 0;        // pages submitted
  bool broken = false;       // a write failed: nothing after good_end counts
  std::map<uint64_t, uint64_t> done;  // completed beyond good_end: off -> events
};

struct Segment {
  uint64_t seq = 0;
  std::string public_name;
  SteadyClock::time_point started;
  uint64_t bytes = 0;
  uint32_t in_flight = 0;
  bool closed = false;
  int error = 0;  // first write error
  std::vector<CpuRun> cpus;
  // Filled when handed to the publish thread.
  uint64_t flush_gen = 0;  // > 0: a flush marker (may have no data)
  std::vector<std::string> stats;
  std::vector<std::pair<int32_t, std::string>> cmdlines;
  std::vector<EventFormat> events;
};

}  // namespace

// ===========================================================================

struct Consumer::Impl {
  Impl(RingBuffer& r, const ConsumerOptions& o) : rb(r), opts(o) {}

  RingBuffer& rb;
  ConsumerOptions opts;
  uint32_t ncpus = 0;
  uint32_t page_size = 0;
  std::string session;
  std::string spool;  // DIR/spool/<session>
  int lock_fd = -1;
  int cmdline_fd = -1;
  AtomicHow publish_how = AtomicHow::kAuto;
  std::string clock_name;
  bool tsc2nsec = false;

  // ---- drain thread ----------------------------------------------------------
  std::unique_ptr<IoBackend> io;
  struct Slot {
    DataPage* page = nullptr;
    Segment* seg = nullptr;
    uint32_t cpu = 0;
    uint64_t off = 0;
    uint64_t events = 0;
  };
  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
  std::unique_ptr<Segment> cur;
  std::vector<std::unique_ptr<Segment>> closing;
  uint64_t next_seq = 1;
  std::unordered_map<int32_t, std::string> comms;
  // Registered event ids are [kFirstEventId, type_hi): records of those
  // carry a common header with the writer's tid.
  static constexpr uint32_t kFirstEventId = 1000;
  uint32_t type_hi = kFirstEventId;
  std::vector<int32_t> page_tids;
  std::vector<IoCompletion> comps;
  SteadyClock::time_point blocked_until{};
  int64_t backoff_ms = 0;
  bool episode_reported = false;  // disk-full message given for this episode (mu)
  // Set by the publish thread when a trace did not fit (ENOSPC, EFBIG,
  // EDQUOT): the drain thread takes no pages before this time (steady
  // clock, ns since its epoch), so a full disk is not filled with spool
  // that cannot be published. relaxed: a hint between two threads, no data
  // rides on it.
  std::atomic<int64_t> pub_blocked_until{0};
  int64_t pub_backoff_ms = 0;  // publish thread only
  uint32_t rr = 0;                // round-robin start CPU

  // The CPU buffers whose pages were registered as fixed buffers. A
  // snapshot swap puts another CPU buffer in a slot; from then on pages
  // leave our circle (a dumper may free one, and a later allocation at the
  // same address would not be the registered physical page), so fixed
  // writes stop for good at the first swap seen (docs/DESIGN.md).
  std::vector<detail::CpuBuffer*> registered_cbs;
  bool fixed_active = false;

  Waker* waker = nullptr;
  std::atomic<uint32_t> own_sleep{0};  // relaxed: a flag; see Waker::sleeping
  std::atomic<uint32_t>* sleep_word = &own_sleep;

  // ---- shared, under mu --------------------------------------------------------
  mutable std::mutex mu;
  std::condition_variable cv;  // publish thread work; flush completion
  std::deque<std::unique_ptr<Segment>> queue;
  uint64_t flush_req = 0;     // generation asked for
  uint64_t flush_taken = 0;   // generation the drain thread handed over
  uint64_t flush_done = 0;    // generation the publish thread completed
  int flush_err = 0;          // first error since the last flush marker
  int flush_result = 0;       // error of the flush that completed last
  bool drain_stop = false;
  bool pub_stop = false;
  ConsumerStats st;
  std::vector<std::string> published;

  std::thread drain_thread;
  std::thread pub_thread;
  bool stopped = false;

  // ---------------------------------------------------------------------------
  void message(const std::string& m) {
    if (opts.on_message) opts.on_message(m);
    else std::fprintf(stderr, "%s\n", m.c_str());
  }

  void wake_drain() {
    sleep_word->store(0, std::memory_order_relaxed);
    futex_wake(sleep_word);
  }

  // ---- segments --------------------------------------------------------------
  std::string seg_path(uint64_t seq, const char* suffix) const {
    return spool + "/" + segment_file(seq, suffix);
  }

  // Opens a new segment: writes its sidecar before any page. 0 or -errno.
  int open_segment() {
    auto s = std::make_unique<Segment>();
    s->seq = next_seq++;
    char num[32];
    std::snprintf(num, sizeof num, "%06" PRIu64, s->seq);
    s->public_name = opts.prefix + "-" + session + "-" + num + ".dat";
    s->started = SteadyClock::now();
    s->cpus.resize(ncpus);
    SpoolMeta m;
    m.session = session;
    m.segment = s->seq;
    m.public_name = s->public_name;
    m.page_size = page_size;
    m.ncpus = ncpus;
    m.clock = clock_name;
    m.tsc2nsec = tsc2nsec;
    if (tsc2nsec) m.calibration = counter_calibration();
    m.events = registered_event_formats();
    const std::string text = encode_meta(m);
    const std::string tmp = seg_path(s->seq, ".meta.tmp");
    int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return write_failed(nullptr, 0, errno, "create " + tmp);
    size_t done = 0;
    while (done < text.size()) {
      ssize_t r = write(fd, text.data() + done, text.size() - done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        int e = r < 0 ? errno : EIO;
        close(fd);
        unlink(tmp.c_str());
        return write_failed(nullptr, 0, e, "write " + tmp);
      }
      done += static_cast<size_t>(r);
    }
    close(fd);
    if (rename(tmp.c_str(), seg_path(s->seq, ".meta").c_str()) != 0) {
      int e = errno;
      unlink(tmp.c_str());
      return write_failed(nullptr, 0, e, "rename " + tmp);
    }
    type_hi = kFirstEventId + static_cast<uint32_t>(m.events.size());
    s->events = std::move(m.events);
    cur = std::move(s);
    return 0;
  }

  int cpu_fd(Segment* s, uint32_t cpu) {
    CpuRun& r = s->cpus[cpu];
    if (r.fd >= 0) return r.fd;
    const std::string p = seg_path(s->seq, (".cpu" + std::to_string(cpu)).c_str());
    r.fd = open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (r.fd < 0) return -errno;
    return r.fd;
  }

  // Called for a write (or segment set-up) that failed: counts it, starts
  // a back-off (no pages are taken meanwhile: the ring counts what it
  // drops), and reports once per episode. Returns -e.
  int write_failed(Segment* s, uint32_t cpu, int e, const std::string& what) {
    if (s) {
      if (!s->error) s->error = e;
      s->cpus[cpu].broken = true;
      if (s == cur.get()) close_current();
    }
    backoff_ms = backoff_ms ? std::min<int64_t>(backoff_ms * 2, 1000) : 50;
    blocked_until = SteadyClock::now() + std::chrono::milliseconds(backoff_ms);
    bool report = false;
    {
      std::lock_guard<std::mutex> g(mu);
      st.write_errors++;
      st.last_error = e;
      if (!flush_err) flush_err = -e;
      if (!episode_reported) report = episode_reported = true;
    }
    if (report)
      message("rbtrace consumer: cannot write to " + opts.dir + " (" + what + "): " + errstr(e) +
              "; pages are dropped and counted until writing works again");
    return -e;
  }

  void close_current() {
    if (!cur) return;
    cur->closed = true;
    closing.push_back(std::move(cur));
  }

  // Hands finished segments (closed, nothing in flight) to the publish thread.
  void hand_over_finished() {
    for (size_t i = 0; i < closing.size();) {
      if (closing[i]->in_flight != 0) {
        i++;
        continue;
      }
      std::unique_ptr<Segment> s = std::move(closing[i]);
      closing.erase(closing.begin() + static_cast<long>(i));
      finish(std::move(s), 0);
    }
  }

  void finish(std::unique_ptr<Segment> s, uint64_t gen) {
    if (s) {
      // Losses of this segment's failed writes: everything after the first
      // failure of a CPU (good_end) is not in the file.
      std::lock_guard<std::mutex> g(mu);
      for (uint32_t c = 0; c < ncpus; c++) {
        CpuRun& r = s->cpus[c];
        st.events_lost[c] += r.events - r.good_events;
        st.pages_lost[c] += r.pages - r.good_end / page_size;
      }
    }
    if (s) {
      s->stats.resize(ncpus);
      for (uint32_t c = 0; c < ncpus; c++) {
        const CpuRun& r = s->cpus[c];
        s->stats[c] = cpu_stats_text(rb.stats(c)) +
                      "segment events: " + std::to_string(r.good_events) + "\n" +
                      "segment lost events: " + std::to_string(r.events - r.good_events) + "\n";
      }
      s->cmdlines.assign(comms.begin(), comms.end());
    }
    if (!s) {
      s = std::make_unique<Segment>();
      s->seq = 0;  // a bare flush marker
    }
    s->flush_gen = gen;
    std::lock_guard<std::mutex> g(mu);
    queue.push_back(std::move(s));
    cv.notify_all();
  }

  // ---- pages -------------------------------------------------------------------
  // Names of the process's threads, refreshed now and then from
  // /proc/self/task (so that a writer that exits before the consumer sees
  // its pages still has a name), and looked up for each new tid.
  std::unordered_map<int32_t, std::string> names;
  SteadyClock::time_point last_scan{};

  void scan_threads() {
    last_scan = SteadyClock::now();
    DIR* d = opendir("/proc/self/task");
    if (!d) return;
    std::vector<int32_t> tids;
    while (dirent* e = readdir(d)) {
      const int32_t tid = std::atoi(e->d_name);
      if (tid > 0) tids.push_back(tid);
    }
    // Names change (threads name themselves after they start): re-read
    // every thread's, unless there are very many; then only new ones.
    const bool refresh = tids.size() <= 256;
    for (int32_t tid : tids) {
      if (!refresh && names.count(tid)) continue;
      std::string c = thread_comm(tid);
      if (!c.empty()) names[tid] = std::move(c);
    }
    closedir(d);
  }

  void note_tids() {
    for (int32_t t : page_tids) {
      if (comms.count(t)) continue;
      std::string c = thread_comm(t);
      if (c.empty()) {
        auto it = names.find(t);
        c = it != names.end() ? it->second : "<...>";
      }
      comms.emplace(t, c);
      if (cmdline_fd >= 0) {
        const std::string line = std::to_string(t) + " " + c + "\n";
        (void)!write(cmdline_fd, line.data(), line.size());
      }
    }
    page_tids.clear();
  }

  // A page taken from the ring (slot `i`, `len` bytes of events): counts
  // it and queues its write.
  void take_page(uint32_t i, uint32_t cpu) {
    Slot& sl = slots[i];
    uint64_t events = 0;
    page_tids.clear();
    // The page came from read_page: well formed by construction; the walk
    // counts events and finds writer tids for the cmdlines.
    (void)check_page(reinterpret_cast<const unsigned char*>(sl.page), page_size, &events,
                     &page_tids, kFirstEventId, type_hi);
    if (!page_tids.empty()) note_tids();
    {
      std::lock_guard<std::mutex> g(mu);
      st.pages_read++;
      st.events_read[cpu] += events;
    }
    if (!cur && open_segment() != 0) {
      std::lock_guard<std::mutex> g(mu);
      st.pages_failed++;
      st.events_lost[cpu] += events;
      st.pages_lost[cpu]++;
      free_slots.push_back(i);
      return;
    }
    Segment* s = cur.get();
    const int fd = cpu_fd(s, cpu);
    if (fd < 0) {
      {
        std::lock_guard<std::mutex> g(mu);
        st.pages_failed++;
        st.events_lost[cpu] += events;
        st.pages_lost[cpu]++;
      }
      free_slots.push_back(i);
      write_failed(s, cpu, -fd, "create a spool file");
      return;
    }
    CpuRun& r = s->cpus[cpu];
    sl.seg = s;
    sl.cpu = cpu;
    sl.off = r.next_off;
    sl.events = events;
    r.next_off += page_size;
    r.events += events;
    r.pages++;
    s->bytes += page_size;
    s->in_flight++;
    io->prep_write(fd, sl.page, page_size, sl.off, i);
    if (opts.segment_bytes && s->bytes >= opts.segment_bytes) close_current();
  }

  void complete(const IoCompletion& c) {
    const uint32_t i = static_cast<uint32_t>(c.tag);
    Slot& sl = slots[i];
    Segment* s = sl.seg;
    CpuRun& r = s->cpus[sl.cpu];
    int64_t res = c.res;
    if (res >= 0 && res < page_size) {
      // A short write (a full disk, a file size limit): write the rest to
      // learn whether it fails and why.
      uint64_t done = static_cast<uint64_t>(res);
      while (done < page_size) {
        ssize_t w = pwrite(r.fd, reinterpret_cast<const char*>(sl.page) + done, page_size - done,
                           static_cast<off_t>(sl.off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          res = w < 0 ? -errno : -EIO;
          break;
        }
        done += static_cast<uint64_t>(w);
      }
      if (done == page_size) res = page_size;
    }
    s->in_flight--;
    sl.seg = nullptr;
    free_slots.push_back(i);
    if (res == page_size) {
      {
        std::lock_guard<std::mutex> g(mu);
        st.pages_written++;
        st.bytes_written += page_size;
      }
      if (!r.broken) {
        if (sl.off == r.good_end) {
          r.good_end += page_size;
          r.good_events += sl.events;
          for (auto it = r.done.begin(); it != r.done.end() && it->first == r.good_end;
               it = r.done.erase(it)) {
            r.good_end += page_size;
            r.good_events += it->second;
          }
        } else {
          r.done.emplace(sl.off, sl.events);
        }
      }
      backoff_ms = 0;
    } else {
      {
        std::lock_guard<std::mutex> g(mu);
        st.pages_failed++;
      }
      r.done.clear();
      write_failed(s, sl.cpu, static_cast<int>(-res),
                   "write spool " + seg_path(s->seq, (".cpu" + std::to_string(sl.cpu)).c_str()));
    }
  }

  size_t reap(int64_t wait_ns) {
    comps.clear();
    size_t n = io->reap(&comps, wait_ns);
    for (const IoCompletion& c : comps) complete(c);
    if (n) {
      hand_over_finished();
      std::lock_guard<std::mutex> g(mu);
      st.fixed_writes = io->fixed_writes();
    }
    return n;
  }

  // Takes pages from every CPU, round robin, up to batch_pages each.
  // Returns the pages taken.
  uint64_t pass(bool full, uint32_t per_cpu, bool flushing = false) {
    uint64_t taken = 0;
    for (uint32_t k = 0; k < ncpus; k++) {
      const uint32_t cpu = (rr + k) % ncpus;
      for (uint32_t b = 0; b < per_cpu; b++) {
        if (free_slots.empty()) {
          // Pool exhausted: every page is in flight. Push and harvest. A
          // flush waits for a page to come back however slow the disk is
          // (every page is in flight, so one will); a periodic pass gives
          // up after one period and comes back later.
          io->submit();
          do {
            if (reap(static_cast<int64_t>(opts.period_us) * 1000) == 0 && !flushing) break;
          } while (flushing && free_slots.empty());
          if (free_slots.empty()) break;
        }
        if (fixed_active && rb.cpu_buffer(cpu) != registered_cbs[cpu]) {
          io->disable_fixed();
          fixed_active = false;
          std::lock_guard<std::mutex> g(mu);
          st.backend_note += std::string(st.backend_note.empty() ? "" : "; ") +
                             "CPU buffers were swapped (snapshot): fixed buffers no longer used";
        }
        const uint32_t i = free_slots.back();
        int rc = rb.read_page(&slots[i].page, cpu, full);
        if (rc <= 0) break;
        free_slots.pop_back();
        take_page(i, cpu);
        taken++;
        if (opts.slow_us_per_page) {
          io->submit();
          usleep(opts.slow_us_per_page);
        }
      }
    }
    rr = (rr + 1) % ncpus;
    io->submit();
    if (taken) {
      const uint64_t cpu_ns = thread_cpu_ns();
      std::lock_guard<std::mutex> g(mu);
      st.drain_cpu_ns = cpu_ns;
    }
    return taken;
  }

  void wait_all_io() {
    while (io->in_flight() > 0) {
      io->submit();
      reap(100 * 1000 * 1000);
    }
    hand_over_finished();
    const uint64_t cpu_ns = thread_cpu_ns();
    std::lock_guard<std::mutex> g(mu);
    st.drain_cpu_ns = cpu_ns;
  }

  void drain_loop() {
    for (;;) {
      reap(0);
      uint64_t want_flush;
      bool stop;
      {
        std::lock_guard<std::mutex> g(mu);
        want_flush = flush_req > flush_taken ? flush_req : 0;
        stop = drain_stop;
      }
      const auto now = SteadyClock::now();
      if (want_flush) {
        // Everything committed, partial pages included: full pages first,
        // then what the writers are still on. A CPU holds at most
        // pages_per_cpu + 1 pages, so this bound covers everything
        // committed when the flush began even if writers keep going.
        const uint32_t bound = rb.options().pages_per_cpu + 2;
        pass(true, bound, /*flushing=*/true);
        pass(false, bound, /*flushing=*/true);
        wait_all_io();
        close_current();
        hand_over_finished();
        finish(nullptr, want_flush);
        std::lock_guard<std::mutex> g(mu);
        flush_taken = want_flush;
        continue;
      }
      if (stop) break;
      if (cur && opts.segment_seconds &&
          now - cur->started >= std::chrono::seconds(opts.segment_seconds)) {
        close_current();
        hand_over_finished();
      }
      uint64_t taken = 0;
      const SteadyClock::time_point pub_block{SteadyClock::duration(
          pub_blocked_until.load(std::memory_order_relaxed))};
      if (now >= blocked_until && now >= pub_block) taken = pass(true, opts.batch_pages);
      if (taken > 0) continue;
      // Nothing to take: sleep until the timer (or the watermark, or a
      // flush/stop) wakes us. Writes in flight are harvested on the way.
      if (io->in_flight() > 0) {
        reap(static_cast<int64_t>(opts.period_us) * 1000);
        continue;
      }
      if (SteadyClock::now() - last_scan > std::chrono::milliseconds(100)) scan_threads();
      if (waker) {
        for (uint32_t c = 0; c < ncpus; c++) waker->filled[c].store(0, std::memory_order_relaxed);
      }
      sleep_word->store(1, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> g(mu);
        if (flush_req > flush_taken || drain_stop) {
          sleep_word->store(0, std::memory_order_relaxed);
          continue;
        }
      }
      futex_wait(sleep_word, 1, static_cast<int64_t>(opts.period_us) * 1000);
      sleep_word->store(0, std::memory_order_relaxed);
    }
    wait_all_io();
    close_current();
    hand_over_finished();
  }

  // ---- publish thread ----------------------------------------------------------
  void remove_segment_files(const Segment& s) {
    unlink(seg_path(s.seq, ".meta").c_str());
    for (uint32_t c = 0; c < ncpus; c++) {
      if (s.cpus[c].fd >= 0) {
        close(s.cpus[c].fd);
        unlink(seg_path(s.seq, (".cpu" + std::to_string(c)).c_str()).c_str());
      }
    }
  }

  // Assembles and publishes one segment. 0 or -errno (message given).
  int publish(Segment& s) {
    uint64_t pages = 0;
    for (const CpuRun& r : s.cpus) pages += r.good_end / page_size;
    if (pages == 0) {
      remove_segment_files(s);
      return s.error ? -s.error : 0;
    }
    TraceDatInput in;
    in.page_size = page_size;
    in.clock = clock_name;
    in.tsc2nsec = tsc2nsec;
    if (tsc2nsec) in.calibration = counter_calibration();
    in.events = s.events;
    in.cmdlines = s.cmdlines;
    in.cpus.resize(ncpus);
    for (uint32_t c = 0; c < ncpus; c++) {
      in.cpus[c].fd = s.cpus[c].fd;
      in.cpus[c].offset = 0;
      in.cpus[c].size = s.cpus[c].good_end;
      in.cpus[c].stats = s.stats[c];
    }
    std::string err;
    AtomicFile f;  // abandoned unless published
    const std::string priv = opts.dir + "/tmp/" + session + "-" + segment_file(s.seq, ".dat");
    int rc = f.open(opts.dir, priv, publish_how, &err);
    if (rc == 0) {
      rc = write_trace_dat(f.fd(), in, &err);
      if (rc == 0) {
        std::string name = s.public_name;
        for (int k = 1; k < 100; k++) {
          rc = f.publish(opts.dir + "/" + name, opts.fsync, &err);
          if (rc != -EEXIST) break;
          name = s.public_name + "." + std::to_string(k);
          err = "public name " + s.public_name + " exists";
        }
        if (rc == 0) s.public_name = name;
      }
    }
    if (rc == 0) {
      // Published: the spool of this segment is no longer needed. A crash
      // before this point leaves the spool, which recover turns into the
      // same public name (and, seeing it exists, only cleans up).
      remove_segment_files(s);
      pub_backoff_ms = 0;
      std::lock_guard<std::mutex> g(mu);
      st.segments_published++;
      st.pages_published += pages;
      for (uint32_t c = 0; c < ncpus; c++) st.events_published[c] += s.cpus[c].good_events;
      published.push_back(opts.dir + "/" + s.public_name);
      return s.error ? -s.error : 0;
    }
    remove_segment_files(s);
    {
      std::lock_guard<std::mutex> g(mu);
      st.segments_failed++;
      for (uint32_t c = 0; c < ncpus; c++) {
        st.events_lost[c] += s.cpus[c].good_events;
        st.pages_lost[c] += s.cpus[c].good_end / page_size;
      }
    }
    const bool full = rc == -ENOSPC || rc == -EFBIG || rc == -EDQUOT;
    if (full) {
      pub_backoff_ms = pub_backoff_ms ? std::min<int64_t>(pub_backoff_ms * 2, 1000) : 50;
      pub_blocked_until.store(
          (SteadyClock::now() + std::chrono::milliseconds(pub_backoff_ms)).time_since_epoch().count(),
          std::memory_order_relaxed);
    }
    bool report = true;
    {
      // One message per episode of a full disk, like write failures.
      std::lock_guard<std::mutex> g(mu);
      if (full) {
        report = !episode_reported;
        episode_reported = true;
      }
    }
    if (report)
      message("rbtrace consumer: could not publish segment " + std::to_string(s.seq) + " (" +
              std::to_string(pages) + " pages lost, counted): " + err +
              (full ? "; further segments are dropped and counted until space is available" : ""));
    return rc;
  }

  void publish_loop() {
    for (;;) {
      std::unique_ptr<Segment> s;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return !queue.empty() || pub_stop; });
        if (queue.empty()) return;
        s = std::move(queue.front());
        queue.pop_front();
      }
      int rc = 0;
      if (s->seq != 0) rc = publish(*s);
      const uint64_t cpu_ns = thread_cpu_ns();
      std::lock_guard<std::mutex> g(mu);
      st.publish_cpu_ns = cpu_ns;
      if (rc && !flush_err) flush_err = rc;
      if (rc == 0 && s->seq != 0 && !s->error) episode_reported = false;
      if (s->flush_gen) {
        flush_done = s->flush_gen;
        flush_result = flush_err;
        flush_err = 0;
        cv.notify_all();
      }
    }
  }

  // ---- control -------------------------------------------------------------------
  int flush() {
    std::unique_lock<std::mutex> lk(mu);
    if (stopped || drain_stop) return -ESRCH;
    const uint64_t gen = ++flush_req;
    lk.unlock();
    wake_drain();
    lk.lock();
    cv.wait(lk, [&] { return flush_done >= gen; });
    return flush_result;
  }

  int stop() {
    if (stopped) return 0;
    int rc = flush();
    if (waker) rb.set_page_hook(nullptr);
    {
      std::lock_guard<std::mutex> g(mu);
      drain_stop = true;
    }
    wake_drain();
    if (drain_thread.joinable()) drain_thread.join();
    {
      std::lock_guard<std::mutex> g(mu);
      pub_stop = true;
      cv.notify_all();
    }
    if (pub_thread.joinable()) pub_thread.join();
    // Publish anything the last flush did not cover (nothing, normally).
    for (auto& s : queue)
      if (s->seq != 0) publish(*s);
    queue.clear();
    stopped = true;
    io.reset();
    for (Slot& s : slots) RingBuffer::free_read_page(s.page);
    slots.clear();
    if (waker) {
      put_waker(waker);
      waker = nullptr;
      sleep_word = &own_sleep;
    }
    if (cmdline_fd >= 0) close(cmdline_fd);
    cmdline_fd = -1;
    unlink((spool + "/cmdlines").c_str());
    unlink((spool + "/lock").c_str());
    rmdir(spool.c_str());
    if (lock_fd >= 0) close(lock_fd);
    lock_fd = -1;
    return rc;
  }
};

// ===========================================================================

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Consumer::~Consumer() {
  if (impl_) impl_->stop();
}
int Consumer::flush() { return impl_->flush(); }
int Consumer::stop() { return impl_->stop(); }
const std::string& Consumer::spool_dir() const { return impl_->spool; }
const ConsumerOptions& Consumer::options() const { return impl_->opts; }

ConsumerStats Consumer::stats() const {
  ConsumerStats s;
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    s = impl_->st;
  }
  return s;
}

std::vector<std::string> Consumer::published() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->published;
}

std::unique_ptr<Consumer> Consumer::create(RingBuffer& rb, const ConsumerOptions& o,
                                           Error* err) {
  auto fail = [&](int code, std::string msg) -> std::unique_ptr<Consumer> {
    if (err) {
      err->code = code;
      err->message = std::move(msg);
    }
    return nullptr;
  };
  if (o.dir.empty()) return fail(EINVAL, "consumer: no output directory");
  if (!safe_name(o.prefix)) return fail(EINVAL, "consumer: bad file prefix '" + o.prefix + "'");
  auto impl = std::make_unique<Impl>(rb, o);
  Impl& m = *impl;
  ConsumerOptions& op = m.opts;
  m.ncpus = rb.ncpus();
  m.page_size = rb.page_size();
  if (op.period_us == 0) op.period_us = 10000;
  if (op.batch_pages == 0) op.batch_pages = 64;
  if (op.pool_pages == 0) op.pool_pages = (8u << 20) / m.page_size;
  op.pool_pages = std::clamp<uint32_t>(op.pool_pages, 16, 4096);
  m.clock_name = rb.clock().trace_clock_name();
  m.type_hi = Impl::kFirstEventId + static_cast<uint32_t>(registered_events().size());
  m.tsc2nsec = rb.clock().kind() == ClockKind::kCounter;
  m.st.events_read.assign(m.ncpus, 0);
  m.st.events_published.assign(m.ncpus, 0);
  m.st.events_lost.assign(m.ncpus, 0);
  m.st.pages_lost.assign(m.ncpus, 0);
  switch (op.publish) {
    case PublishKind::kTmpFile: m.publish_how = AtomicHow::kTmpFile; break;
    case PublishKind::kPrivate: m.publish_how = AtomicHow::kPrivate; break;
    default: m.publish_how = atomic_how_from_env(AtomicHow::kAuto); break;
  }

  // Directories and the session's lock (held for the consumer's life).
  int rc = make_dirs(op.dir, 0755);
  if (rc) return fail(-rc, "consumer: cannot create " + op.dir + ": " + std::strerror(-rc));
  rc = make_dirs(op.dir + "/spool", 0700);
  if (rc) return fail(-rc, "consumer: cannot create " + op.dir + "/spool: " + std::strerror(-rc));
  m.session = session_name();
  for (int k = 0;; k++) {
    std::string s = k ? m.session + "." + std::to_string(k) : m.session;
    m.spool = op.dir + "/spool/" + s;
    if (mkdir(m.spool.c_str(), 0700) == 0) {
      m.session = s;
      break;
    }
    if (errno != EEXIST || k > 1000)
      return fail(errno, "consumer: cannot create " + m.spool + ": " + std::strerror(errno));
  }
  m.lock_fd = open((m.spool + "/lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (m.lock_fd < 0 || flock(m.lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    rmdir(m.spool.c_str());
    return fail(e, "consumer: cannot lock " + m.spool + "/lock: " + std::strerror(e));
  }
  m.cmdline_fd =
      open((m.spool + "/cmdlines").c_str(), O_CREAT | O_APPEND | O_WRONLY | O_CLOEXEC, 0600);

  // The I/O backend.
  IoKind want = IoKind::kIoUring;
  if (op.backend == IoBackendKind::kPwritev) want = IoKind::kPwritev;
  if (op.backend == IoBackendKind::kAuto) {
    if (const char* e = std::getenv("RBTRACE_IO_BACKEND")) {
      if (std::strcmp(e, "pwritev") == 0) want = IoKind::kPwritev;
      else if (std::strcmp(e, "io_uring") != 0)
        m.st.backend_note = std::string("RBTRACE_IO_BACKEND=") + e + " is not io_uring or pwritev";
    }
  }
  std::string why;
  m.io = make_io_backend(want, op.pool_pages, op.io_uring_vectored, &why);
  if (want == IoKind::kIoUring && m.io->kind() != IoKind::kIoUring) {
    m.st.backend_note = why;
    m.message("rbtrace consumer: " + why);
  }
  m.st.backend = m.io->name();

  // The pool, allocated once. Registered with io_uring together with every
  // page of the ring: trading moves pages between the two, so the set of
  // addresses read_page hands back is this union (a page from elsewhere,
  // e.g. after a snapshot swap, goes out as a non-fixed write).
  m.slots.resize(op.pool_pages);
  for (uint32_t i = 0; i < op.pool_pages; i++) {
    m.slots[i].page = rb.alloc_read_page();
    if (!m.slots[i].page) {
      for (auto& s : m.slots) RingBuffer::free_read_page(s.page);
      return fail(ENOMEM, "consumer: cannot allocate the page pool");
    }
    m.free_slots.push_back(op.pool_pages - 1 - i);
  }
  if (m.io->kind() == IoKind::kIoUring && !op.io_uring_vectored) {
    std::vector<void*> bufs;
    for (auto& s : m.slots) bufs.push_back(s.page);
    std::vector<void*> ring;
    for (uint32_t c = 0; c < m.ncpus; c++) {
      detail::CpuBuffer* cb = rb.cpu_buffer(c);
      m.registered_cbs.push_back(cb);
      for (uint32_t p = 0; cb && p <= cb->npages; p++) ring.push_back(cb->pages[p].page);
    }
    constexpr size_t kMaxRegistered = 16384;  // IORING_MAX_REG_BUFFERS
    if (bufs.size() + ring.size() <= kMaxRegistered) bufs.insert(bufs.end(), ring.begin(), ring.end());
    std::string rwhy;
    m.st.registered_buffers = m.io->register_buffers(bufs, m.page_size, &rwhy);
    m.fixed_active = m.st.registered_buffers > 0;
    if (m.st.registered_buffers == 0 && !rwhy.empty()) {
      if (!m.st.backend_note.empty()) m.st.backend_note += "; ";
      m.st.backend_note += rwhy;
    }
  }

  if (op.watermark_pages > 0) {
    m.waker = get_waker();
    m.waker->watermark.store(op.watermark_pages, std::memory_order_relaxed);
    m.waker->sleeping.store(0, std::memory_order_relaxed);
    m.sleep_word = &m.waker->sleeping;
    rb.set_page_hook(&m.waker->hook);
  }

  Impl* ip = impl.get();
  m.pub_thread = std::thread([ip] { ip->publish_loop(); });
  m.drain_thread = std::thread([ip] { ip->drain_loop(); });
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

}  // namespace rbtrace
