// drainer.cc - the drain thread: read_page -> io_uring/pwritev -> spool
// files (consumer_impl.h, Drainer). See docs/DESIGN.md, "Consumer", Drain
// thread, Segments, Disk full.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "consumer_impl.h"
#include "rbtrace/event.h"
#include "rbtrace/tracedat.h"
#include "spool.h"

namespace rbtrace::detail {

namespace {

std::string errstr(int e) {
  std::string s = std::strerror(e);
  switch (e) {
    case ENOSPC: s += " (ENOSPC)"; break;
    case EFBIG: s += " (EFBIG)"; break;
    case EDQUOT: s += " (EDQUOT)"; break;
    case EMFILE:  // one spool file per CPU per segment being written
      s += " (EMFILE: the recording needs a file per CPU; raise RLIMIT_NOFILE, ulimit -n)";
      break;
    default: break;
  }
  return s;
}

}  // namespace

// relaxed (both): a test installs it before it starts the consumer (the
// thread's creation orders it) and removes it after.
std::atomic<void (*)()> g_write_hook{nullptr};
std::atomic<bool (*)(bool)> g_reap_hook{nullptr};

// ---- create's steps ------------------------------------------------------------

// The I/O backend: the option, else RBTRACE_IO_BACKEND, else io_uring,
// falling back to pwritev when io_uring cannot be set up.
void Drainer::init_backend() {
  const ConsumerOptions& op = ctx.opts;
  IoKind want = IoKind::kIoUring;
  if (op.backend == IoBackendKind::kPwritev) want = IoKind::kPwritev;
  if (op.backend == IoBackendKind::kAuto) {
    if (const char* e = std::getenv("RBTRACE_IO_BACKEND")) {
      if (std::strcmp(e, "pwritev") == 0) want = IoKind::kPwritev;
      else if (std::strcmp(e, "io_uring") != 0)
        sh.add_note(std::string("RBTRACE_IO_BACKEND=") + e + " is not io_uring or pwritev");
    }
  }
  std::string why;
  IoBackendOptions bo;
  bo.depth = op.pool_pages;
  io = make_io_backend(want, bo, &why);
  if (want == IoKind::kIoUring && io->kind() != IoKind::kIoUring) {
    sh.add_note(why);
    ctx.message("rbtrace consumer: " + why);
  }
  sh.st.backend = io->name();
}

// The pool, allocated once. 0 or an errno (err set).
int Drainer::init_pool(Error* err) {
  const uint32_t n = ctx.opts.pool_pages;
  slots.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    slots[i].page = ctx.rb.alloc_read_page();
    if (!slots[i].page) {
      for (auto& s : slots) ctx.rb.free_read_page(s.page);
      return set_error(err, ENOMEM, "consumer: cannot allocate the page pool");
    }
    free_slots.push_back(n - 1 - i);
  }
  return 0;
}

// The pool is registered with io_uring together with every page of the
// ring: trading moves pages between the two, so the set of addresses
// read_page hands back is this union (a page from elsewhere, e.g. after a
// snapshot swap, goes out as a non-fixed write).
void Drainer::register_fixed() {
  if (io->kind() != IoKind::kIoUring || ctx.opts.io_uring_vectored) return;
  std::vector<void*> bufs;
  for (auto& s : slots) bufs.push_back(s.page);
  std::vector<void*> ring;
  swaps_at_register = ctx.rb.swaps();
  for (uint32_t c = 0; c < ncpus; c++) {
    detail::CpuBuffer* cb = ctx.rb.cpu_buffer(c);
    for (uint32_t p = 0; cb && p <= cb->npages; p++) ring.push_back(cb->pages[p].page);
  }
  constexpr size_t kMaxRegistered = 16384;  // IORING_MAX_REG_BUFFERS
  if (bufs.size() + ring.size() <= kMaxRegistered) bufs.insert(bufs.end(), ring.begin(), ring.end());
  std::string rwhy;
  ConsumerStats& st = sh.st;
  st.registered_buffers = io->register_buffers(bufs, ctx.page_size, &rwhy);
  fixed_active = st.registered_buffers > 0;
  if (st.registered_buffers == 0 && !rwhy.empty()) {
    if (!st.backend_note.empty()) st.backend_note += "; ";
    st.backend_note += rwhy;
  }
}

