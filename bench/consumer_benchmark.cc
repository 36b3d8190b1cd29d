// consumer_benchmark.cc - BM_Consumer_Drain/<backend>/<fs>/<page>: drain
// throughput of the consumer, io_uring beside pwritev (its baseline), 4 KiB
// to 256 KiB pages, to tmpfs and to a disk-backed file system; beside them
// the practical limit, BM_Consumer_Drain/seqcopy/<fs>/65536; and
// BM_Consumer_DrainCpus/<backend>/<fs>/<ncpus>, the drain against the
// number of CPU slots of the ring (1, 2, 4; 64 KiB pages).
//
// Backends: io_uring (the default: consecutive pages of one file in a pass
// as one IORING_OP_WRITEV, a lone page as WRITE_FIXED, every request punted
// to io-wq), io_uring+vec (ConsumerOptions::io_uring_vectored: the same
// without fixed buffers), pwritev (the baseline). File systems: tmpfs
// ($RBTRACE_BENCH_TMPFS, default /dev/shm), disk ($RBTRACE_BENCH_DISK,
// default /var/tmp; page cache) and disk+direct (the same directory with
// ConsumerOptions::direct_io, O_DIRECT); see bench_io.h.
//
// seqcopy: what one thread gets from the file system: the bytes of one
// drain round (the ring's size) written with sequential 64 KiB write()
// calls from a buffer of that size (memory, as the ring is) to one file in
// a fresh directory of the same file system (O_DIRECT for disk+direct),
// the whole write timed (drain_cpu_s/GB is that thread's CPU). The issue's
// targets: drain >= 0.9 x seqcopy of the same fs.
//
// Method. One iteration is one round: writers (two threads, one per CPU
// slot of a 2-CPU ring) fill a producer/consumer ring until it is full
// ($RBTRACE_BENCH_CONSUMER_MIB, default 48 MiB; 64-byte payloads), then
// stop. Then (after warm_file, untimed: see there) a Consumer is created on
// the full ring and drains it to its spool (no rotation, no fsync). The drain rate is measured between 10 % and
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
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

constexpr uint32_t kCpus = 2;  // CPU slots of BM_Consumer_Drain's ring
constexpr uint32_t kPayload = 64;

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

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
  double fs_write_bytes = 0;  // /proc/self/io write_bytes over the round
  double trace_bytes = 0;     // bytes of the published trace.dat files
  uint64_t segments = 0, in_place = 0;
  uint64_t fixed = 0, pages = 0;
  std::string note;
};

// Before a measured write: `bytes` written to a scratch file in `dir` in
// `chunk`-byte write() calls, then the file removed. On a VM whose balloon
// reports free memory to the host (virtio-balloon free page reporting,
// here at order 5 = 128 KiB and up), memory freed for a while is no longer
// backed by the host, and the first write into it takes a host fault per
// page: a page-cache write that lands there runs at 0.3-0.5 GB/s instead
// of 3-5, whichever backend writes. Which free blocks the page cache gets
// depends on the folio size, i.e. on the size of the write (ext4 allocates
// large folios): so the scratch file is written with the chunk the round
// itself uses (the pages of one CPU in a pass: 64 pages, up to 4 MiB). Its
// folios, freed at unlink, are what the round's page cache then gets, as a
// consumer that has been running for a while would. tmpfs (order-0 pages)
// does not need it; it costs nothing there either. Not timed.
void warm_file(const std::string& dir, size_t chunk, uint64_t bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  void* m = mmap(nullptr, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return;
  std::memset(m, 1, chunk);
  const std::string p = dir + "/warm";
  const int fd = open(p.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    for (uint64_t done = 0; done < bytes; done += chunk)
      if (write(fd, m, chunk) <= 0) break;
    close(fd);
    unlink(p.c_str());
  }
  munmap(m, chunk);
}

// The process's write_bytes from /proc/self/io: bytes it caused to be sent
// to the storage layer (counted when a page-cache page is dirtied, or when
// an O_DIRECT write is issued; io-wq workers are threads of the process).
// 0 on tmpfs, whose pages are never written back. -1 when unreadable.
double proc_write_bytes() {
  FILE* f = std::fopen("/proc/self/io", "r");
  if (!f) return -1;
  char line[128];
  double v = -1;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long n = 0;
    if (std::sscanf(line, "write_bytes: %llu", &n) == 1) v = static_cast<double>(n);
  }
  std::fclose(f);
  return v;
}

// Where a round writes: tmpfs, disk (page cache), disk+direct (O_DIRECT).
enum class Fs { kTmpfs, kDisk, kDiskDirect };
const char* fs_name(Fs fs) {
  return fs == Fs::kTmpfs ? "tmpfs" : fs == Fs::kDisk ? "disk" : "disk+direct";
}

