// consumer_benchmark.cc - BM_Consumer_Drain/<backend>/<fs>/<page>: drain
// throughput of the consumer, io_uring beside pwritev (its baseline), 4 KiB
// and 64 KiB pages, to tmpfs and to a disk-backed file system.
//
// Backends: io_uring (one IORING_OP_WRITE_FIXED per page), io_uring+vec
// (ConsumerOptions::io_uring_vectored: consecutive pages as one WRITEV),
// pwritev. File systems: tmpfs ($RBTRACE_BENCH_TMPFS, default /dev/shm) and
// disk ($RBTRACE_BENCH_DISK, default /var/tmp); see bench_io.h.
//
// Method. One iteration is one round: writers (two threads, one per CPU
// slot of a 2-CPU ring) fill a producer/consumer ring until it is full
// ($RBTRACE_BENCH_CONSUMER_MIB, default 48 MiB; 64-byte payloads), then
// stop. Then a Consumer is created on the full ring and drains it to spool
// files (no rotation, no fsync). The drain rate is measured between 10 % and
// 90 % of the pages written (polling the stats every 200 us), so start-up
// (buffer registration) and the tail are excluded; with nothing writing
// meanwhile, it is the consumer's own speed. That window is the iteration's
// manual time, so bytes_per_second and the GB/s counter are the drain rate.
// CPU per GB: the drain thread's RUSAGE_THREAD time over the whole drain
// (drain_cpu_s/GB), and the whole process's (RUSAGE_SELF: includes
// io_uring's io-wq workers, which do the buffered-write copies for
// io_uring) over the same span (proc_cpu_s/GB). Then stop() publishes the
// segment (write_trace_dat copies it into the trace.dat, fsync'ed):
// publish_GB/s. Files are removed after each round. Buffered I/O: "disk"
// means the page cache of a disk file system, written back by the kernel,
// as the consumer really runs.
//
// One round per repetition (Iterations(1)): the repetitions (5 by default,
// interleaved with the other benchmarks) are the rounds, and the tables use
// their median. An io_uring row on a system without io_uring (the consumer
// would fall back to pwritev) is skipped with the reason, as is a directory
// that cannot be used.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "bench_io.h"
#include "rbtrace/consumer.h"
#include "rbtrace/ring_buffer.h"

namespace rbtrace::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kCpus = 2;
constexpr uint32_t kPayload = 64;

uint64_t self_cpu_ns() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const auto us = [](const timeval& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1000000ull + static_cast<uint64_t>(t.tv_usec);
  };
  return (us(ru.ru_utime) + us(ru.ru_stime)) * 1000ull;
}

struct Backend {
  const char* name;
  IoBackendKind kind;
  bool vectored;
};

// Sums over the rounds of one benchmark run.
struct Totals {
  double window_bytes = 0, window_secs = 0;  // 10..90 %
  double bytes = 0;                          // whole drain
  double drain_cpu_ns = 0, self_cpu_ns = 0;
  double pub_bytes = 0, pub_secs = 0;
  uint64_t fixed = 0, pages = 0;
  std::string note;
};

// Fills a ring of `ring_bytes` with 64-byte events from two writer threads
// until it is full (producer/consumer mode refuses the rest).
std::unique_ptr<RingBuffer> full_ring(uint32_t page, uint64_t ring_bytes, std::string* why) {
  Options o;
  o.ncpus = kCpus;
  o.page_size = page;
  o.pages_per_cpu = static_cast<uint32_t>(ring_bytes / page / kCpus);
  o.mode = Mode::kProducerConsumer;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  if (!rb) {
    *why = "RingBuffer::create: " + err.message;
    return nullptr;
  }
  std::vector<std::thread> ws;
  for (uint32_t c = 0; c < kCpus; c++) {
    ws.emplace_back([&rb, c] {
      rb->bind_thread(c);
      unsigned char p[kPayload];
      std::memset(p, static_cast<int>(c + 1), sizeof p);
      uint64_t fails = 0;
      for (uint64_t s = 0; fails < 1000; s++) {
        std::memcpy(p, &s, sizeof s);
        if (rb->write(p, kPayload) != 0) fails++;
      }
      rb->unbind_thread();
    });
  }
  for (auto& t : ws) t.join();
  return rb;
}