// The watermark wake-up, if asked for: the ring's page hook.
void Drainer::init_waker() {
  if (ctx.opts.watermark_pages == 0) return;
  waker = get_waker();
  waker->watermark.store(ctx.opts.watermark_pages, std::memory_order_relaxed);
  waker->sleeping.store(0, std::memory_order_relaxed);
  sleep_word = &waker->sleeping;
  ctx.rb.set_page_hook(&waker->hook);
}

// After the thread ended (the page hook already removed).
void Drainer::release() {
  io.reset();
  for (Slot& s : slots) ctx.rb.free_read_page(s.page);
  slots.clear();
  if (waker) {
    put_waker(waker);
    waker = nullptr;
    sleep_word = &own_sleep;
  }
  if (cmdlines.fd >= 0) close(cmdlines.fd);
  cmdlines.fd = -1;
}

void Drainer::wake() {
  sleep_word->store(0, std::memory_order_relaxed);
  futex_wake(sleep_word);
}

// ---- segments ------------------------------------------------------------------

// Writes segment `seq`'s sidecar (ConsumerContext::write_meta). 0 or
// -errno (write_failed called).
int Drainer::write_meta(const SpoolMeta& m, uint64_t seq) {
  std::string what;
  const int rc = ctx.write_meta(m, seq, &what);
  return rc == 0 ? 0 : write_failed(nullptr, 0, -rc, what);
}

// Opens a new segment: writes its sidecar before any page. 0 or -errno.
int Drainer::open_segment() {
  auto s = std::make_unique<Segment>(next_seq++, ncpus, ctx.page_size);
  char num[32];
  std::snprintf(num, sizeof num, "%06" PRIu64, s->seq);
  s->public_name = ctx.opts.prefix + "-" + ctx.session + "-" + num + ".dat";
  SpoolMeta m;
  m.session = ctx.session;
  m.segment = s->seq;
  m.public_name = s->public_name;
  m.page_size = ctx.page_size;
  m.ncpus = ncpus;
  m.clock = ctx.clock_name;
  m.tsc2nsec = ctx.tsc2nsec;
  if (ctx.tsc2nsec) m.calibration = counter_calibration();
  m.events = registered_event_formats();
  s->per_cpu_files = ctx.per_cpu_files;
  if (s->per_cpu_files) {
    m.version = 1;  // a file per CPU, made with its first page
  } else {
    s->layout = segment_layout(m.events);
    m.header_room = s->layout.header_room;
    m.cpu_region = s->layout.cpu_region;
  }
  if (const int rc = write_meta(m, s->seq); rc != 0) return rc;
  if (!s->per_cpu_files) {
    // The segment file, after its sidecar (recover finds it through that),
    // with the published trace's mode: it becomes that trace.
    const std::string path = ctx.seg_path(s->seq, ".dat");
    s->fd = open_spool_file(path, static_cast<mode_t>(ctx.opts.file_mode & 0777));
    if (s->fd < 0) {
      unlink(ctx.seg_path(s->seq, ".meta").c_str());
      return write_failed(nullptr, 0, -s->fd, "create " + path);
    }
  }
  type_hi = kFirstEventId + static_cast<uint32_t>(m.events.size());
  s->events = m.events;
  s->meta = std::move(m);
  cur = std::move(s);
  return 0;
}

