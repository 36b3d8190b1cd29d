// snapshot.cc - the snapshot engine: swap (S1..S5), dump the swapped-out
// buffer into a memfd spool, write a trace.dat, reset the buffer as the
// spare. See rbtrace/snapshot.h.
#include "rbtrace/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

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
}

namespace {

std::string thread_comm(int32_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string comm;
  if (!std::getline(f, comm) || comm.empty()) comm = "<...>";
  return comm;
}

int write_all_at(int fd, const void* p, size_t n, off_t off) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = pwrite(fd, c, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    c += w;
    n -= static_cast<size_t>(w);
    off += w;
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

  // The spool: one anonymous file, each CPU's pages one contiguous run.
  const int spool = memfd_create("rbtrace-snapshot", MFD_CLOEXEC);
  if (spool < 0) {
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
  in.cpus.resize(ncpus);
  for (uint32_t c = 0; c < ncpus; c++) {
    in.cpus[c].fd = spool;
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

  DataPage* page = live_->alloc_read_page();
  if (!page) {
    close(spool);
    if (err) *err = "out of memory";
    return -ENOMEM;
  }
  int rc = 0;
  int first_swap_error = 0;
  bool any = false;
  uint64_t off = 0;
  // A recorded ring (a Consumer reads it): the swapped-out buffer's pages
  // go to the snapshot file and back to the recording (hand_back), and the
  // recording reads nothing of the CPU between the swap and the hand-back,
  // so its pages stay in order.
  const bool recorded = live_->recorded();
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
    in.cpus[c].offset = off;
    int n;
    while ((n = spare_->read_page(&page, c, false)) > 0) {
      rc = write_all_at(spool, page, page_size, static_cast<off_t>(off));
      if (rc != 0) {
        if (err) *err = std::string("writing the snapshot spool: ") + std::strerror(-rc);
        break;
      }
      off += page_size;
      sc.pages++;
      sc.bytes += static_cast<uint64_t>(n);
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
    // The refusals the swaps of this CPU caused since the last snapshot,
    // counted in the live slot (never in a buffer being dumped): they go
    // with the generation swapped out, into its file and the totals.
    sc.stats.disabled += live_->take_swap_refused(c);
    in.cpus[c].stats = cpu_stats_text(sc.stats);  // the consumer's text: one meaning of each key
    retired_[c] += sc.stats;
    spare_->reset_cpu(c);  // serves as the spare again
    r.cpus.push_back(sc);
  }
  live_->free_read_page(page);
  if (rc == 0 && !any) rc = first_swap_error;
  if (rc == 0) {
    in.cpus[0].stats += ring_stats_text(live_->no_cpu_dropped());  // no CPU's (tracedat.h)
    std::string werr;
    rc = write_trace_dat(out_fd, in, &werr);
    if (rc != 0 && err) *err = werr;
  } else if (err && err->empty()) {
    *err = std::string("swap failed: ") + std::strerror(-rc);
  }
  close(spool);
  if (rc == 0) taken_++;
  r.total_time = SteadyClock::now() - t0;
  return rc;
}

}  // namespace rbtrace
