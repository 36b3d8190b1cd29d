// fork() with a Consumer and a control Server running (issue 12): the
// child traces into its own (emptied) ring and exits normally, destroying
// its copies of the Consumer, the Server and the Snapshot; the parent's
// server still answers at the same socket, and the parent's recording
// flushes and stops with every event it wrote. Before the fix the child's
// Server destructor stopped the parent's server (the shared eventfd) and
// unlinked its socket, and the child's Consumer destructor waited for ever
// for drain and publish threads that do not exist in a child.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace_test/consumer_common.h"

RBTRACE_EVENT(forkt, ev, ((uint64_t, seq)))

namespace {

bool stat_answers(const std::string& dir) {
  std::string err;
  const int s = rbtrace::control::connect_to(getpid(), dir, &err);
  if (s < 0) return false;
  rbtrace::control::Request req;
  rbtrace::control::Reply rep;
  const int rc = rbtrace::control::call(s, req, -1, &rep, &err, std::chrono::milliseconds(2000));
  close(s);
  return rc == 0 && rep.status == 0;
}

uint64_t emit_on_a_thread(rbtrace::RingBuffer& rb, uint64_t from, uint64_t n) {
  uint64_t ok = 0;
  std::thread([&] {
    for (uint64_t i = 0; i < n; i++) ok += rbtrace_events::forkt_ev::emit(rb, from + i) == 0;
  }).join();
  return ok;
}

}  // namespace

TEST(Fork, AChildThatExitsNormallyLeavesTheParentsServerAndRecordingAlone) {
  const std::string out = ctest::make_temp_dir("/tmp", "forkrec");
  const std::string ctl = ctest::make_temp_dir("/tmp", "forkctl");
  ASSERT_FALSE(out.empty());
  ASSERT_FALSE(ctl.empty());
  rbtrace::Options o;
  o.mode = rbtrace::Mode::kProducerConsumer;
  auto rb = rbtrace::RingBuffer::create(o);
  ASSERT_TRUE(rb);
  auto snap = rbtrace::Snapshot::attach(*rb);
  ASSERT_TRUE(snap);
  rbtrace::control::ServerOptions so;
  so.dir = ctl;
  rbtrace::Error err;
  auto server = rbtrace::control::Server::start(*snap, so, &err);
  ASSERT_TRUE(server) << err.message;
  rbtrace::ConsumerOptions co;
  co.dir = out;
  co.fsync = false;
  auto consumer = rbtrace::Consumer::create(*rb, co, &err);
  ASSERT_TRUE(consumer) << err.message;
  ASSERT_EQ(emit_on_a_thread(*rb, 0, 100), 100u);
  ASSERT_TRUE(stat_answers(ctl));

  std::fflush(nullptr);  // the child's exit would print the parent's buffers again
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);  // a hang becomes SIGALRM, which the parent reports
    // Tracing in the child works: its ring is an empty copy.
    if (emit_on_a_thread(*rb, 1000, 10) != 10) _exit(3);
    if (consumer->flush() != -ECHILD) _exit(4);  // the parent's recording
    consumer.reset();  // as a normal exit would
    server.reset();
    snap.reset();
    rb.reset();
    exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status)
                                 << (WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
  ASSERT_EQ(WEXITSTATUS(status), 0);

  // The parent's server: same socket, still answering.
  struct stat st {};
  EXPECT_EQ(stat(server->socket_path().c_str(), &st), 0) << "the child unlinked the parent's socket";
  EXPECT_TRUE(stat_answers(ctl)) << "the child stopped the parent's server";
  // The parent's recording: goes on, flushes, stops, everything in it.
  ASSERT_EQ(emit_on_a_thread(*rb, 100, 100), 100u);
  EXPECT_EQ(consumer->flush(), 0);
  ASSERT_EQ(consumer->stop(), 0);
  const rbtrace::ConsumerStats cs = consumer->stats();
  uint64_t published = 0;
  for (uint64_t n : cs.events_published) published += n;
  EXPECT_EQ(published, 200u);
  server.reset();
  ctest::remove_tree(out);
  ctest::remove_tree(ctl);
}