// The ring made slots since we last looked (ring_buffer.h, ncpus()): the
// stats and the open segment take the new CPUs, before any page of theirs
// is taken. The open segment's sidecar is rewritten with the new count (a
// crash recovery looks for that many CPU files); if that fails, the
// segment is closed with the old count, which none of the new CPUs' pages
// are in.
void Drainer::grow() {
  uint32_t n = 0;
  {
    std::lock_guard<std::mutex> g(sh.ring_mu);
    if (sh.ring_gone) return;
    n = ctx.rb.ncpus();
  }
  if (n <= ncpus) return;
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.events_read.resize(n, 0);
    sh.st.events_published.resize(n, 0);
    sh.st.events_lost.resize(n, 0);
    sh.st.pages_lost.resize(n, 0);
  }
  ncpus = n;
  if (!cur) return;
  SpoolMeta m = cur->meta;
  m.ncpus = n;
  if (write_meta(m, cur->seq) != 0) {
    close_current();  // its sidecar still says the old count, which is true
    return;
  }
  cur->meta = std::move(m);
  cur->cpus.resize(n);
}

// Event types registered since the open segment began (a library loaded
// later, an object whose initializers ran after the consumer started:
// rbtrace::autostart starts before main): the segment takes their formats
// (ids only grow, so the new list is a superset), its sidecar first, so
// that the trace it becomes, or recover, decodes their events. Called for
// every page taken before the page goes into the segment (take_page): a
// page holds only events of types registered before it was read, so that
// one place covers every record a segment gets. A header that outgrew the segment's room is published by copying. If the
// sidecar cannot be rewritten, the segment is closed with the formats it
// has, and the next one starts with all of them.
void Drainer::grow_events() {
  if (!cur || registered_event_count() <= cur->events.size()) return;
  SpoolMeta m = cur->meta;
  m.events = registered_event_formats();
  if (m.events.size() <= cur->events.size()) return;
  if (write_meta(m, cur->seq) != 0) {
    cur->closed = true;
    closing.push_back(std::move(cur));
    return;
  }
  type_hi = kFirstEventId + static_cast<uint32_t>(m.events.size());
  cur->events = m.events;
  cur->meta = std::move(m);
}

// The layout of a new segment's file (spool.h): room for the header of
// the trace it becomes (its formats, every CPU's stats, a generous
// cmdlines section; a larger header is published by copying), then a
// region per CPU the ring can ever have. A region holds the most a CPU can
// put in one segment (segment_bytes and a page), and never more than
// 4 TiB / max_cpus (offsets stay within every file system's file size; a
// CPU that fills its region ends the segment). Holes cost nothing.
// Creates a spool file (O_EXCL, never through a link), O_DIRECT when
// asked for and the file system takes it: set with fcntl once the file
// exists (an open with O_DIRECT that the file system refuses has created
// the file already). The fd or -errno.
int Drainer::open_spool_file(const std::string& path, mode_t mode) {
  const int fd = open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return -errno;
  if (ctx.opts.direct_io && !direct_refused) {
    const int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) {
      direct_refused = true;
      sh.add_note("O_DIRECT refused by the file system of " + ctx.opts.dir + " (" +
                  std::strerror(errno) + "): the spool goes through the page cache");
    }
  }
  return fd;
}

// CPU `cpu`'s own spool file in a per-CPU-files segment, made with its
// first page. The fd or -errno.
int Drainer::cpu_fd(Segment* s, uint32_t cpu) {
  CpuRun& r = s->cpus[cpu];
  if (r.fd < 0) r.fd = open_spool_file(ctx.seg_path(s->seq, (".cpu" + std::to_string(cpu)).c_str()), 0600);
  return r.fd;
}

SegmentLayout Drainer::segment_layout(const std::vector<EventFormat>& events) const {
  const uint64_t page = ctx.page_size;
  const uint32_t max_cpus = ctx.max_cpus;  // not the ring's: ring_mu is not held here
  TraceDatInput est;
  est.page_size = ctx.page_size;
  est.clock = ctx.clock_name;
  est.tsc2nsec = ctx.tsc2nsec;
  est.events = events;
  est.pid = ctx.pid;
  est.process = ctx.process;
  est.cpus.resize(max_cpus);
  constexpr uint64_t kCmdlinesRoom = 256 << 10;
  const uint64_t stats = max_cpus * (cpu_stats_text_bound() + 128);  // + the segment's lines
  SegmentLayout l;
  l.header_room = (trace_dat_header_size(est) + stats + kCmdlinesRoom + page - 1) / page * page;
  l.cpu_region = ctx.cpu_region;
  return l;
}

