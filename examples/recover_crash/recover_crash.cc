// Recovery after a crash: a Consumer writes pages to a spool
// (DIR/spool/<session>/) as it drains them and makes trace.dat files only
// when a segment ends. A process killed before that leaves its pages in
// the spool; recover_spool (or `rbtrace recover DIR`) turns them into
// trace.dat files, keeping only pages that pass the reader's checks.
//
//   rbtrace-example-recover-crash DIR
//
// Forks a child that records into DIR until some pages are on disk, then
// SIGKILLs it (no destructor, no flush, no atexit), recovers DIR and reads
// the recovered files. Prints what was recovered; exits 1 when fewer pages
// came back than the child had written.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <rbtrace/consumer.h>
#include <rbtrace/rbtrace.h>
#include <rbtrace/tracedat_reader.h>

RBTRACE_EVENT(crash, step, ((uint64_t, seq)))

namespace {

// The child: records until at least `want` pages are written to the spool,
// tells the parent how many, and waits to be killed.
[[noreturn]] void child(const std::string& dir, int report_fd, uint64_t want) {
  rbtrace::Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 64;
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  rbtrace::ConsumerOptions co;
  co.dir = dir;
  auto consumer = rb ? rbtrace::Consumer::create(*rb, co) : nullptr;
  if (!consumer) _exit(1);
  // Only full pages are drained between flushes: write batches until the
  // consumer has written `want` of them (bounded: 60 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  uint64_t seq = 0;
  while (consumer->stats().pages_written < want) {
    if (std::chrono::steady_clock::now() > deadline) _exit(1);
    for (int i = 0; i < 1000; i++) rbtrace_events::crash_step::emit(*rb, seq++);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // let the drain thread run
  }
  const uint64_t written = consumer->stats().pages_written;
  if (write(report_fd, &written, sizeof written) != sizeof written) _exit(1);
  for (;;) pause();  // killed here, mid-recording
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int p[2];
  if (pipe(p) != 0) return 1;
  const pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    close(p[0]);
    child(dir, p[1], 16);
  }
  close(p[1]);
  uint64_t written = 0;
  const bool ready = read(p[0], &written, sizeof written) == sizeof written;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  if (!ready) {
    std::fprintf(stderr, "the child failed before writing its pages\n");
    return 1;
  }
  std::printf("child %d killed with %llu pages in its spool\n", static_cast<int>(pid),
              static_cast<unsigned long long>(written));

  // The recovery: sessions whose process is gone (their lock is free) are
  // turned into trace.dat files; live ones are left alone.
  rbtrace::RecoverResult res;
  std::string err;
  if (rbtrace::recover_spool(dir, &res, &err) != 0) {
    std::fprintf(stderr, "recover: %s\n", err.c_str());
    return 1;
  }
  for (const std::string& m : res.messages) std::printf("  %s\n", m.c_str());
  std::printf("recovered %llu sessions, %llu pages (%llu rejected), %llu events\n",
              static_cast<unsigned long long>(res.sessions),
              static_cast<unsigned long long>(res.pages),
              static_cast<unsigned long long>(res.pages_rejected),
              static_cast<unsigned long long>(res.events));

  // What recover publishes, the reader reads to the end.
  uint64_t events = 0;
  for (const std::string& f : res.published) {
    auto reader = rbtrace::TraceDatReader::open(f, &err);
    if (!reader) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    rbtrace::TraceRecord rec;
    int rc;
    while ((rc = reader->next(&rec)) == 1) events++;
    if (rc < 0) {
      std::fprintf(stderr, "%s: %s\n", f.c_str(), reader->error().c_str());
      return 1;
    }
    std::printf("read %s\n", f.c_str());
  }
  std::printf("%llu events read back\n", static_cast<unsigned long long>(events));
  return res.pages >= written && events == res.events && events > 0 ? 0 : 1;
}
