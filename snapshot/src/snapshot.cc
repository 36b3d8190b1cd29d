// snapshot.cc - the snapshot engine: swap (S1..S5), dump the swapped-out
// buffer into the trace.dat (straight into an empty file, else through a
// memfd spool), reset the buffer as the spare. See rbtrace/snapshot.h.
#include "rbtrace/snapshot.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

#include "rbtrace/tracedat.h"

namespace rbtrace {

std::unique_ptr<Snapshot> Snapshot::create(const Options& opts, Error* err) {
  std::unique_ptr<RingBuffer> live = RingBuffer::create(opts, err);
  if (!live) return nullptr;
  std::unique_ptr<Snapshot> s = attach(*live, err);
  if (s) s->owned_live_ = std::move(live);
  return s;
}

std::unique_ptr<Snapshot> Snapshot::attach(RingBuffer& live, Error* err) {
  std::unique_ptr<Snapshot> s(new Snapshot());
  s->live_ = &live;
  s->spare_ = RingBuffer::create(live.options(), err);
  if (!s->spare_) return nullptr;
  s->retired_.resize(live.max_cpus());  // every slot the ring may make
  // The doorbell's handler now, not at the first swap (from the control
  // server's thread, long after the application set up its signals): an
  // application that later replaces it is seen at each swap (swap.h).
  // -EBUSY: installed already, for another signal.
  if (const int rc = install_swap_doorbell(0); rc != 0 && rc != -EBUSY) {
    if (err) {
      err->code = -rc;
      err->message = std::string("cannot install the snapshot doorbell: ") + std::strerror(-rc);
    }
    return nullptr;
  }
  return s;
}

Snapshot::~Snapshot() {
  if (live_) swap_release_mailboxes(*live_);
  for (DataPage* p : batch_) spare_->free_read_page(p);
}

namespace {

std::string thread_comm(int32_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string comm;
  if (!std::getline(f, comm) || comm.empty()) comm = "<...>";
  return comm;
}

// Writes pages[0..n) (page_size bytes each) at `off` with pwritev, whole;
// EINTR and short writes go on where they stopped.
int write_pages_at(int fd, DataPage* const* pages, uint32_t n, uint32_t page_size, off_t off) {
  std::vector<iovec> iov(n);
  for (uint32_t i = 0; i < n; i++) iov[i] = {pages[i], page_size};
  size_t first = 0;
  while (first < iov.size()) {
    const int cnt = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const ssize_t w = pwritev(fd, &iov[first], cnt, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (w == 0) return -EIO;
    off += w;
    size_t left = static_cast<size_t>(w);
    while (left > 0 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {  // a page cut short: the rest of it first
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return 0;
}

}  // namespace

CpuStats Snapshot::total_stats(uint32_t cpu) const {
  std::lock_guard<std::mutex> g(mu_);
  CpuStats s = live_->stats(cpu);
  if (cpu < retired_.size()) s += retired_[cpu];
  return s;
}

uint64_t Snapshot::snapshots_taken() const {
  std::lock_guard<std::mutex> g(mu_);
  return taken_;
}

int Snapshot::take(int out_fd, int cpu, std::string* err, SnapshotResult* res,
                   std::chrono::milliseconds swap_timeout) {
  using SteadyClock = std::chrono::steady_clock;
  SnapshotResult local;
  SnapshotResult& r = res ? *res : local;
  r = SnapshotResult{};
  const auto t0 = SteadyClock::now();
  const uint32_t ncpus = live_->ncpus();
  if (cpu >= 0 && static_cast<uint32_t>(cpu) >= ncpus) {
    if (err) *err = "no CPU " + std::to_string(cpu) + " (the buffer has " + std::to_string(ncpus) + ")";
    return -EINVAL;
  }
  std::lock_guard<std::mutex> g(mu_);
  const uint32_t first = cpu < 0 ? 0 : static_cast<uint32_t>(cpu);
  const uint32_t last = cpu < 0 ? ncpus : first + 1;
  const uint32_t page_size = live_->page_size();

  // A recorded ring (a Consumer reads it): the swapped-out buffer's pages
  // go to the snapshot file and back to the recording (hand_back), and the
  // recording reads nothing of the CPU between the swap and the hand-back,
  // so its pages stay in order.
  const bool recorded = live_->recorded();
  // Where the pages go. An empty regular file at position 0, not in append
  // mode (pwrite would append), and a ring nobody records: straight into
  // out_fd at their final offsets (after room for the header, whose size
  // is known but for the stats' digits: counted at their most), the header
  // written last (write_trace_dat_header). Otherwise into a memfd spool,
  // each CPU's pages one contiguous run, which write_trace_dat copies after
  // the header (a pipe, a file not empty, or pages the recording reads back
  // from the spool).
  struct stat ost;
  const int ofl = fcntl(out_fd, F_GETFL);
  const bool direct = !recorded && fstat(out_fd, &ost) == 0 && S_ISREG(ost.st_mode) &&
                      ost.st_size == 0 && ofl >= 0 && (ofl & O_APPEND) == 0 &&
                      lseek(out_fd, 0, SEEK_CUR) == 0;
  const int spool = direct ? -1 : memfd_create("rbtrace-snapshot", MFD_CLOEXEC);
  if (!direct && spool < 0) {
    const int e = errno;
    if (err) *err = std::string("memfd_create: ") + std::strerror(e);
    return -e;
  }
  TraceDatInput in;
  in.page_size = page_size;
  in.clock = live_->clock().trace_clock_name();
  in.tsc2nsec = live_->clock().kind() == ClockKind::kCounter;
  if (in.tsc2nsec) in.calibration = counter_calibration();
  in.events = registered_event_formats();
  in.cmdlines.emplace_back(static_cast<int32_t>(getpid()), thread_comm(getpid()));
  in.pid = static_cast<int32_t>(getpid());
  in.process = in.cmdlines.back().second;
  in.cpus.resize(ncpus);
  for (uint32_t c = 0; c < ncpus; c++) {
    in.cpus[c].fd = spool;  // or in place in out_fd (below)
    const int32_t owner = live_->cpu_owner(c);
    if (owner > 0 && owner != getpid()) in.cmdlines.emplace_back(owner, thread_comm(owner));
  }
  {
    // Every thread that claimed a slot, as named then (the newest record of
    // a tid wins); a live owner keeps its name from /proc above.
    std::vector<RingBuffer::ThreadName> names;
    uint64_t cursor = 0;
    (void)live_->read_thread_names(&cursor, &names);
    std::map<int32_t, std::string> at_claim;
    for (const RingBuffer::ThreadName& t : names)
      if (t.comm[0] != '\0') {
        std::string c(t.comm);
        for (char& ch : c)
          if (ch == '\n') ch = '_';  // a thread may name itself anything
        at_claim[t.tid] = std::move(c);
      }
    for (const auto& [tid, comm] : at_claim) {
      bool known = false;
      for (const auto& c : in.cmdlines) known = known || c.first == tid;
      if (!known) in.cmdlines.emplace_back(tid, comm);
    }
  }

  // The batch: pages to trade with the swapped-out buffer, written with
  // one pwritev each time it is full (2 MiB, at most 512 pages, no more
  // than a CPU buffer holds).
  const uint32_t batch_want = std::min<uint32_t>(
      std::clamp<uint32_t>((2u << 20) / page_size, 1, 512), live_->options().pages_per_cpu + 1);
  while (batch_.size() < batch_want) {
    DataPage* p = spare_->alloc_read_page();
    if (!p) break;  // fewer pages, more writes
    batch_.push_back(p);
  }
  if (batch_.empty()) {
    if (spool >= 0) close(spool);
    if (err) *err = "out of memory";
    return -ENOMEM;
  }
  int rc = 0;
  int first_swap_error = 0;
  bool any = false;
  const int dump_fd = direct ? out_fd : spool;
  uint64_t off = 0;
  if (direct) {
    TraceDatInput most = in;
    for (TraceDatCpu& c : most.cpus) c.stats.assign(cpu_stats_text_bound(), 'x');
    off = (trace_dat_header_size(most) + page_size - 1) & ~static_cast<uint64_t>(page_size - 1);
  }
  const uint64_t data_start = off;
  for (uint32_t c = first; c < last && rc == 0; c++) {
    SnapshotCpu sc;
    sc.cpu = c;
    struct Hold {
      RingBuffer* rb;
      uint32_t cpu;
      ~Hold() {
        if (rb) rb->release_reads(cpu);
      }
    } hold{recorded ? live_ : nullptr, c};
    if (recorded) live_->hold_reads(c);
    if (!live_->cpu_buffer(c)) {
      // A slot made but not mapped yet (its claimer is mapping it): nothing
      // written to it, nothing to take.
      r.cpus.push_back(sc);
      continue;
    }
    const auto s0 = SteadyClock::now();
    sc.swap_result = swap_cpu_marshalled(*live_, *spare_, c, swap_timeout, &sc.trace);  // S1..S5
    sc.swap_time = SteadyClock::now() - s0;
    if (sc.swap_result != 0) {
      if (!first_swap_error) first_swap_error = sc.swap_result;
      r.cpus.push_back(sc);
      continue;
    }
    any = true;
    // The swapped-out buffer is spare_'s CPU c now: no writer can reach it
    // (its owner's next write loads the live slot afresh; one interrupted
    // between W1 and W2 fails at W3). Read every page, partial ones too.
    in.cpus[c].fd = direct ? -1 : spool;
    in.cpus[c].offset = off;
    uint64_t batch_bytes = 0;  // events in the batch's pages
    for (uint32_t k = 0;;) {
      // Trade the batch's pages for the buffer's (no copy), then write them
      // with one pwritev; counted once written.
      const int n = spare_->read_page(&batch_[k], c, false);
      if (n > 0) {
        batch_bytes += static_cast<uint64_t>(n);
        if (++k < batch_.size()) continue;
      }
      if (k > 0) {
        rc = write_pages_at(dump_fd, batch_.data(), k, page_size, static_cast<off_t>(off));
        if (rc != 0) {
          if (err)
            *err = std::string(direct ? "writing the snapshot: " : "writing the snapshot spool: ") +
                   std::strerror(-rc);
          break;
        }
        off += static_cast<uint64_t>(k) * page_size;
        sc.pages += k;
        sc.bytes += batch_bytes;
        batch_bytes = 0;
        k = 0;
      }
      if (n <= 0) break;
    }
    in.cpus[c].size = off - in.cpus[c].offset;
    if (recorded && sc.pages > 0) {
      const int hb = live_->hand_back(c, spool, in.cpus[c].offset, sc.pages);
      if (hb != 0 && rc == 0) {
        rc = hb;
        if (err) *err = std::string("handing the pages back to the recording: ") + std::strerror(-hb);
      }
    }
    sc.stats = spare_->stats(c);
    // The W1/W3 refusals of this CPU since the last snapshot (a disable's
    // or a swap's), counted in the live slot (never in a buffer being
    // dumped): they go with the generation swapped out, into its file and
    // the totals. Those made after this swap, while the dump ran, go with
    // it too (the totals stay exact; the split between generations is
    // that of the take, not of the swap).
    sc.stats.disabled += live_->take_slot_refused(c);
    in.cpus[c].stats = cpu_stats_text(sc.stats);  // the consumer's text: one meaning of each key
    retired_[c] += sc.stats;
    spare_->reset_cpu(c);  // serves as the spare again
    r.cpus.push_back(sc);
  }
  if (rc == 0 && !any) rc = first_swap_error;
  if (rc == 0) {
    in.cpus[0].stats += ring_stats_text(live_->no_cpu_dropped());  // no CPU's (tracedat.h)
    std::string werr;
    if (direct) {
      // A CPU with no pages (not asked for, not mapped, its swap failed)
      // points where the data before it ends: offsets stay ascending.
      uint64_t at = data_start;
      for (TraceDatCpu& t : in.cpus) {
        if (t.size == 0) t.offset = at;
        at = t.offset + t.size;
      }
      // The file ends at the last CPU's data (or at the room for the
      // header, if no CPU had any: every offset is within the file).
      rc = ftruncate(out_fd, static_cast<off_t>(off)) == 0 ? 0 : -errno;
      if (rc != 0) werr = std::string("sizing the snapshot: ") + std::strerror(-rc);
      if (rc == 0) rc = write_trace_dat_header(out_fd, in, &werr);
      if (rc == 0 && lseek(out_fd, static_cast<off_t>(off), SEEK_SET) < 0) rc = -errno;
    } else {
      rc = write_trace_dat(out_fd, in, &werr);
    }
    if (rc != 0 && err) *err = werr;
  } else if (err && err->empty()) {
    *err = std::string("swap failed: ") + std::strerror(-rc);
  }
  if (direct && rc != 0) {
    // Nothing half written stays behind: the file is empty again, as the
    // caller gave it (best effort; the error is the one above).
    (void)!ftruncate(out_fd, 0);
    (void)lseek(out_fd, 0, SEEK_SET);
  }
  if (spool >= 0) close(spool);
  if (rc == 0) taken_++;
  r.total_time = SteadyClock::now() - t0;
  return rc;
}

}  // namespace rbtrace