// Called for a write (or segment set-up) that failed: counts it, starts
// a back-off (no pages are taken meanwhile: the ring counts what it
// drops), and reports once per episode. Returns -e.
int Drainer::write_failed(Segment* s, uint32_t cpu, int e, const std::string& what) {
  if (s) {
    s->fail(cpu, e);
    if (s == cur.get()) close_current();
  }
  blocked_until = SteadyClock::now() + backoff.next();
  bool report = false;
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.write_errors++;
    sh.st.last_error = e;
    if (!sh.flush_err) sh.flush_err = -e;
    if (!sh.episode_reported) report = sh.episode_reported = true;
  }
  if (report)
    ctx.message("rbtrace consumer: cannot write to " + ctx.opts.dir + " (" + what +
                "): " + errstr(e) + "; pages are dropped and counted until writing works again");
  return -e;
}

void Drainer::close_current() {
  if (!cur) return;
  cur->closed = true;
  closing.push_back(std::move(cur));
}

// Hands finished segments (closed, nothing in flight) to the publish
// thread, in the order they were opened: a segment whose writes complete
// before its predecessor's (io_uring completes out of order, across files
// too) waits for it, so segments are published in order (a directory
// watcher never sees segment N+1 before N; published() is in segment
// order).
void Drainer::hand_over_finished() {
  for (std::unique_ptr<Segment>& s : take_finished_in_order(&closing)) finish(std::move(s), 0);
}

void Drainer::finish(std::unique_ptr<Segment> s, uint64_t gen) {
  if (s) {
    // Losses of this segment's failed writes: everything after the first
    // failure of a CPU (good_end) is not in the file.
    std::lock_guard<std::mutex> g(sh.mu);
    for (uint32_t c = 0; c < s->cpus.size(); c++) {
      const CpuRun& r = s->cpus[c];
      sh.st.events_lost[c] += r.lost_events();
      sh.st.pages_lost[c] += r.lost_pages(ctx.page_size);
    }
  }
  if (s) {
    s->stats.resize(s->cpus.size());
    std::lock_guard<std::mutex> g(sh.ring_mu);
    for (uint32_t c = 0; c < s->cpus.size(); c++)
      s->stats[c] = (sh.ring_gone ? std::string() : cpu_stats_text(ctx.rb.stats(c))) +
                    s->stats_text(c);
    if (!sh.ring_gone) s->stats[0] += ring_stats_text(ctx.rb.no_cpu_dropped());  // no CPU's (tracedat.h)
    s->cmdlines = cmdlines.seen();
  }
  if (!s) s = std::make_unique<Segment>();  // a bare flush marker (seq 0)
  s->flush_gen = gen;
  std::lock_guard<std::mutex> g(sh.mu);
  sh.queue.push_back(std::move(s));
  sh.cv.notify_all();
}

// ---- pages ---------------------------------------------------------------------

// A page taken but not written (no segment, no spool file): counted lost.
void Drainer::page_lost(uint32_t cpu, uint64_t events) {
  std::lock_guard<std::mutex> g(sh.mu);
  sh.st.pages_failed++;
  sh.st.events_lost[cpu] += events;
  sh.st.pages_lost[cpu]++;
}