namespace {

// A forked child that never destroys its copy of the Consumer (a prefork
// worker, a daemon) must not keep the session locked once the process that
// recorded is gone: recover must then take the session for dead. Process A
// records, forks B (which just waits) and dies without stopping (_exit);
// while B is alive, recover publishes A's spool. Before the atfork handler,
// B's inherited descriptor kept the flock and the session looked live.
TEST(Fork, AChildThatLivesOnDoesNotKeepADeadParentsSessionLocked) {
  const std::string out = ctest::make_temp_dir("/tmp", "forklock");
  ASSERT_FALSE(out.empty());
  int ready[2], hold[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(hold), 0);
  const pid_t a = fork();
  ASSERT_GE(a, 0);
  if (a == 0) {
    close(ready[0]);
    rbtrace::Options o;
    o.ncpus = 1;
    o.max_cpus = 1;
    auto rb = rbtrace::RingBuffer::create(o);
    rbtrace::ConsumerOptions co;
    co.dir = out;
    co.fsync = false;
    auto c = rb ? rbtrace::Consumer::create(*rb, co) : nullptr;
    if (!c) _exit(10);
    unsigned char p[ctest::kPayload];
    rb->bind_thread(0);
    for (uint64_t s = 0; s < 1000; s++) {
      ctest::make_payload(p, 0, s);
      (void)rb->write(p, ctest::kPayload);
    }
    if (c->flush() != 0) _exit(11);  // something in the spool's sidecar at least
    const pid_t b = fork();
    if (b == 0) {  // B: lives on, never touches the Consumer
      close(hold[1]);  // only the test's copy keeps the pipe open
      const int null = open("/dev/null", O_WRONLY);  // holds no pipe of the caller's
      dup2(null, 1);
      dup2(null, 2);
      // B says it runs (past fork: the atfork handlers ran) only now.
      const pid_t me = getpid();
      (void)!write(ready[1], &me, sizeof me);
      close(ready[1]);  // (ready[0] was closed in A: its number may be reused)
      char x;
      (void)!read(hold[0], &x, 1);  // until the test closes its end
      _exit(0);
    }
    (void)b;  // B writes its pid itself, once it runs
    _exit(0);  // A dies: no stop(), its descriptors close
  }
  close(ready[1]);
  close(hold[0]);
  pid_t b = 0;
  ASSERT_EQ(read(ready[0], &b, sizeof b), static_cast<ssize_t>(sizeof b));
  ASSERT_GT(b, 0);
  int st = 0;
  ASSERT_EQ(waitpid(a, &st, 0), a);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  // A is gone, B (A's child, reparented) is alive and holds its copies.
  ASSERT_EQ(kill(b, 0), 0) << "B must be alive for the test to mean anything";
  rbtrace::RecoverResult r;
  std::string err;
  EXPECT_EQ(rbtrace::recover_spool(out, &r, &err), 0) << err;
  EXPECT_EQ(r.sessions_live, 0u) << "a child that lives on kept the session locked";
  EXPECT_EQ(r.sessions, 1u);
  EXPECT_EQ(kill(b, 0), 0);
  close(hold[1]);  // B ends
  close(ready[0]);
  ctest::remove_tree(out);
}

}  // namespace

namespace {

// The same for the control server: a child that lives on must not keep the
// dead parent's lock held (a later process with that pid could not serve)
// nor its socket accepting (a client would queue and wait for its reply
// timeout instead of being refused at once). A starts a server, forks B
// (which only waits) and dies; with B alive, the lock file can be locked
// and a connect to the socket is refused.
TEST(Fork, AChildThatLivesOnHoldsNoneOfADeadParentsServer) {
  const std::string ctl = ctest::make_temp_dir("/tmp", "forksrv");
  ASSERT_FALSE(ctl.empty());
  int ready[2], hold[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(hold), 0);
  std::fflush(nullptr);
  const pid_t a = fork();
  ASSERT_GE(a, 0);
  if (a == 0) {
    close(ready[0]);
    rbtrace::Options o;
    o.ncpus = 1;
    o.max_cpus = 1;
    auto rb = rbtrace::RingBuffer::create(o);
    auto snap = rb ? rbtrace::Snapshot::attach(*rb) : nullptr;
    rbtrace::control::ServerOptions so;
    so.dir = ctl;
    auto server = snap ? rbtrace::control::Server::start(*snap, so) : nullptr;
    if (!server) _exit(10);
    const pid_t b = fork();
    if (b == 0) {  // B: lives on, never touches the Server
      close(hold[1]);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      const pid_t me = getpid();  // past fork: the atfork handlers ran
      (void)!write(ready[1], &me, sizeof me);
      close(ready[1]);
      char x;
      (void)!read(hold[0], &x, 1);
      _exit(0);
    }
    _exit(0);  // A dies without stopping its server
  }
  close(ready[1]);
  close(hold[0]);
  pid_t b = 0;
  ASSERT_EQ(read(ready[0], &b, sizeof b), static_cast<ssize_t>(sizeof b));
  int st = 0;
  ASSERT_EQ(waitpid(a, &st, 0), a);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  ASSERT_EQ(kill(b, 0), 0) << "B must be alive for the test to mean anything";
  const std::string base = ctl + "/" + std::to_string(a);
  const int lk = open((base + ".lock").c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  ASSERT_GE(lk, 0) << "A died without removing its lock file";
  EXPECT_EQ(flock(lk, LOCK_EX | LOCK_NB), 0) << "a child that lives on holds the dead server's lock";
  close(lk);
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const std::string sp = base + ".sock";
  ASSERT_LT(sp.size(), sizeof sa.sun_path);
  std::memcpy(sa.sun_path, sp.c_str(), sp.size() + 1);
  EXPECT_NE(connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0)
      << "a child that lives on accepts on the dead server's socket";
  EXPECT_EQ(errno, ECONNREFUSED);
  close(s);
  EXPECT_EQ(kill(b, 0), 0);
  close(hold[1]);
  close(ready[0]);
  ctest::remove_tree(ctl);
}

}  // namespace
