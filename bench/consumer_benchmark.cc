// consumer_benchmark.cc - rbtrace-consumer-bench: drain throughput of the
// consumer, io_uring beside pwritev, 4 KiB and 64 KiB pages, to tmpfs and to
// a disk-backed file system, in one run.
//
//   rbtrace-consumer-bench [--tmpfs DIR] [--disk DIR] [--mb N] [--rounds N]
//                          [--payload B]
//
// Backends: io_uring (one IORING_OP_WRITE_FIXED per page), io_uring+vec
// (ConsumerOptions::io_uring_vectored: consecutive pages as one WRITEV),
// pwritev.
//
// Method. Per configuration and round: writers (one per CPU, 2 CPUs) fill a
// producer/consumer ring until it is full (N MiB, default 48; 64-byte
// payloads), then stop. Then a Consumer is created on the full ring and
// drains it to spool files (no rotation, no fsync). The drain rate is
// measured between 10 % and 90 % of the pages written (polling the stats
// every 200 us), so start-up (buffer registration) and the tail are
// excluded; with nothing writing meanwhile, it is the consumer's own speed.
// CPU per GB: the drain thread's RUSAGE_THREAD time over the whole drain,
// and the whole process's (RUSAGE_SELF: includes io_uring's io-wq workers,
// which do the buffered-write copies for io_uring) over the same span.
// Then stop() publishes the segment (write_trace_dat copies it into the
// trace.dat, fsync'ed): reported as the publish rate. Files are removed
// after each round. Buffered I/O: "disk" means the page cache of a disk
// file system, written back by the kernel, as the consumer really runs.
#include <sys/resource.h>
#include <sys/stat.h>
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
#include "rbtrace/rbtrace.h"

namespace {

using Clock = std::chrono::steady_clock;

uint64_t self_cpu_ns() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (static_cast<uint64_t>(ru.ru_utime.tv_sec) + static_cast<uint64_t>(ru.ru_stime.tv_sec)) *
             1000000000ull +
         (static_cast<uint64_t>(ru.ru_utime.tv_usec) + static_cast<uint64_t>(ru.ru_stime.tv_usec)) *
             1000ull;
}

void remove_tree(const std::string& p) {
  std::string cmd = "rm -rf '" + p + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", p.c_str());
}

struct Result {
  double bytes = 0, secs = 0;           // 10..90 % window
  double total_bytes = 0;
  double drain_cpu_ns = 0, self_cpu_ns = 0;
  double pub_bytes = 0, pub_secs = 0;
  uint64_t fixed = 0, pages = 0;
  std::string backend, note;
};