// Fills a ring of `ring_bytes` with 64-byte events from one writer thread
// per CPU slot until it is full (producer/consumer mode refuses the rest).
std::unique_ptr<RingBuffer> full_ring(uint32_t page, uint64_t ring_bytes, uint32_t ncpus,
                                      std::string* why) {
  Options o;
  o.ncpus = ncpus;
  o.page_size = page;
  o.pages_per_cpu = static_cast<uint32_t>(ring_bytes / page / ncpus);
  o.mode = Mode::kProducerConsumer;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  if (!rb) {
    *why = "RingBuffer::create: " + err.message;
    return nullptr;
  }
  std::vector<std::thread> ws;
  for (uint32_t c = 0; c < ncpus; c++) {
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
bool drain_round(const std::string& dir, const Backend& be, Fs fs, uint32_t page,
                 uint64_t ring_bytes, uint32_t ncpus, Totals* tot, std::string* why) {
  auto rb = full_ring(page, ring_bytes, ncpus, why);
  if (!rb) return false;
  // Full pages in the ring now (the last, partial one per CPU is drained by
  // stop(), outside the measurement).
  const uint64_t target = static_cast<uint64_t>(ncpus) * rb->options().pages_per_cpu;

  std::mutex mu;
  std::vector<std::string> messages;
  ConsumerOptions co;
  co.dir = dir;
  co.backend = be.kind;
  co.io_uring_vectored = be.vectored;
  co.direct_io = fs == Fs::kDiskDirect;
  co.segment_bytes = 0;
  co.fsync = true;  // for the publish step only
  co.period_us = 1000;
  co.on_message = [&mu, &messages](const std::string& m) {
    std::lock_guard<std::mutex> g(mu);
    messages.push_back(m);
  };

  if (!co.direct_io) warm_file(dir, std::min<size_t>(size_t{64} * page, 4u << 20), ring_bytes);
  const double wb0 = proc_write_bytes();
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
    if (s.pages_written + 2 * ncpus >= target && cons->stats().pages_read == s.pages_written)
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
  const double wb1 = proc_write_bytes();
  const ConsumerStats fin = cons->stats();
  if (fin.pages_failed || fin.write_errors || fin.segments_failed) {
    std::lock_guard<std::mutex> g(mu);
    *why = "writes failed in " + dir + " (" + std::strerror(fin.last_error) + ")" +
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
  tot->pub_bytes += static_cast<double>(fin.bytes_written);
  tot->pub_secs += std::chrono::duration<double>(tq - tp).count();
  if (wb0 >= 0 && wb1 >= wb0) tot->fs_write_bytes += wb1 - wb0;
  for (const std::string& f : cons->published()) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(f, ec);
    if (!ec) tot->trace_bytes += static_cast<double>(n);
  }
  tot->segments += fin.segments_published;
  tot->in_place += fin.segments_in_place;
  tot->fixed += fin.fixed_writes;
  tot->pages += fin.pages_written;
  tot->note = fin.backend_note;
  if (co.direct_io && fin.backend_note.find("O_DIRECT refused") != std::string::npos) {
    *why = "O_DIRECT refused in " + dir + ": " + fin.backend_note;
    return false;
  }
  return true;
}

// One seqcopy round: `bytes` to a new file in `dir` with sequential 64 KiB
// write() calls (O_DIRECT when `direct`), the whole write timed.
bool seqcopy_round(const std::string& dir, bool direct, uint64_t bytes, Totals* tot,
                   std::string* why) {
  constexpr size_t kChunk = 64 << 10;
  bytes = bytes / kChunk * kChunk;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // The source is as big as the ring (read from memory, not from the cache,
  // as the drain reads the ring), page-aligned (O_DIRECT), and touched: no
  // page faults in the timed part.
  void* src = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (src == MAP_FAILED) {
    *why = std::string("mmap: ") + std::strerror(errno);
    return false;
  }
  std::memset(src, 0x5a, bytes);
  if (!direct) warm_file(dir, kChunk, bytes);
  const char* buf = static_cast<const char*>(src);
  const std::string path = dir + "/seqcopy";
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | (direct ? O_DIRECT : 0),
                      0600);
  if (fd < 0) {
    *why = "open " + path + (direct ? " with O_DIRECT" : "") + ": " + std::strerror(errno);
    munmap(src, bytes);
    return false;
  }
  const uint64_t c0 = thread_cpu_ns();
  const auto t0 = Clock::now();
  uint64_t done = 0;
  bool ok = true;
  while (done < bytes) {
    const ssize_t w = write(fd, buf + done, kChunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      *why = "write " + path + ": " + (w < 0 ? std::strerror(errno) : "wrote nothing");
      ok = false;
      break;
    }
    done += static_cast<uint64_t>(w);
  }
  const auto t1 = Clock::now();
  const uint64_t c1 = thread_cpu_ns();
  close(fd);
  munmap(src, bytes);
  if (!ok) return false;
  const double secs = std::chrono::duration<double>(t1 - t0).count();
  tot->window_bytes += static_cast<double>(done);
  tot->window_secs += secs;
  tot->bytes += static_cast<double>(done);
  tot->drain_cpu_ns += static_cast<double>(c1 - c0);
  tot->self_cpu_ns += static_cast<double>(c1 - c0);
  return true;
}

// A drain row (be != nullptr) or a seqcopy row (be == nullptr).
void run_rows(benchmark::State& state, const Backend* be, Fs fs, uint32_t page, uint32_t ncpus,
              uint64_t ring_mib = 0) {
  const IoConfig& cfg = io_config();
  if (ring_mib == 0 || cfg.smoke) ring_mib = cfg.consumer_mib;
  const uint64_t ring_bytes = ring_mib << 20;
  const bool tmpfs = fs == Fs::kTmpfs;
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
    const bool ok = be ? drain_round(dir, *be, fs, page, ring_bytes, ncpus, &tot, &why)
                       : seqcopy_round(dir, fs == Fs::kDiskDirect, ring_bytes, &tot, &why);
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
  if (be) {
    state.counters["publish_GB/s"] = tot.pub_secs > 0 ? tot.pub_bytes / tot.pub_secs / 1e9 : 0;
    state.counters["fixed_%"] =
        tot.pages ? 100.0 * static_cast<double>(tot.fixed) / static_cast<double>(tot.pages) : 0.0;
    // Every byte written once: what reached the storage layer per byte of
    // the published traces (about 1 in place; about 2 when the segment is
    // copied at publish; 0 on tmpfs, which writes nothing back), the share
    // of segments published in place, and publish (stop()) time.
    state.counters["fs_bytes/trace_byte"] =
        tot.trace_bytes > 0 ? tot.fs_write_bytes / tot.trace_bytes : 0.0;
    state.counters["in_place_%"] =
        tot.segments ? 100.0 * static_cast<double>(tot.in_place) / static_cast<double>(tot.segments)
                     : 0.0;
    state.counters["publish_ms"] = tot.pub_secs * 1e3 / static_cast<double>(state.iterations());
  }
  state.counters["ring_MiB"] = static_cast<double>(ring_mib);
  state.SetLabel(scratch.label() + (tot.note.empty() ? "" : "; " + tot.note));
}

void BM_Consumer_Drain(benchmark::State& state, Backend be, Fs fs, uint32_t page) {
  run_rows(state, &be, fs, page, kCpus);
}

void BM_Consumer_SeqCopy(benchmark::State& state, Fs fs) {
  run_rows(state, nullptr, fs, 65536, kCpus);
}

void BM_Consumer_DrainCpus(benchmark::State& state, Backend be, Fs fs, uint32_t ncpus) {
  run_rows(state, &be, fs, 65536, ncpus);
}

// Publish time against the segment's size (one segment: the whole ring).
void BM_Consumer_Publish(benchmark::State& state, Backend be, Fs fs, uint64_t mib) {
  run_rows(state, &be, fs, 65536, kCpus, mib);
}

[[maybe_unused]] const bool registered = [] {
  static constexpr Backend kBackends[] = {
      {"io_uring", IoBackendKind::kIoUring, false},
      {"io_uring+vec", IoBackendKind::kIoUring, true},
      {"pwritev", IoBackendKind::kPwritev, false},
  };
  const auto reg = [](const std::string& name, auto&&... args) {
    common(benchmark::RegisterBenchmark(name.c_str(), args...)
               ->Iterations(1)
               ->UseManualTime()
               ->Unit(benchmark::kMillisecond));
  };
  for (const Fs fs : {Fs::kTmpfs, Fs::kDisk, Fs::kDiskDirect}) {
    // The practical limit (named like a drain row: compare.py lists it with
    // them, its page is the write size).
    reg(std::string("BM_Consumer_Drain/seqcopy/") + fs_name(fs) + "/65536", BM_Consumer_SeqCopy,
        fs);
    // 4 KiB to 256 KiB pages (bench/plot.py draws the rate against the
    // page size; 4 KiB and 64 KiB are the rows the tables quote). O_DIRECT
    // at those two only.
    for (const uint32_t page : {4096u, 16384u, 65536u, 262144u}) {
      if (fs == Fs::kDiskDirect && page != 4096u && page != 65536u) continue;
      for (const Backend& be : kBackends) {
        reg(std::string("BM_Consumer_Drain/") + be.name + "/" + fs_name(fs) + "/" +
                std::to_string(page),
            BM_Consumer_Drain, be, fs, page);
      }
    }
  }
  // Publish time and bytes written against the segment's size (io_uring,
  // 64 KiB pages; the segment is the whole ring): BM_Consumer_Publish/<fs>/<MiB>.
  for (const Fs fs : {Fs::kTmpfs, Fs::kDisk, Fs::kDiskDirect}) {
    for (const uint64_t mib : {16u, 64u, 256u}) {
      reg(std::string("BM_Consumer_Publish/") + fs_name(fs) + "/" + std::to_string(mib),
          BM_Consumer_Publish, kBackends[0], fs, mib);
    }
  }
  // The drain against the number of CPU slots of the ring (64 KiB pages).
  for (const Fs fs : {Fs::kTmpfs, Fs::kDisk}) {
    for (const Backend& be : kBackends) {
      for (const uint32_t n : {1u, 2u, 4u}) {
        reg(std::string("BM_Consumer_DrainCpus/") + be.name + "/" + fs_name(fs) + "/" +
                std::to_string(n),
            BM_Consumer_DrainCpus, be, fs, n);
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace rbtrace::bench