// A page taken from the ring (slot `i`, `len` bytes of events): counts
// it and queues its write.
void Drainer::take_page(uint32_t i, uint32_t cpu) {
  Slot& sl = slots[i];
  uint64_t events = 0;
  page_tids.clear();
  // Types registered since the last look (the page may hold their records:
  // read_page's acquire made them visible): the open segment takes their
  // formats, sidecar first, before this page goes into it; and their
  // records name their writers for the cmdlines. One relaxed load.
  if (const uint32_t hi = kFirstEventId + registered_event_count(); hi > type_hi) {
    grow_events();
    type_hi = hi;
  }
  // The page came from read_page: well formed by construction; the walk
  // counts events and finds writer tids for the cmdlines.
  (void)check_page(reinterpret_cast<const unsigned char*>(sl.page), ctx.page_size, &events,
                   &page_tids, kFirstEventId, type_hi);
  if (!page_tids.empty()) cmdlines.note(&page_tids);
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.pages_read++;
    sh.st.events_read[cpu] += events;
  }
  if (!cur && open_segment() != 0) {
    page_lost(cpu, events);
    free_slots.push_back(i);
    return;
  }
  if (cur->region_full(cpu)) {
    // This CPU's region of the segment file is full: a new segment.
    close_current();
    if (open_segment() != 0) {
      page_lost(cpu, events);
      free_slots.push_back(i);
      return;
    }
  }
  Segment* s = cur.get();
  const int fd = s->per_cpu_files ? cpu_fd(s, cpu) : s->fd;
  if (fd < 0) {
    page_lost(cpu, events);
    free_slots.push_back(i);
    s->cpus[cpu].fd = -1;
    write_failed(s, cpu, -fd, "create a spool file");
    return;
  }
  sl.seg = s;
  sl.cpu = cpu;
  sl.events = events;
  sl.off = s->submit(cpu, events);
  if (void (*h)() = g_write_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h)) h();
  io->prep_write(fd, sl.page, ctx.page_size, s->file_offset(cpu, sl.off), i);
  if (ctx.opts.segment_bytes && s->bytes >= ctx.opts.segment_bytes) close_current();
}

