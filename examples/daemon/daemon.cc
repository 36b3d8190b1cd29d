// A daemon with the control socket: the `rbtrace` CLI can list it, read its
// counters, list and switch its events, snapshot it, and start, rotate and
// stop a recording to disk, all from outside and with no code for it here
// beyond the two calls below (Snapshot::attach, control::Server::start).
//
//   rbtrace-example-daemon            (runs until SIGTERM or SIGINT)
//   rbtrace list; rbtrace stat PID; rbtrace events PID
//   rbtrace snapshot PID -o snap.dat
//   rbtrace record start PID -o rec; rbtrace record rotate PID; rbtrace record stop PID
//
// The socket is <dir>/<pid>.sock, <dir> being $RBTRACE_CONTROL_DIR, else
// $XDG_RUNTIME_DIR/rbtrace, else /run/user/<uid>/rbtrace, else
// /tmp/rbtrace-<uid> (a private directory: mode 0700, ours). Only our user
// and root may connect.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <rbtrace/control.h>
#include <rbtrace/rbtrace.h>
#include <rbtrace/snapshot.h>

RBTRACE_EVENT(daemon, tick, ((uint32_t, worker))((uint64_t, seq)))
RBTRACE_EVENT(daemon, request, ((uint64_t, id))((rbtrace::str, path)))

int main() {
  // SIGTERM and SIGINT are taken by sigwait in main below: block them
  // before any thread starts, so every thread inherits the mask and none
  // dies of them. Do not block the snapshot's doorbell (SIGRTMIN+3): a
  // worker that blocks it is still snapshotted, without a signal
  // (examples/blocked_signals), but one that leaves it open costs less.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The application's ring: overwrite mode, so that with no recording
  // running it is a flight recorder (`rbtrace snapshot`), and a recording
  // started from the CLI drains it to disk.
  rbtrace::Options o;
  o.ncpus = 2;
  o.pages_per_cpu = 64;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) {
    std::fprintf(stderr, "ring: %s\n", err.message.c_str());
    return 1;
  }
  // The snapshot engine (a spare of the same size, and the doorbell signal
  // handler, installed now) and the control server (one thread, every
  // signal blocked, serving <dir>/<pid>.sock). Destroyed in the reverse
  // order: the server first (it stops a recording still running), then the
  // snapshot, then the ring.
  auto snap = rbtrace::Snapshot::attach(*rb, &err);
  if (!snap) {
    std::fprintf(stderr, "snapshot: %s\n", err.message.c_str());
    return 1;
  }
  rbtrace::control::ServerOptions so;  // dir empty: the default (above)
  auto server = rbtrace::control::Server::start(*snap, so, &err);
  if (!server) {
    std::fprintf(stderr, "control socket: %s\n", err.message.c_str());
    return 1;
  }
  std::printf("daemon: pid %d, control socket %s\n", static_cast<int>(getpid()),
              server->socket_path().c_str());
  std::fflush(stdout);

  // Two workers doing "work": a tick every millisecond, a request now and
  // then. Real work would be here; the pace is the application's own.
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (uint32_t w = 0; w < 2; w++)
    workers.emplace_back([&, w] {
      for (uint64_t seq = 0; !stop.load(std::memory_order_relaxed); seq++) {
        rbtrace_events::daemon_tick::emit(*rb, w, seq);
        if (seq % 100 == 0) rbtrace_events::daemon_request::emit(*rb, seq, "/status");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("daemon: signal %d, stopping\n", sig);
  stop.store(true);
  for (auto& t : workers) t.join();
  server.reset();  // stops a recording the CLI left running: its files are complete
  snap.reset();
  return 0;
}