// One round in `dir` (a fresh directory per round, removed after it).
// False with *why when the round could not be measured.
bool drain_round(const std::string& dir, const Backend& be, uint32_t page, uint64_t ring_bytes,
                 Totals* tot, std::string* why) {
  auto rb = full_ring(page, ring_bytes, why);
  if (!rb) return false;
  // Full pages in the ring now (the last, partial one per CPU is drained by
  // stop(), outside the measurement).
  const uint64_t target = static_cast<uint64_t>(kCpus) * rb->options().pages_per_cpu;

  std::mutex mu;
  std::vector<std::string> messages;
  ConsumerOptions co;
  co.dir = dir;
  co.backend = be.kind;
  co.io_uring_vectored = be.vectored;
  co.segment_bytes = 0;
  co.fsync = true;  // for the publish step only
  co.period_us = 1000;
  co.on_message = [&mu, &messages](const std::string& m) {
    std::lock_guard<std::mutex> g(mu);
    messages.push_back(m);
  };

  const uint64_t cpu0 = self_cpu_ns();
  const auto t0 = Clock::now();
  Error err;
  auto cons = Consumer::create(*rb, co, &err);
  if (!cons) {
    *why = "Consumer::create in " + dir + ": " + err.message;
    return false;
  }
  ConsumerStats s = cons->stats();
  if (be.kind == IoBackendKind::kIoUring && std::strcmp(s.backend, "io_uring") != 0) {
    *why = "io_uring is not available here (" + s.backend_note +
           "): the consumer would fall back to " + s.backend;
    return false;
  }
  Clock::time_point t10{}, t90{};
  uint64_t p10 = 0, p90 = 0;
  for (;;) {
    s = cons->stats();
    const auto now = Clock::now();
    if (!p10 && s.pages_written * 10 >= target) {
      p10 = s.pages_written;
      t10 = now;
    }
    if (!p90 && s.pages_written * 10 >= target * 9) {
      p90 = s.pages_written;
      t90 = now;
    }
    if (s.pages_failed || s.write_errors) break;
    if (s.pages_written + 2 * kCpus >= target && cons->stats().pages_read == s.pages_written)
      break;
    if (now - t0 > std::chrono::seconds(60)) {
      *why = "the drain did not finish in 60 s";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const uint64_t cpu1 = self_cpu_ns();
  const auto t1 = Clock::now();
  s = cons->stats();
  const auto tp = Clock::now();
  cons->stop();
  const auto tq = Clock::now();
  const ConsumerStats fs = cons->stats();
  if (fs.pages_failed || fs.write_errors || fs.segments_failed) {
    std::lock_guard<std::mutex> g(mu);
    *why = "writes failed in " + dir + " (" + std::strerror(fs.last_error) + ")" +
           (messages.empty() ? std::string() : ": " + messages.front());
    return false;
  }
  if (p90 > p10 && t90 > t10) {
    tot->window_bytes += static_cast<double>(p90 - p10) * page;
    tot->window_secs += std::chrono::duration<double>(t90 - t10).count();
  } else {
    // A ring so small (smoke run) that one poll saw both marks: the whole
    // drain instead.
    tot->window_bytes += static_cast<double>(s.bytes_written);
    tot->window_secs += std::chrono::duration<double>(t1 - t0).count();
  }
  tot->bytes += static_cast<double>(s.bytes_written);
  tot->drain_cpu_ns += static_cast<double>(s.drain_cpu_ns);
  tot->self_cpu_ns += static_cast<double>(cpu1 - cpu0);
  tot->pub_bytes += static_cast<double>(fs.bytes_written);
  tot->pub_secs += std::chrono::duration<double>(tq - tp).count();
  tot->fixed += fs.fixed_writes;
  tot->pages += fs.pages_written;
  tot->note = fs.backend_note;
  return true;
}

void BM_Consumer_Drain(benchmark::State& state, Backend be, bool tmpfs, uint32_t page) {
  const IoConfig& cfg = io_config();
  const uint64_t ring_bytes = cfg.consumer_mib << 20;
  // The spool files, then the trace.dat published from them.
  ScratchDir scratch(tmpfs ? "RBTRACE_BENCH_TMPFS" : "RBTRACE_BENCH_DISK",
                     tmpfs ? cfg.tmpfs : cfg.disk, ring_bytes * 5 / 2 + (16u << 20),
                     "(or RBTRACE_BENCH_CONSUMER_MIB lower)");
  if (!scratch.ok()) {
    state.SkipWithError(scratch.why().c_str());
    return;
  }
  Totals tot;
  int round = 0;
  for (auto _ : state) {
    std::string why;
    const double secs_before = tot.window_secs;
    const std::string dir = scratch.path() + "/round-" + std::to_string(round++);
    const bool ok = drain_round(dir, be, page, ring_bytes, &tot, &why);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (!ok) {
      state.SkipWithError(why.c_str());
      break;
    }
    state.SetIterationTime(tot.window_secs - secs_before);
  }
  if (tot.window_secs <= 0) return;
  const double gb = tot.bytes / 1e9;
  state.SetBytesProcessed(static_cast<int64_t>(tot.window_bytes));
  state.counters["GB/s"] = tot.window_bytes / tot.window_secs / 1e9;
  state.counters["drain_cpu_s/GB"] = tot.drain_cpu_ns / 1e9 / gb;
  state.counters["proc_cpu_s/GB"] = tot.self_cpu_ns / 1e9 / gb;
  state.counters["publish_GB/s"] = tot.pub_secs > 0 ? tot.pub_bytes / tot.pub_secs / 1e9 : 0;
  state.counters["fixed_%"] =
      tot.pages ? 100.0 * static_cast<double>(tot.fixed) / static_cast<double>(tot.pages) : 0.0;
  state.counters["ring_MiB"] = static_cast<double>(cfg.consumer_mib);
  state.SetLabel(scratch.label() + (tot.note.empty() ? "" : "; " + tot.note));
}

[[maybe_unused]] const bool registered = [] {
  static constexpr Backend kBackends[] = {
      {"io_uring", IoBackendKind::kIoUring, false},
      {"io_uring+vec", IoBackendKind::kIoUring, true},
      {"pwritev", IoBackendKind::kPwritev, false},
  };
  for (const bool tmpfs : {true, false}) {
    // 4 KiB to 256 KiB pages (bench/plot.py draws the rate against the
    // page size; 4 KiB and 64 KiB are the rows the tables quote).
    for (const uint32_t page : {4096u, 16384u, 65536u, 262144u}) {
      for (const Backend& be : kBackends) {
        const std::string name = std::string("BM_Consumer_Drain/") + be.name + "/" +
                                 (tmpfs ? "tmpfs" : "disk") + "/" + std::to_string(page);
        common(benchmark::RegisterBenchmark(name.c_str(), BM_Consumer_Drain, be, tmpfs, page)
                   ->Iterations(1)
                   ->UseManualTime()
                   ->Unit(benchmark::kMillisecond));
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
