// An application whose worker threads block every signal (servers that take
// their signals with sigwait in one thread do this), snapshotted anyway.
//
// A snapshot swaps each CPU buffer with a spare on the thread that owns it;
// normally it asks that thread with a real-time signal, the "doorbell"
// (SIGRTMIN+3 unless install_swap_doorbell chose another). A thread that
// blocks it cannot answer, so the snapshot sees the blocked doorbell in
// /proc/self/task/TID/status and swaps the buffer from its own thread
// instead, made safe by membarrier(2) (docs/DESIGN.md, "Without a
// signal"). Nothing is asked of the application, except: do not install a
// handler of your own for the doorbell signal, and do not take it with
// sigwait.
//
//   rbtrace-example-blocked-signals FILE
//
// Two workers block every signal and trace flat out while the main thread
// snapshots them into FILE. Prints, per CPU, how it was swapped; exits 1
// unless every worker's CPU was captured without a signal.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <rbtrace/rbtrace.h>
#include <rbtrace/snapshot.h>

RBTRACE_EVENT(worker, step, ((uint32_t, worker))((uint64_t, seq)))

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  if (int rc = rbtrace::RingBuffer::membarrier_status(); rc != 0)
    std::fprintf(stderr, "note: membarrier unavailable (%d): blocked CPUs cannot be swapped\n", rc);

  rbtrace::Options o;
  o.ncpus = 2;
  o.pages_per_cpu = 16;
  rbtrace::Error err;
  auto snap = rbtrace::Snapshot::create(o, &err);  // installs the doorbell handler
  if (!snap) {
    std::fprintf(stderr, "snapshot: %s\n", err.message.c_str());
    return 1;
  }
  rbtrace::RingBuffer& rb = snap->live();

  constexpr uint32_t kWorkers = 2;
  std::atomic<uint32_t> tracing{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (uint32_t w = 0; w < kWorkers; w++)
    workers.emplace_back([&, w] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);  // the doorbell too
      rbtrace_events::worker_step::emit(rb, w, 0);  // claims this thread's CPU slot
      tracing.fetch_add(1);
      for (uint64_t seq = 1; !stop.load(std::memory_order_relaxed); seq++) {
        rbtrace_events::worker_step::emit(rb, w, seq);
        if (seq % 64 == 0) std::this_thread::yield();  // share a loaded machine
      }
    });
  // Snapshot only once both workers own a CPU: then both CPUs have an
  // owner that blocks the doorbell.
  while (tracing.load() < kWorkers) std::this_thread::yield();

  const int fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(argv[1]);
    return 1;
  }
  std::string why;
  rbtrace::SnapshotResult res;
  const int rc = snap->take(fd, -1, &why, &res, std::chrono::milliseconds(5000));
  close(fd);
  stop.store(true);
  for (auto& t : workers) t.join();
  if (rc != 0) {
    std::fprintf(stderr, "snapshot: %s\n", why.c_str());
    return 1;
  }

  uint32_t without_signal = 0;
  for (const rbtrace::SnapshotCpu& c : res.cpus) {
    std::printf("cpu %u: owner %d, swap %d, %u pages, %u doorbells, %u swaps without a signal\n",
                c.cpu, c.trace.owner, c.swap_result, c.pages, c.trace.signals, c.trace.remote);
    if (c.swap_result == 0 && c.trace.owner > 0 && c.trace.remote > 0 && c.trace.signals == 0)
      without_signal++;
  }
  std::printf("%u of %u workers' CPUs captured without a signal\n", without_signal, kWorkers);
  return without_signal == kWorkers ? 0 : 1;
}
