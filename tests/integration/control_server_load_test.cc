// The control server under clients that misbehave (issue 12): a client
// trickling its request a byte at a time, a flood of connections that never
// send, a client reconnecting in a loop, clients that never read their
// reply. None of them holds the server: stat requests beside them are
// answered within a second each (they take about a millisecond), through
// the client API and through `rbtrace stat`; the misbehaving connections
// are closed at their deadline or refused at accept, and counted.
//
// Every bound here is an upper bound with a wide margin (a second for a
// millisecond's work, seconds for a 500 ms deadline); nothing asserts that
// something is slow. Before the change the server served one connection at
// a time with a 2 s timeout per receive call and a backlog of 8, so each of
// these clients held it: the stat requests waited for seconds or for ever.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"

extern char** environ;

using namespace rbtrace;
using namespace rbtrace::control;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr auto kAnswerBound = 1s;  // a stat takes about a millisecond

long ms_since(SteadyClock::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count());
}

// A connected, blocking socket to `path`, or -errno.
int raw_connect(const std::string& path, bool nonblock = false) {
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int e = errno;
    close(s);
    return -e;
  }
  return s;
}

// Reads exactly n bytes from a pipe within `limit`; false on EOF or timeout.
bool read_pipe(int fd, void* buf, size_t n, std::chrono::milliseconds limit) {
  const auto end = SteadyClock::now() + limit;
  size_t got = 0;
  while (got < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t r = read(fd, static_cast<char*>(buf) + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// Polls `pred` until it holds or `limit` passes.
template <class P>
bool eventually(P pred, std::chrono::milliseconds limit = 10000ms) {
  const auto end = SteadyClock::now() + limit;
  while (!pred()) {
    if (SteadyClock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class ControlLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-ctlload-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/ctl";
    Options o;
    o.ncpus = 2;
    o.pages_per_cpu = 4;
    snap_ = Snapshot::create(o);
    ASSERT_TRUE(snap_);
    ServerOptions so;
    so.dir = dir_;
    so.io_timeout = 500ms;
    Error err;
    server_ = Server::start(*snap_, so, &err);
    ASSERT_TRUE(server_) << err.message;
  }
  void TearDown() override {
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    server_.reset();
    snap_.reset();
    std::system(("rm -rf " + base_).c_str());
  }

  // One stat request through the client API with its own deadline (3 s:
  // over the bound, so a held server fails the test instead of hanging
  // it). Its latency in *ms; true when answered with the counters.
  bool stat_once(long* ms, const std::string& dir = "") {
    const auto t0 = SteadyClock::now();
    std::string err;
    const int s = connect_to(getpid(), dir.empty() ? dir_ : dir, &err, 3000ms);
    if (s < 0) {
      ADD_FAILURE() << err;
      return false;
    }
    Request req;
    Reply rep;
    const int rc = call(s, req, -1, &rep, &err, 3000ms);
    close(s);
    *ms = ms_since(t0);
    if (rc != 0) ADD_FAILURE() << err;
    return rc == 0 && rep.status == 0 && !rep.stat.cpus.empty();
  }

  // A child process that connects to the server and sends a valid-looking
  // request one byte every 300 ms, never finishing it. It writes one byte to
  // `ready` once connected (and its first byte sent), then, when a send
  // fails (the server closed the connection), the milliseconds from its
  // connect to that failure (u32; 0xffffffff: still open after 15 s).
  pid_t start_trickler(int ready) {
    Request big;
    big.type = MsgType::kEvents;
    big.event = "trickle:" + std::string(200, 'x');
    const std::vector<uint8_t> m = encode_request(big);
    const std::string path = server_->socket_path();
    const pid_t pid = fork();
    if (pid == 0) {
      const int s = raw_connect(path);
      if (s < 0) _exit(2);
      const auto t0 = SteadyClock::now();
      if (send(s, m.data(), 1, MSG_NOSIGNAL) != 1) _exit(3);
      char one = 1;
      if (write(ready, &one, 1) != 1) _exit(4);
      uint32_t closed_after = 0xffffffffu;
      for (size_t i = 1; i < m.size() && SteadyClock::now() - t0 < 15s; i++) {
        std::this_thread::sleep_for(300ms);
        if (send(s, m.data() + i, 1, MSG_NOSIGNAL) != 1) {
          closed_after = static_cast<uint32_t>(ms_since(t0));
          break;
        }
      }
      if (write(ready, &closed_after, sizeof closed_after) != sizeof closed_after) _exit(5);
      _exit(0);
    }
    if (pid > 0) children_.push_back(pid);
    return pid;
  }

  // Runs `rbtrace ARGS` with the fixture's control directory; its exit
  // status (-1: did not exit) and how long it took.
  int run_cli(const std::vector<std::string>& args, long* ms) {
    std::vector<std::string> env_s = {"RBTRACE_CONTROL_DIR=" + dir_};
    for (char** e = environ; *e; e++)
      if (std::strncmp(*e, "RBTRACE_CONTROL_DIR=", 20) != 0) env_s.push_back(*e);
    std::vector<char*> env;
    for (auto& e : env_s) env.push_back(e.data());
    env.push_back(nullptr);
    std::vector<std::string> argv_s = {RBTRACE_CLI};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    const auto t0 = SteadyClock::now();
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, RBTRACE_CLI, &fa, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    int st = 0;
    waitpid(pid, &st, 0);
    *ms = ms_since(t0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  std::string base_, dir_;
  std::unique_ptr<Snapshot> snap_;
  std::unique_ptr<Server> server_;
  std::vector<pid_t> children_;
};

// A client trickling a byte every 300 ms (under the server's 500 ms
// deadline per request, but never completing) while 4 threads make 5 stat
// requests each: every one answered within a second; the trickler is cut
// off by the deadline and counted. (Before: the 2 s timeout was per
// receive call, so the trickler held the server for as long as it
// trickled, and the stat requests timed out.)
TEST_F(ControlLoad, ATricklingClientDoesNotHoldTheServer) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const pid_t child = start_trickler(p[1]);
  ASSERT_GT(child, 0);
  close(p[1]);
  char one;
  ASSERT_TRUE(read_pipe(p[0], &one, 1, 5000ms)) << "the trickler did not connect";
  std::atomic<long> worst{0};
  std::atomic<int> answered{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++) {
    ts.emplace_back([&] {
      for (int i = 0; i < 5; i++) {
        long ms = 0;
        // Relaxed: both are read after the threads are joined (the join orders them).
        if (stat_once(&ms)) answered.fetch_add(1, std::memory_order_relaxed);
        long w = worst.load(std::memory_order_relaxed);
        while (ms > w && !worst.compare_exchange_weak(w, ms, std::memory_order_relaxed)) {
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(answered.load(std::memory_order_relaxed), 20);
  EXPECT_LT(worst.load(std::memory_order_relaxed), std::chrono::milliseconds(kAnswerBound).count())
      << "a stat request waited behind the trickler";
  std::printf("[ info ] 20 stat requests beside a trickler: slowest %ld ms\n",
              worst.load(std::memory_order_relaxed));
  uint32_t closed_after = 0;
  ASSERT_TRUE(read_pipe(p[0], &closed_after, sizeof closed_after, 20000ms));
  close(p[0]);
  EXPECT_LT(closed_after, 5000u) << "the trickler's connection was not closed by its deadline "
                                    "(0xffffffff: open for the whole 15 s)";
  std::printf("[ info ] the trickler was cut off after %u ms (deadline 500 ms)\n", closed_after);
  EXPECT_GE(server_->counters().timed_out, 1u);
}

// The same through the CLI: 4 `rbtrace stat PID` processes started at once
// beside a trickler, each done well within its bound, exit 0.
TEST_F(ControlLoad, FourConcurrentCliStatBesideATrickler) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_GT(start_trickler(p[1]), 0);
  close(p[1]);
  char one;
  ASSERT_TRUE(read_pipe(p[0], &one, 1, 5000ms));
  std::vector<int> status(4, -2);
  std::vector<long> took(4, 0);
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++)
    ts.emplace_back([&, i] { status[i] = run_cli({"stat", std::to_string(getpid())}, &took[i]); });
  for (auto& t : ts) t.join();
  long slowest = 0;
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(status[i], 0) << "rbtrace stat #" << i;
    // A process start and a stat: well under a second on a quiet machine;
    // 5 s leaves room for a loaded one. Held by the trickler, it took the
    // trickler's whole life (15 s) or timed out.
    EXPECT_LT(took[i], 5000) << "rbtrace stat #" << i;
    slowest = std::max(slowest, took[i]);
  }
  std::printf("[ info ] 4 concurrent rbtrace stat beside a trickler: slowest %ld ms\n", slowest);
  close(p[0]);
}

// 200 connections from another process that never send anything: the
// first 4 are kept (the cap per peer process) until their deadline, the
// others are refused at accept and counted; a stat request made after
// them is answered within a second. (Before: a backlog of 8, and each
// connection held the server for its whole timeout.)
TEST_F(ControlLoad, AFloodOfConnectionsDoesNotHoldTheServer) {
  int up[2], down[2];
  ASSERT_EQ(pipe2(up, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(down, O_CLOEXEC), 0);
  const std::string path = server_->socket_path();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(up[0]);
    close(down[1]);
    std::vector<int> held;
    uint32_t ok = 0;
    for (int i = 0; i < 200; i++) {
      const int s = raw_connect(path, true);  // a full queue fails at once (EAGAIN)
      if (s >= 0) {
        held.push_back(s);
        ok++;
      }
    }
    if (write(up[1], &ok, sizeof ok) != sizeof ok) _exit(2);
    char c;
    (void)!read(down[0], &c, 1);  // until the parent is done
    _exit(0);
  }
  children_.push_back(child);
  close(up[1]);
  close(down[0]);
  uint32_t connected = 0;
  ASSERT_TRUE(read_pipe(up[0], &connected, sizeof connected, 10000ms));
  EXPECT_GE(connected, 100u) << "the listen queue took few connections";
  long ms = 0;
  EXPECT_TRUE(stat_once(&ms));
  EXPECT_LT(ms, std::chrono::milliseconds(kAnswerBound).count());
  // The queue is first in, first out: the flood was accepted before the
  // stat request, each connection kept or refused at once.
  const ServerCounters c = server_->counters();
  EXPECT_GE(c.over_cap + 4, connected) << "over_cap " << c.over_cap;
  std::printf("[ info ] stat after %u flooding connections: %ld ms; %llu refused over the cap\n",
              connected, ms, static_cast<unsigned long long>(c.over_cap));
  // The 4 kept are closed at their deadline, and counted.
  EXPECT_TRUE(eventually([&] { return server_->counters().timed_out >= 4; }))
      << server_->counters().timed_out;
  close(down[1]);
  close(up[0]);
}

// A client that keeps as many connections open as it can (up to 16) and
// reconnects as soon as the server closes one, never sending a byte, while 6 stat requests are made one after another (250 ms apart, so
// they are spread over its life): all answered within a second each.
// (Before, with a backlog of 8 and each connection held for its whole
// timeout, this client kept the queue full: in the issue 6 of 6 stat
// calls failed over 60 s.)
TEST_F(ControlLoad, AReconnectingClientDoesNotHoldTheServer) {
  int up[2], down[2];
  ASSERT_EQ(pipe2(up, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(down, O_CLOEXEC), 0);
  const std::string path = server_->socket_path();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(up[0]);
    close(down[1]);
    std::vector<int> held;
    const auto t0 = SteadyClock::now();
    bool told = false;
    uint32_t connects = 0;
    // Until the parent is done (its end of `down` closed), at most 30 s.
    while (SteadyClock::now() - t0 < 30s) {
      pollfd d{down[0], POLLIN, 0};
      if (poll(&d, 1, 0) > 0) break;
      while (held.size() < 16) {  // a full queue fails at once (EAGAIN)
        const int s = raw_connect(path, true);
        if (s < 0) break;
        held.push_back(s);
        connects++;
      }
      if (!told && held.size() >= 8) {
        char one = 1;
        told = write(up[1], &one, 1) == 1;
      }
      std::vector<pollfd> pf;
      for (int s : held) pf.push_back({s, POLLIN, 0});
      if (poll(pf.data(), pf.size(), 10) <= 0) continue;
      std::vector<int> still;
      for (const pollfd& p : pf) {
        char buf[256];
        if (p.revents && read(p.fd, buf, sizeof buf) <= 0) {
          close(p.fd);  // closed by the server: reconnect
          continue;
        }
        still.push_back(p.fd);  // an answer (before the end): read on
      }
      held.swap(still);
    }
    (void)!write(up[1], &connects, sizeof connects);
    _exit(0);
  }
  children_.push_back(child);
  close(up[1]);
  close(down[0]);
  char one;
  ASSERT_TRUE(read_pipe(up[0], &one, 1, 10000ms));
  long slowest = 0;
  for (int i = 0; i < 6; i++) {
    long ms = 0;
    EXPECT_TRUE(stat_once(&ms)) << i;
    EXPECT_LT(ms, std::chrono::milliseconds(kAnswerBound).count()) << i;
    slowest = std::max(slowest, ms);
    std::this_thread::sleep_for(250ms);
  }
  close(down[1]);
  uint32_t connects = 0;
  EXPECT_TRUE(read_pipe(up[0], &connects, sizeof connects, 20000ms));
  std::printf("[ info ] 6 stat requests beside a client that made %u connections: slowest "
              "%ld ms; %llu refused over the cap\n",
              connects, slowest, static_cast<unsigned long long>(server_->counters().over_cap));
  close(up[0]);
}

// Clients that send a request whose reply is larger than the socket can
// buffer, and never read it: the reply is written as the socket takes it,
// without blocking, and the connection closed at its deadline (counted);
// a stat request meanwhile is answered within a second. (Before: a
// blocking send with a 2 s timeout per call held the server 4 s per such
// client.) The reply is made large with a ring of many CPUs: a stat reply
// is 272 bytes per CPU.
TEST_F(ControlLoad, ClientsThatDoNotReadTheirReplyDoNotHoldTheServer) {
  long wmem = 212992;
  {
    std::ifstream f("/proc/sys/net/core/wmem_default");
    f >> wmem;
  }
  const long want = 3 * wmem / 272 + 16;  // well over what the socket buffers
  // A machine whose default socket buffer a stat reply cannot fill would
  // make this test prove nothing: it fails and says why, it never skips.
  ASSERT_FALSE(want > static_cast<long>(kMaxCpus) ||
               want * 272 > static_cast<long>(kMaxReplyPayload) - 4096)
      << "net.core.wmem_default " << wmem << " is too large for a stat reply to fill";
  Options o;
  o.ncpus = static_cast<uint32_t>(want);
  o.pages_per_cpu = 2;
  auto big = Snapshot::create(o);
  ASSERT_TRUE(big);
  ServerOptions so;
  so.dir = base_ + "/big";
  so.io_timeout = 2000ms;  // the default
  Error err;
  auto server = Server::start(*big, so, &err);
  ASSERT_TRUE(server) << err.message;
  // Two non-readers (the cap per process is 4: them, and our stat).
  const auto req = encode_request(Request{});
  int quiet[2];
  for (int& q : quiet) {
    q = raw_connect(server->socket_path());
    ASSERT_GE(q, 0);
    ASSERT_EQ(send(q, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  }
  long ms = 0;
  EXPECT_TRUE(stat_once(&ms, so.dir));
  EXPECT_LT(ms, std::chrono::milliseconds(kAnswerBound).count());
  std::printf("[ info ] stat (a %ld-byte reply) beside 2 clients not reading theirs: %ld ms\n",
              want * 272, ms);
  EXPECT_TRUE(eventually([&] { return server->counters().timed_out >= 2; }))
      << server->counters().timed_out;
  // Each got part of its reply, then the end: closed by the server.
  for (int q : quiet) {
    std::vector<uint8_t> buf(1 << 16);
    size_t got = 0;
    ssize_t n;
    while ((n = read(q, buf.data(), buf.size())) > 0) got += static_cast<size_t>(n);
    EXPECT_GT(got, 0u);
    EXPECT_LT(got, static_cast<size_t>(want) * 272) << "the whole reply fit: the test proves nothing";
    close(q);
  }
  const ServerCounters c = server->counters();
  EXPECT_EQ(c.served, 3u);
  EXPECT_EQ(c.timed_out, 2u);
}

}  // namespace
