// rbtrace-demo: several writer threads and a timer signal handler trace
// typed events for a few seconds while a reader thread drains them; at the
// end it prints per-CPU counters, checks the accounting, and shows a decoded
// sample of events.
//
//   rbtrace-demo [--seconds N] [--threads N] [--signal-hz N]
//                [--page-size B] [--pages N] [--mode overwrite|pc]
//                [--clock counter|mono|...] [--out DIR]
//
// With --out DIR the events go to disk through rbtrace::Consumer (io_uring,
// or pwritev) as trace.dat files published in DIR, and the totals printed
// at exit are those of the files. [--control]
//
// --control starts the embedded control server (rbtrace::snapshot), so that
// `rbtrace list`, `rbtrace stat PID` and `rbtrace snapshot PID` reach it.
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"

RBTRACE_EVENT(demo, work, ((uint64_t, seq))((uint32_t, worker))((int32_t, value))((rbtrace::str, phase)))
RBTRACE_EVENT(demo, tick, ((uint64_t, seq))((uint32_t, worker)))

namespace {

std::unique_ptr<rbtrace::RingBuffer> g_rb;
std::atomic<bool> g_stop{false};
thread_local uint64_t t_tick_seq = 0;
thread_local uint32_t t_worker = 0;
std::atomic<uint64_t> g_ticks{0};

void on_tick(int) {
  // A signal handler is an interrupt of the owner thread: it traces on the
  // owner's CPU, nesting inside whatever write it interrupted.
  int saved = errno;
  if (rbtrace_events::demo_tick::emit(*g_rb, ++t_tick_seq, t_worker) == 0)
    g_ticks.fetch_add(1, std::memory_order_relaxed);
  errno = saved;
}

struct Args {
  double seconds = 3;
  unsigned threads = 3;
  unsigned signal_hz = 10000;
  unsigned blocking = 0;  // --blocking-workers N: the first N block every signal
  bool control = false;
  std::string out;  // --out DIR: record to disk through the consumer
  uint32_t page_size = 4096;
  uint32_t pages = 64;
  rbtrace::Mode mode = rbtrace::Mode::kProducerConsumer;
  rbtrace::ClockKind clock = rbtrace::ClockKind::kCounter;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "rbtrace-demo: %s\nusage: rbtrace-demo [--seconds N] [--threads N] "
               "[--signal-hz N] [--page-size B] [--pages N] [--mode overwrite|pc] "
               "[--clock counter|mono|mono_raw|boot|realtime] [--control] [--out DIR] "
               "[--blocking-workers N]\n",
               msg);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") usage("help");
    if (k == "--control") {
      a.control = true;
      continue;
    }
    if (i + 1 >= argc) usage(("missing value for " + k).c_str());
    std::string v = argv[++i];
    char* end = nullptr;
    auto num = [&]() {
      errno = 0;
      double d = std::strtod(v.c_str(), &end);
      if (errno || *end || d < 0) usage(("bad number for " + k + ": " + v).c_str());
      return d;
    };
    if (k == "--seconds") a.seconds = num();
    else if (k == "--threads") a.threads = static_cast<unsigned>(num());
    else if (k == "--signal-hz") a.signal_hz = static_cast<unsigned>(num());
    else if (k == "--blocking-workers") a.blocking = static_cast<unsigned>(num());
    else if (k == "--page-size") a.page_size = static_cast<uint32_t>(num());
    else if (k == "--pages") a.pages = static_cast<uint32_t>(num());
    else if (k == "--out") a.out = v;
    else if (k == "--mode") {
      if (v == "overwrite") a.mode = rbtrace::Mode::kOverwrite;
      else if (v == "pc") a.mode = rbtrace::Mode::kProducerConsumer;
      else usage(("unknown mode " + v).c_str());
    } else if (k == "--clock") {
      if (!rbtrace::parse_clock_kind(v, &a.clock)) usage(("unknown clock " + v).c_str());
    } else {
      usage(("unknown option " + k).c_str());
    }
  }
  if (a.threads == 0 || a.threads > 64) usage("--threads must be 1..64");
  if (a.blocking > a.threads) usage("--blocking-workers must be at most --threads");
  return a;
}

struct WorkerResult {
  uint64_t attempts = 0;
  uint64_t ok = 0;
};