// A short write (a full disk, a file size limit): writes the rest to learn
// whether it fails and why. Returns the page size or -errno.
int64_t Drainer::finish_short_write(const Slot& sl, int64_t res) {
  const uint32_t page_size = ctx.page_size;
  const int fd = sl.seg->fd_of(sl.cpu);
  const uint64_t at = sl.seg->file_offset(sl.cpu, sl.off);
  uint64_t done = static_cast<uint64_t>(res);
  // The rest through the page cache: an O_DIRECT write of a piece of a
  // page would be refused for its alignment.
  drop_o_direct(fd);
  while (done < page_size) {
    ssize_t w = pwrite(fd, reinterpret_cast<const char*>(sl.page) + done, page_size - done,
                       static_cast<off_t>(at + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      res = w < 0 ? -errno : -EIO;
      break;
    }
    done += static_cast<uint64_t>(w);
  }
  if (done == page_size) res = page_size;
  return res;
}

void Drainer::complete(const IoCompletion& c) {
  const uint32_t i = static_cast<uint32_t>(c.tag);
  const uint32_t page_size = ctx.page_size;
  Slot& sl = slots[i];
  Segment* s = sl.seg;
  int64_t res = c.res;
  if (res == -EINVAL && ctx.opts.direct_io) {
    // O_DIRECT refused at write time (an alignment the device wants and
    // the pages do not have): through the page cache, from now on.
    res = finish_short_write(sl, 0);
    if (!direct_refused) {
      direct_refused = true;
      sh.add_note("O_DIRECT writes refused by the file system of " + ctx.opts.dir +
                  " (EINVAL): the spool goes through the page cache");
    }
  }
  if (res >= 0 && res < page_size) res = finish_short_write(sl, res);
  const bool ok = res == page_size;
  s->completed(sl.cpu, sl.off, sl.events, ok);
  sl.seg = nullptr;
  free_slots.push_back(i);
  if (ok) {
    {
      std::lock_guard<std::mutex> g(sh.mu);
      sh.st.pages_written++;
      sh.st.bytes_written += page_size;
    }
    backoff.reset();
  } else {
    {
      std::lock_guard<std::mutex> g(sh.mu);
      sh.st.pages_failed++;
    }
    write_failed(s, sl.cpu, static_cast<int>(-res),
                 "write spool " +
                     (s->per_cpu_files
                          ? ctx.seg_path(s->seq, (".cpu" + std::to_string(sl.cpu)).c_str())
                          : ctx.seg_path(s->seq, ".dat") + ", CPU " + std::to_string(sl.cpu)));
  }
}

size_t Drainer::reap(int64_t wait_ns) {
  comps.clear();
  // relaxed: see g_write_hook.
  if (bool (*h)(bool) = g_reap_hook.load(std::memory_order_relaxed); RBTRACE_UNLIKELY(h)) {
    if (h(in_flush)) return 0;  // as if nothing had completed within wait_ns
  }
  size_t n = io->reap(&comps, wait_ns);
  for (const IoCompletion& c : comps) complete(c);
  if (n) {
    hand_over_finished();
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.fixed_writes = io->fixed_writes();
  }
  return n;
}

// At the first snapshot swap seen, on any CPU, fixed buffers stop for
// good (see swaps_at_register): the swap may have taken registered pages out
// of our circle, traded into any CPU buffer, new slots' included.
void Drainer::check_swap() {
  if (!fixed_active || ctx.rb.swaps() == swaps_at_register) return;
  io->disable_fixed();
  fixed_active = false;
  sh.add_note("CPU buffers were swapped (snapshot): fixed buffers no longer used");
}

// Pages a periodic pass takes from one CPU: batch_pages, but no more than
// leaves the pool room for every CPU to have writes in flight (with large
// pages and a small pool one CPU's batch would hold the whole pool, and
// io_uring would write one file at a time).
uint32_t Drainer::per_pass() const {
  const uint32_t share = ctx.opts.pool_pages / (2 * std::max<uint32_t>(ncpus, 1));
  return std::max<uint32_t>(1, std::min(ctx.opts.batch_pages, share));
}

// Takes pages from every CPU, round robin, up to batch_pages each.
// Returns the pages taken.
uint64_t Drainer::pass(bool full, uint32_t per_cpu, bool flushing) {
  grow();
  uint64_t taken = 0;
  bool gone = false;  // stop() gave up on us: the ring is not ours to touch
  for (uint32_t k = 0; k < ncpus && !gone; k++) {
    const uint32_t cpu = (rr + k) % ncpus;
    for (uint32_t b = 0; b < per_cpu; b++) {
      if (free_slots.empty()) {
        // Pool exhausted: every page is in flight. Push and harvest. A
        // flush waits for a page to come back however slow the disk is
        // (every page is in flight, so one will); a periodic pass gives
        // up after one period and comes back later.
        io->submit();
        do {
          if (reap(static_cast<int64_t>(ctx.opts.period_us) * 1000) == 0 && !flushing) break;
        } while (flushing && free_slots.empty());
        if (free_slots.empty()) break;
      }
      const uint32_t i = free_slots.back();
      int rc = 0;
      {
        std::lock_guard<std::mutex> g(sh.ring_mu);
        gone = sh.ring_gone;  // stop() gave up on us (Impl::give_up)
        if (gone) break;      // what was taken is still submitted below
        check_swap();
        rc = ctx.rb.read_page(&slots[i].page, cpu, full);
      }
      if (rc <= 0) break;
      free_slots.pop_back();
      take_page(i, cpu);
      taken++;
      if (ctx.opts.slow_us_per_page) {
        io->submit();
        usleep(ctx.opts.slow_us_per_page);
      }
    }
  }
  rr = (rr + 1) % ncpus;
  io->submit();
  if (taken) {
    const uint64_t cpu_ns = thread_cpu_ns();
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.drain_cpu_ns = cpu_ns;
  }
  return taken;
}

void Drainer::wait_all_io() {
  while (io->in_flight() > 0) {
    io->submit();
    reap(100 * 1000 * 1000);
  }
  hand_over_finished();
  const uint64_t cpu_ns = thread_cpu_ns();
  std::lock_guard<std::mutex> g(sh.mu);
  sh.st.drain_cpu_ns = cpu_ns;
}

// ---- the loop ------------------------------------------------------------------

// Flush generation `gen`: everything committed, partial pages included:
// full pages first, then what the writers are still on. A CPU holds at
// most pages_per_cpu + 1 pages, plus the pages snapshots handed back and
// we have not read yet (RingBuffer::hand_back; read first), so this bound
// covers everything committed when the flush began even if writers keep
// going.
void Drainer::do_flush(uint64_t gen) {
  in_flush = true;
  uint32_t handed_back = 0;
  grow();
  uint32_t bound = 0;
  {
    std::lock_guard<std::mutex> g(sh.ring_mu);
    if (!sh.ring_gone) {
      for (uint32_t c = 0; c < ncpus; c++)
        handed_back = std::max(handed_back, ctx.rb.handed_back_pages(c));
      bound = ctx.rb.options().pages_per_cpu + 2 + handed_back;
    }
  }
  pass(true, bound, /*flushing=*/true);
  pass(false, bound, /*flushing=*/true);
  wait_all_io();
  close_current();
  hand_over_finished();
  finish(nullptr, gen);
  in_flush = false;
  std::lock_guard<std::mutex> g(sh.mu);
  sh.flush_taken = gen;
}

// Nothing to take: sleep until the timer (or the watermark, or a
// flush/stop) wakes us.
void Drainer::sleep() {
  cmdlines.scan_if_due();
  if (waker) {
    for (uint32_t c = 0; c < ncpus; c++) waker->filled[c].store(0, std::memory_order_relaxed);
  }
  sleep_word->store(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(sh.mu);
    if (sh.flush_req > sh.flush_taken || sh.drain_stop) {
      sleep_word->store(0, std::memory_order_relaxed);
      return;
    }
  }
  futex_wait(sleep_word, 1, static_cast<int64_t>(ctx.opts.period_us) * 1000);
  sleep_word->store(0, std::memory_order_relaxed);
}

void Drainer::run() {
  for (;;) {
    reap(0);
    uint64_t want_flush;
    bool stop;
    {
      std::lock_guard<std::mutex> g(sh.mu);
      want_flush = sh.flush_req > sh.flush_taken ? sh.flush_req : 0;
      stop = sh.drain_stop;
    }
    const auto now = SteadyClock::now();
    if (want_flush) {
      do_flush(want_flush);
      continue;
    }
    if (stop) break;
    if (cur && ctx.opts.segment_seconds &&
        now - cur->started >= std::chrono::seconds(ctx.opts.segment_seconds)) {
      close_current();
      hand_over_finished();
    }
    uint64_t taken = 0;
    const SteadyClock::time_point pub_block{
        SteadyClock::duration(sh.pub_blocked_until.load(std::memory_order_relaxed))};
    if (now >= blocked_until && now >= pub_block) taken = pass(true, per_pass());
    if (taken > 0) continue;
    // Nothing to take: sleep until the timer (or the watermark, or a
    // flush/stop) wakes us. Writes in flight are harvested on the way.
    if (io->in_flight() > 0) {
      reap(static_cast<int64_t>(ctx.opts.period_us) * 1000);
      continue;
    }
    sleep();
  }
  // Also after stop() gave up on us (the ring untouched since): what was
  // taken reaches the spool, whole, before the lock can be released.
  wait_all_io();
  close_current();
  hand_over_finished();
  // The publisher ends once it has published what we handed over (stop()
  // waits for both threads; it publishes nothing itself).
  std::lock_guard<std::mutex> g(sh.mu);
  sh.pub_stop = true;
  sh.cv.notify_all();
}

}  // namespace rbtrace::detail

void rbtrace::set_consumer_write_hook(void (*hook)()) {
  detail::g_write_hook.store(hook, std::memory_order_relaxed);  // relaxed: see g_write_hook
}

void rbtrace::set_consumer_reap_hook(bool (*hook)(bool in_flush)) {
  detail::g_reap_hook.store(hook, std::memory_order_relaxed);  // relaxed: see g_write_hook
}
