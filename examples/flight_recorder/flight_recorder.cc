// A flight recorder: the program traces into a small ring in overwrite
// mode all the time (the newest events push out the oldest, nothing goes to
// disk) and, when something goes wrong, snapshots the ring into a trace.dat
// file: the last moments before the error, on every thread.
//
//   rbtrace-example-flight-recorder DIR
//
// Handles 5,000 "requests"; request 4,321 fails, which writes
// DIR/crash-<pid>.dat and prints its path and what it holds. Then
// `rbtrace report DIR/crash-*.dat` shows the last requests and the error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <rbtrace/rbtrace.h>
#include <rbtrace/snapshot.h>

RBTRACE_EVENT(app, request, ((uint64_t, id))((int32_t, status)))
RBTRACE_EVENT(app, error, ((uint64_t, id))((rbtrace::str, what)))

namespace {

// The error path: write the snapshot to a new file. take() swaps each CPU's
// buffer with a spare on its owner thread (a signal; see "Signals" in
// docs/GUIDE.md), so tracing goes on meanwhile, and dumps the swapped-out
// pages. O_EXCL: never replace an earlier crash file.
int dump_flight_recorder(rbtrace::Snapshot& snap, const std::string& dir) {
  const std::string path = dir + "/crash-" + std::to_string(getpid()) + ".dat";
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::strerror(errno));
    return -1;
  }
  std::string err;
  rbtrace::SnapshotResult res;
  const int rc = snap.take(fd, /*cpu=*/-1, &err, &res);  // -1: every CPU
  close(fd);
  if (rc != 0) {
    std::fprintf(stderr, "snapshot: %s\n", err.c_str());
    return -1;
  }
  uint64_t pages = 0, overrun = 0;
  for (const rbtrace::SnapshotCpu& c : res.cpus) {
    pages += c.pages;
    overrun += c.stats.overrun;  // events pushed out before the error: by design
  }
  std::printf("wrote %s: %llu pages, %llu older events overwritten\n", path.c_str(),
              static_cast<unsigned long long>(pages), static_cast<unsigned long long>(overrun));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  mkdir(argv[1], 0700);  // may exist

  // Overwrite mode, 8 pages of 4 KiB per CPU: the last few hundred events
  // of each thread. Snapshot::create makes the ring and its spare (the same
  // size again: a snapshot swaps, it does not copy); Snapshot::attach adds
  // a spare to a ring you made yourself.
  rbtrace::Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 8;
  o.mode = rbtrace::Mode::kOverwrite;
  rbtrace::Error err;
  auto snap = rbtrace::Snapshot::create(o, &err);
  if (!snap) {
    std::fprintf(stderr, "snapshot: %s\n", err.message.c_str());
    return 1;
  }
  rbtrace::RingBuffer& rb = snap->live();

  constexpr uint64_t kRequests = 5000, kFailing = 4321;
  for (uint64_t id = 0; id < kRequests; id++) {
    const bool fails = id == kFailing;
    rbtrace_events::app_request::emit(rb, id, fails ? 500 : 200);
    if (fails) {
      rbtrace_events::app_error::emit(rb, id, "database timeout");
      if (dump_flight_recorder(*snap, argv[1]) != 0) return 1;
    }
  }
  return 0;
}