bool one_round(const std::string& base, rbtrace::IoBackendKind be, bool vectored, uint32_t page,
               uint64_t mb, uint32_t payload, Result* r) {
  constexpr uint32_t kCpus = 2;
  rbtrace::Options o;
  o.ncpus = kCpus;
  o.page_size = page;
  o.pages_per_cpu = static_cast<uint32_t>((mb << 20) / page / kCpus);
  o.mode = rbtrace::Mode::kProducerConsumer;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "ring: %s\n", err.message.c_str());
    return false;
  }
  std::vector<std::thread> ws;
  for (uint32_t c = 0; c < kCpus; c++) {
    ws.emplace_back([&, c] {
      rb->bind_thread(c);
      std::vector<unsigned char> p(payload, static_cast<unsigned char>(c + 1));
      uint64_t fails = 0;
      for (uint64_t s = 0; fails < 1000; s++) {
        std::memcpy(p.data(), &s, sizeof s);
        if (rb->write(p.data(), payload) != 0) fails++;
      }
      rb->unbind_thread();
    });
  }
  for (auto& t : ws) t.join();
  // Full pages in the ring now (the last, partial one per CPU is drained by
  // stop(), outside the measurement).
  const uint64_t target = static_cast<uint64_t>(kCpus) * (o.pages_per_cpu);
  const std::string dir = base + "/rbtrace-consumer-bench";
  remove_tree(dir);
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  co.backend = be;
  co.io_uring_vectored = vectored;
  co.segment_bytes = 0;
  co.fsync = true;  // for the publish step only
  co.period_us = 1000;
  const uint64_t cpu0 = self_cpu_ns();
  const auto t0 = Clock::now();
  auto cons = rbtrace::Consumer::create(*rb, co, &err);
  if (!cons) {
    std::fprintf(stderr, "consumer: %s\n", err.message.c_str());
    return false;
  }
  Clock::time_point t10{}, t90{};
  uint64_t p10 = 0, p90 = 0;
  rbtrace::ConsumerStats s;
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
    if (s.pages_written + 2 * kCpus >= target && cons->stats().pages_read == s.pages_written) break;
    if (now - t0 > std::chrono::seconds(60)) {
      std::fprintf(stderr, "drain did not finish\n");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const uint64_t cpu1 = self_cpu_ns();
  s = cons->stats();
  const auto tp = Clock::now();
  cons->stop();
  const auto tq = Clock::now();
  const auto fs = cons->stats();
  r->bytes += static_cast<double>(p90 - p10) * page;
  r->secs += std::chrono::duration<double>(t90 - t10).count();
  r->total_bytes += static_cast<double>(s.bytes_written);
  r->drain_cpu_ns += static_cast<double>(s.drain_cpu_ns);
  r->self_cpu_ns += static_cast<double>(cpu1 - cpu0);
  r->pub_bytes += static_cast<double>(fs.bytes_written);
  r->pub_secs += std::chrono::duration<double>(tq - tp).count();
  r->fixed += fs.fixed_writes;
  r->pages += fs.pages_written;
  r->backend = fs.backend;
  r->note = fs.backend_note;
  remove_tree(dir);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tmpfs = "/dev/shm", disk = "/var/tmp";
  uint64_t mb = 48;
  int rounds = 3;
  uint32_t payload = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--tmpfs") tmpfs = v;
    else if (k == "--disk") disk = v;
    else if (k == "--mb") mb = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--rounds") rounds = std::atoi(v.c_str());
    else if (k == "--payload") payload = static_cast<uint32_t>(std::atoi(v.c_str()));
    else {
      std::fprintf(stderr, "usage: rbtrace-consumer-bench [--tmpfs DIR] [--disk DIR] [--mb N] "
                           "[--rounds N] [--payload B]\n");
      return 2;
    }
  }
  std::printf("rbtrace-consumer-bench: 2 CPUs, ring of %llu MiB filled with %u-byte events, "
              "%d rounds per row; drain rate over 10..90 %% of the pages\n",
              static_cast<unsigned long long>(mb), payload, rounds);
  std::printf("%-8s %-12s %6s %10s %12s %14s %10s %12s\n", "target", "backend", "page",
              "drain GB/s", "drain CPU s/GB", "process CPU s/GB", "fixed %", "publish GB/s");
  for (const auto& [name, dir] : {std::pair<const char*, std::string>{"tmpfs", tmpfs},
                                  std::pair<const char*, std::string>{"disk", disk}}) {
    for (uint32_t page : {4096u, 65536u}) {
      for (int v = 0; v < 3; v++) {
        const auto be = v < 2 ? rbtrace::IoBackendKind::kIoUring : rbtrace::IoBackendKind::kPwritev;
        const bool vectored = v == 1;
        Result r;
        bool ok = true;
        for (int k = 0; k < rounds && ok; k++) ok = one_round(dir, be, vectored, page, mb, payload, &r);
        if (!ok) return 1;
        const double gb = r.total_bytes / 1e9;
        const std::string label = r.backend + (vectored ? "+vec" : "");
        std::printf("%-8s %-12s %5uK %10.2f %12.3f %14.3f %9.0f%% %12.2f\n", name, label.c_str(),
                    page / 1024, r.bytes / r.secs / 1e9, r.drain_cpu_ns / 1e9 / gb,
                    r.self_cpu_ns / 1e9 / gb,
                    r.pages ? 100.0 * static_cast<double>(r.fixed) / static_cast<double>(r.pages) : 0.0,
                    r.pub_bytes / r.pub_secs / 1e9);
        if (!r.note.empty()) std::printf("   note: %s\n", r.note.c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
