// fork() with a Consumer and a control Server running (issue 12): the
// child traces into its own (emptied) ring and exits normally, destroying
// its copies of the Consumer, the Server and the Snapshot; the parent's
// server still answers at the same socket, and the parent's recording
// flushes and stops with every event it wrote. Before the fix the child's
// Server destructor stopped the parent's server (the shared eventfd) and
// unlinked its socket, and the child's Consumer destructor waited for ever
// for drain and publish threads that do not exist in a child.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
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