void worker(unsigned id, const Args& a, WorkerResult* res) {
  t_worker = id;
  const std::string name = "demo-worker-" + std::to_string(id);
  pthread_setname_np(pthread_self(), name.c_str());
  const bool blocking = id < a.blocking;
  if (blocking) {
    // As a server's worker that takes its signals with sigwait elsewhere:
    // every signal blocked, the snapshot's doorbell included.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
  }
  if (g_rb->bind_thread(id) != 0) {
    std::fprintf(stderr, "rbtrace-demo: cannot bind CPU %u\n", id);
    return;
  }
  timer_t timer{};
  bool have_timer = false;
  if (a.signal_hz > 0 && !blocking) {
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGRTMIN + 1;
    sev._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0) {
      itimerspec its{};
      long ns = 1000000000L / a.signal_hz;
      its.it_interval.tv_nsec = ns;
      its.it_value.tv_nsec = ns;
      timer_settime(timer, 0, &its, nullptr);
      have_timer = true;
    }
  }
  static const char* const kPhases[] = {"parse", "plan", "execute", "commit"};
  uint64_t seq = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 256; i++) {
      seq++;
      res->attempts++;
      if (rbtrace_events::demo_work::emit(*g_rb, seq, id, static_cast<int32_t>(seq % 1000) - 500,
                                          kPhases[seq % 4]) == 0)
        res->ok++;
    }
    // A little pause keeps a producer/consumer buffer from overflowing
    // forever on a busy machine; the reader runs concurrently.
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (have_timer) timer_delete(timer);
  // Block the tick signal before leaving, so no handler runs after the
  // thread gave its CPU back.
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGRTMIN + 1);
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  rbtrace::Options o;
  o.ncpus = a.threads;
  o.page_size = a.page_size;
  o.pages_per_cpu = a.pages;
  o.mode = a.mode;
  o.clock = a.clock;
  rbtrace::Error err;
  g_rb = rbtrace::RingBuffer::create(o, &err);
  if (!g_rb) {
    std::fprintf(stderr, "rbtrace-demo: %s\n", err.message.c_str());
    return 1;
  }
  std::unique_ptr<rbtrace::Snapshot> snap;
  std::unique_ptr<rbtrace::control::Server> server;
  if (a.control) {
    snap = rbtrace::Snapshot::attach(*g_rb, &err);
    if (snap) server = rbtrace::control::Server::start(*snap, {}, &err);
    if (!server) {
      std::fprintf(stderr, "rbtrace-demo: control server: %s\n", err.message.c_str());
      return 1;
    }
    std::printf("rbtrace-demo: control socket %s (pid %d)\n", server->socket_path().c_str(),
                static_cast<int>(getpid()));
    std::fflush(stdout);
  }
  struct sigaction sa {};
  sa.sa_handler = on_tick;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN + 1, &sa, nullptr);

  std::printf("rbtrace-demo: %u writer threads, timer signal %u Hz, %s mode, %u x %u-byte pages per CPU, clock %s\n",
              a.threads, a.signal_hz, a.mode == rbtrace::Mode::kOverwrite ? "overwrite" : "producer/consumer",
              a.pages, a.page_size, g_rb->clock().trace_clock_name());

  std::vector<WorkerResult> results(a.threads);
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < a.threads; i++) workers.emplace_back(worker, i, std::cref(a), &results[i]);

  // With --out the consumer is the reader: it drains pages to disk.
  std::unique_ptr<rbtrace::Consumer> consumer;
  if (!a.out.empty()) {
    rbtrace::ConsumerOptions co;
    co.dir = a.out;
    co.segment_bytes = 16ull << 20;
    co.period_us = 2000;
    co.watermark_pages = a.pages / 4 ? a.pages / 4 : 1;  // a writer wakes it at 1/4 full
    consumer = rbtrace::Consumer::create(*g_rb, co, &err);
    if (!consumer) {
      std::fprintf(stderr, "rbtrace-demo: consumer: %s\n", err.message.c_str());
      return 1;
    }
    std::printf("rbtrace-demo: recording to %s (%s)\n", a.out.c_str(), consumer->stats().backend);
  }

  // The reader: drain whole pages as they fill, decode and keep a sample.
  std::vector<uint64_t> decoded(a.threads, 0);
  std::vector<std::string> sample;
  bool bad = false;
  rbtrace::DataPage* page = g_rb->alloc_read_page();
  auto drain = [&](bool full) {
    for (unsigned c = 0; c < a.threads; c++) {
      int n;
      while ((n = g_rb->read_page(&page, c, full)) > 0) {
        rbtrace::PageWalker w(page->data, static_cast<uint32_t>(page->commit & rbtrace::kCommitMask),
                              page->time_stamp);
        rbtrace::PageEvent ev;
        while (w.next(&ev)) {
          decoded[c]++;
          if (sample.size() < 12 && decoded[c] % 5000 == 1) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "cpu %u %14.6f ms  ", c,
                          static_cast<double>(g_rb->clock().to_ns(ev.ts) % 1000000000000ULL) / 1e6);
            sample.push_back(buf + rbtrace::describe_record(ev.data, ev.length));
          }
        }
        if (w.error()) bad = true;
      }
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!consumer) drain(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  g_stop.store(true);
  for (auto& t : workers) t.join();
  rbtrace::ConsumerStats cs;
  if (consumer) {
    const int rc = consumer->stop();  // drains the rest, publishes the last file
    if (rc != 0) std::fprintf(stderr, "rbtrace-demo: consumer: %s\n", std::strerror(-rc));
    cs = consumer->stats();
    // What reached the files stands for "decoded" in the accounting below,
    // with what the consumer lost on the way (disk full) counted beside it.
    for (unsigned c = 0; c < a.threads; c++) decoded[c] = cs.events_published[c] + cs.events_lost[c];
  } else {
    drain(false);  // the rest, partial pages included
  }
  g_rb->free_read_page(page);

  std::printf("\n%-4s %10s %10s %10s %10s %10s %8s %8s %8s\n", "cpu", "written", "read", "overrun",
              "dropped", "c_overrun", "nested", "disabled", "decoded");
  bool exact = !bad;
  uint64_t total_read = 0;
  for (unsigned c = 0; c < a.threads; c++) {
    // With snapshots taken, the counters of every buffer generation (a
    // snapshot swaps the counters out with the buffer and reads it itself).
    const bool swapped = snap && snap->snapshots_taken() > 0;
    rbtrace::CpuStats s = swapped ? snap->total_stats(c) : g_rb->stats(c);
    std::printf("%-4u %10llu %10llu %10llu %10llu %10llu %8llu %8llu %8llu\n", c,
                (unsigned long long)s.entries, (unsigned long long)s.read,
                (unsigned long long)s.overrun, (unsigned long long)s.dropped,
                (unsigned long long)s.commit_overrun, (unsigned long long)s.nested_dropped,
                (unsigned long long)s.disabled, (unsigned long long)decoded[c]);
    total_read += s.read;
    if (s.entries != s.read + s.overrun || (!swapped && s.read != decoded[c])) exact = false;
  }
  uint64_t attempts = 0, ok = 0;
  for (auto& r : results) {
    attempts += r.attempts;
    ok += r.ok;
  }
  std::printf("\nworker events: %llu attempted, %llu written; signal-handler events: %llu\n",
              (unsigned long long)attempts, (unsigned long long)ok,
              (unsigned long long)g_ticks.load());
  std::printf("refused for want of a CPU slot (all CPUs, in no CPU's counters): %llu\n",
              (unsigned long long)g_rb->no_cpu_dropped());
  std::printf("accounting (written == read + overrun, read == decoded, per CPU): %s\n",
              exact ? "exact" : "MISMATCH");
  std::printf("\nsample of decoded events:\n");
  for (auto& s : sample) std::printf("  %s\n", s.c_str());
  std::printf("\n%llu events read in %.1f s\n", (unsigned long long)total_read, a.seconds);
  if (consumer) {
    uint64_t in_files = 0, lost_io = 0, lost_ring = 0;
    for (unsigned c = 0; c < a.threads; c++) {
      in_files += cs.events_published[c];
      lost_io += cs.events_lost[c];
      lost_ring += g_rb->stats(c).lost();
    }
    const auto files = consumer->published();
    std::printf("\nconsumer (%s): %llu events written to %zu files in %s, %llu pages (%.1f MiB) "
                "written, %llu segments published\n",
                cs.backend, (unsigned long long)in_files, files.size(), a.out.c_str(),
                (unsigned long long)cs.pages_written, static_cast<double>(cs.bytes_written) / 1048576.0,
                (unsigned long long)cs.segments_published);
    std::printf("losses: %llu events dropped/overwritten in the ring, %llu lost by the consumer "
                "(%llu page writes failed, %llu segments not published)\n",
                (unsigned long long)lost_ring, (unsigned long long)lost_io,
                (unsigned long long)cs.pages_failed, (unsigned long long)cs.segments_failed);
    for (const auto& f : files) std::printf("  %s\n", f.c_str());
  }
  return exact ? 0 : 1;
}
