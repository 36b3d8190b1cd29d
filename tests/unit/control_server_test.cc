// The embedded control server: a real socket in a private directory, a real
// Snapshot behind it. Malformed, oversized and truncated messages and stray
// descriptors are rejected without harm (the server goes on serving, and a
// passed descriptor is not kept); a client running as another user is
// refused, both by the directory (connect fails) and, when it gets past the
// file system, by SO_PEERCRED; a snapshot arrives in the descriptor the
// client passed.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"

RBTRACE_EVENT(ctltest, ping, ((uint64_t, seq)))

using namespace rbtrace;
using namespace rbtrace::control;
using namespace std::chrono_literals;

namespace {

class ControlServer : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-ctltest-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/ctl";
    Options o;
    o.ncpus = 2;
    o.max_cpus = 2;  // a third thread is refused (RefusalsForWantOfASlot...)
    o.pages_per_cpu = 4;
    o.mode = Mode::kOverwrite;
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
    server_.reset();
    snap_.reset();
    std::system(("rm -rf " + base_).c_str());
  }
  int raw_connect() {
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, server_->socket_path().c_str(), sizeof sa.sun_path - 1);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      close(s);
      return -errno;
    }
    return s;
  }
  // Sends raw bytes (optionally with a descriptor), half-closes, returns the
  // reply's status (or 1 if the server closed without a reply).
  int send_raw(const std::vector<uint8_t>& bytes, int pass_fd = -1) {
    const int s = raw_connect();
    EXPECT_GE(s, 0);
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = bytes.empty() ? 0 : 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
    if (pass_fd >= 0) {
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
    }
    if (!bytes.empty()) {
      EXPECT_EQ(sendmsg(s, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    }
    shutdown(s, SHUT_WR);
    std::vector<uint8_t> buf(4096);
    size_t got = 0;
    for (;;) {
      const ssize_t n = read(s, buf.data() + got, buf.size() - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    close(s);
    Reply rep;
    std::string why;
    if (parse_reply(buf.data(), got, MsgType::kStat, &rep, &why) != 0) return 1;
    return rep.status;
  }
  bool stat_works() {
    std::string err;
    const int s = connect_to(getpid(), dir_, &err);
    if (s < 0) return false;
    Request req;
    Reply rep;
    const int rc = call(s, req, -1, &rep, &err);
    close(s);
    return rc == 0 && rep.status == 0 && rep.stat.cpus.size() == 2;
  }
  std::string base_, dir_;
  std::unique_ptr<Snapshot> snap_;
  std::unique_ptr<Server> server_;
};

TEST_F(ControlServer, SocketIsPrivate) {
  struct stat st {};
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(server_->socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 077, 0u);
  EXPECT_EQ(server_->socket_path(), dir_ + "/" + std::to_string(getpid()) + ".sock");
  auto pids = list_processes(dir_);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_EQ(pids[0], getpid());
  EXPECT_TRUE(stat_works());
}

TEST_F(ControlServer, MalformedOversizedTruncatedAreRejectedWithoutHarm) {
  Request snapreq;
  snapreq.type = MsgType::kSnapshot;
  const auto good = encode_request(snapreq);
  auto bad_magic = good;
  bad_magic[0] ^= 0xff;
  EXPECT_EQ(send_raw(bad_magic), -EPROTO);
  auto bad_version = good;
  bad_version[4] = 9;
  EXPECT_EQ(send_raw(bad_version), -EPROTONOSUPPORT);
  auto oversized = good;
  const uint32_t huge = 1u << 30;
  std::memcpy(oversized.data() + 8, &huge, 4);
  EXPECT_EQ(send_raw(oversized), -EMSGSIZE);
  auto truncated = good;
  truncated.resize(truncated.size() - 3);
  EXPECT_EQ(send_raw(truncated), -EBADMSG);
  EXPECT_EQ(send_raw(std::vector<uint8_t>(good.begin(), good.begin() + 7)), -EBADMSG);
  EXPECT_EQ(send_raw({}), -EBADMSG);  // connect and hang up
  std::vector<uint8_t> garbage(300);
  for (size_t i = 0; i < garbage.size(); i++) garbage[i] = static_cast<uint8_t>(i * 37);
  EXPECT_LT(send_raw(garbage), 0);
  // A snapshot request without a descriptor, and a stat request with one.
  EXPECT_EQ(send_raw(good), -EBADF);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  EXPECT_EQ(send_raw(encode_request(Request{}), p[1]), -EBADMSG);
  // The server did not keep the stray descriptor: with our write end
  // closed too, the read end sees EOF.
  close(p[1]);
  pollfd pf{p[0], POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 2000), 1);
  char c;
  EXPECT_EQ(read(p[0], &c, 1), 0);
  close(p[0]);
  // A descriptor that is not an empty regular file is refused.
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  EXPECT_EQ(send_raw(good, p[1]), -EINVAL);
  close(p[0]);
  close(p[1]);
  // Still serving, nothing else happened.
  EXPECT_TRUE(stat_works());
  const ServerCounters c2 = server_->counters();
  EXPECT_EQ(c2.malformed, 8u);
  EXPECT_EQ(c2.failed, 2u);  // no descriptor; a pipe
  EXPECT_EQ(c2.refused, 0u);
  EXPECT_EQ(snap_->snapshots_taken(), 0u);
}

// A slow client that sends half a header and waits cannot hold the server
// for longer than its I/O timeout.
TEST_F(ControlServer, StalledClientTimesOut) {
  const int s = raw_connect();
  ASSERT_GE(s, 0);
  const auto m = encode_request(Request{});
  ASSERT_EQ(write(s, m.data(), 5), 5);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(stat_works());  // queued behind the stalled one
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  close(s);
}

// Runs `child` in a forked process; returns its exit status (or -1).
template <class F>
int in_child(F child) {
  const pid_t pid = fork();
  if (pid == 0) _exit(child());
  int st = 0;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

TEST_F(ControlServer, AnotherUserIsRefusedByTheDirectory) {
  ASSERT_EQ(geteuid(), 0u) << "the test needs root to become another user";
  const std::string path = server_->socket_path();
  const int rc = in_child([&]() -> int {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    const int s = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return 1;
    return errno == EACCES ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "nobody could connect (1) or failed otherwise (2, 10)";
  EXPECT_TRUE(stat_works());
}

// Past the file system (file-system uid 0, effective uid nobody), the peer
// credentials still say nobody: the server refuses.
TEST_F(ControlServer, AnotherUserIsRefusedByPeerCredentials) {
  ASSERT_EQ(geteuid(), 0u);
  const std::string path = server_->socket_path();
  const auto req = encode_request(Request{});
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const int rc = in_child([&]() -> int {
    close(p[0]);
    if (setresgid(65534, 65534, 0) != 0 || setresuid(65534, 65534, 0) != 0) return 10;
    setfsuid(0);
    if (static_cast<uid_t>(setfsuid(static_cast<uid_t>(-1))) != 0) return 11;
    const int s = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return 12;
    // The server may refuse and close before our request is written: no
    // SIGPIPE, and the reply is read anyway.
    (void)send(s, req.data(), req.size(), MSG_NOSIGNAL);
    shutdown(s, SHUT_WR);
    static uint8_t buf[4096];
    ssize_t got = 0, n;
    while ((n = read(s, buf + got, sizeof buf - static_cast<size_t>(got))) > 0) got += n;
    if (write(p[1], buf, static_cast<size_t>(got)) != got) return 14;
    return 0;
  });
  close(p[1]);
  ASSERT_EQ(rc, 0);
  std::vector<uint8_t> buf(4096);
  const ssize_t got = read(p[0], buf.data(), buf.size());
  close(p[0]);
  ASSERT_GT(got, 0);
  Reply rep;
  std::string why;
  ASSERT_EQ(parse_reply(buf.data(), static_cast<size_t>(got), MsgType::kStat, &rep, &why), 0) << why;
  EXPECT_EQ(rep.status, -EACCES);
  EXPECT_TRUE(rep.stat.cpus.empty()) << "a refused peer got the counters";
  EXPECT_EQ(server_->counters().refused, 1u);
  EXPECT_TRUE(stat_works());
}

TEST_F(ControlServer, SnapshotIsWrittenToThePassedDescriptor) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    ASSERT_EQ(snap_->live().bind_thread(1), 0);
    uint64_t seq = 0;
    while (!stop.load()) {
      rbtrace_events::ctltest_ping::emit(snap_->live(), ++seq);
      if (seq % 64 == 0) std::this_thread::sleep_for(100us);
    }
    snap_->live().unbind_thread();
  });
  std::this_thread::sleep_for(50ms);
  const std::string out = base_ + "/snap.dat";
  const int fd = open(out.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  std::string err;
  const int s = connect_to(getpid(), dir_, &err);
  ASSERT_GE(s, 0) << err;
  Request req;
  req.type = MsgType::kSnapshot;
  req.cpu = -1;
  Reply rep;
  ASSERT_EQ(call(s, req, fd, &rep, &err), 0) << err;
  close(s);
  stop.store(true);
  writer.join();
  EXPECT_EQ(rep.status, 0) << rep.message;
  ASSERT_EQ(rep.snapshot.cpus.size(), 2u);
  EXPECT_EQ(rep.snapshot.cpus[1].swap_result, 0);
  EXPECT_GT(rep.snapshot.cpus[1].pages, 0u);
  auto reader = TraceDatReader::open_fd(fd, &err);
  close(fd);
  ASSERT_TRUE(reader) << err;
  TraceRecord rec;
  uint64_t n = 0, last = 0;
  bool ordered = true;
  while (reader->next_on_cpu(1, &rec) == 1) {
    if (!rec.event || rec.event->name != "ping") continue;
    uint64_t seq;
    std::memcpy(&seq, rec.data + 8, sizeof seq);
    if (n && seq != last + 1) ordered = false;  // one writer, no handler
    last = seq;
    n++;
  }
  EXPECT_TRUE(reader->error().empty()) << reader->error();
  EXPECT_GT(n, 0u);
  EXPECT_TRUE(ordered) << "the flight recorder's tail has a hole";
  EXPECT_EQ(snap_->snapshots_taken(), 1u);
  // A second request to the same, now non-empty, file is refused.
  const int fd2 = open(out.c_str(), O_RDWR | O_CLOEXEC);
  const int s2 = connect_to(getpid(), dir_, &err);
  ASSERT_EQ(call(s2, req, fd2, &rep, &err), 0) << err;
  EXPECT_EQ(rep.status, -EINVAL);
  close(s2);
  close(fd2);
  // Events: enable/disable by name, unknown names refused.
  Request ev;
  ev.type = MsgType::kEvents;
  ev.enable = false;
  ev.event = "ctltest:ping";
  const int s3 = connect_to(getpid(), dir_, &err);
  ASSERT_EQ(call(s3, ev, -1, &rep, &err), 0) << err;
  close(s3);
  EXPECT_EQ(rep.status, 0);
  EXPECT_EQ(rep.events_changed, 1u);
  EXPECT_FALSE(rbtrace_events::ctltest_ping::enabled());
  ev.enable = true;
  ev.event = "ctltest:*";
  const int s4 = connect_to(getpid(), dir_, &err);
  ASSERT_EQ(call(s4, ev, -1, &rep, &err), 0) << err;
  close(s4);
  EXPECT_TRUE(rbtrace_events::ctltest_ping::enabled());
  ev.event = "nosuch:event";
  const int s5 = connect_to(getpid(), dir_, &err);
  ASSERT_EQ(call(s5, ev, -1, &rep, &err), 0) << err;
  close(s5);
  EXPECT_EQ(rep.status, -ENOENT);
}

}  // namespace

// Events refused for want of a CPU slot: in the stat reply and in the
// snapshot file (CPU 0's CPUSTAT, tracedat.h); a snapshot reply names the
// owner thread of each CPU.
TEST_F(ControlServer, RefusalsForWantOfASlotInStatAndSnapshot) {
  std::atomic<int> bound{0};
  std::atomic<bool> done{false};
  std::atomic<int32_t> tids[2] = {0, 0};
  std::vector<std::thread> owners;
  for (uint32_t c = 0; c < 2; c++) {
    owners.emplace_back([&, c] {
      ASSERT_EQ(snap_->live().bind_thread(c), 0);
      tids[c].store(static_cast<int32_t>(gettid()));
      rbtrace_events::ctltest_ping::emit(snap_->live(), 1);
      bound.fetch_add(1);
      while (!done.load()) std::this_thread::sleep_for(1ms);
      snap_->live().unbind_thread();
    });
  }
  while (bound.load() < 2) std::this_thread::sleep_for(1ms);
  std::thread third([&] {  // both slots are owned: refused, counted once each
    for (int i = 0; i < 5; i++) EXPECT_EQ(rbtrace_events::ctltest_ping::emit(snap_->live(), 2), -EBUSY);
  });
  third.join();

  std::string err;
  int s = connect_to(getpid(), dir_, &err);
  ASSERT_GE(s, 0) << err;
  Request st;
  Reply rep;
  ASSERT_EQ(call(s, st, -1, &rep, &err), 0) << err;
  close(s);
  EXPECT_EQ(rep.stat.no_slot_dropped, 5u);

  const std::string out = base_ + "/noslot.dat";
  const int fd = open(out.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  s = connect_to(getpid(), dir_, &err);
  ASSERT_GE(s, 0) << err;
  Request req;
  req.type = MsgType::kSnapshot;
  ASSERT_EQ(call(s, req, fd, &rep, &err), 0) << err;
  close(s);
  ASSERT_EQ(rep.status, 0) << rep.message;
  ASSERT_EQ(rep.snapshot.cpus.size(), 2u);
  for (uint32_t c = 0; c < 2; c++) EXPECT_EQ(rep.snapshot.cpus[c].owner, tids[c].load()) << c;
  done.store(true);
  for (auto& t : owners) t.join();
  auto reader = TraceDatReader::open_fd(fd, &err);
  close(fd);
  ASSERT_TRUE(reader) << err;
  EXPECT_EQ(no_slot_dropped_in(reader->cpus()[0].stats), 5u) << reader->cpus()[0].stats;
  EXPECT_EQ(no_slot_dropped_in(reader->cpus()[1].stats), 0u);  // once per file
}

// A thread that wrote and exited before the snapshot is named in it: its
// name was recorded when it claimed its slot (issue 11, part 3).
TEST_F(ControlServer, SnapshotNamesThreadsThatAreGone) {
  int32_t tid = 0;
  std::thread t([&] {
    ASSERT_EQ(pthread_setname_np(pthread_self(), "ctl-gone"), 0);
    tid = static_cast<int32_t>(gettid());
    for (uint64_t i = 0; i < 10; i++) ASSERT_EQ(rbtrace_events::ctltest_ping::emit(snap_->live(), i), 0);
  });
  t.join();
  const std::string out = base_ + "/gone.dat";
  const int fd = open(out.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  std::string err;
  const int s = connect_to(getpid(), dir_, &err);
  ASSERT_GE(s, 0) << err;
  Request req;
  req.type = MsgType::kSnapshot;
  Reply rep;
  ASSERT_EQ(call(s, req, fd, &rep, &err), 0) << err;
  close(s);
  ASSERT_EQ(rep.status, 0) << rep.message;
  auto reader = TraceDatReader::open_fd(fd, &err);
  close(fd);
  ASSERT_TRUE(reader) << err;
  EXPECT_EQ(reader->comm(tid), "ctl-gone");
}

// ---- one server per path, stale sockets, caps, client deadlines (issue 12) ----

namespace {

long ms_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - t0)
                               .count());
}

// A listening (or, with backlog < 0, only bound) Unix socket at `path`.
int raw_listener(const std::string& path, int backlog) {
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(s);
    return -1;
  }
  if (backlog >= 0 && listen(s, backlog) != 0) {
    close(s);
    return -1;
  }
  return s;
}

// One stat request to process `pid`'s server in `dir`: the reply (status
// -1 when the call itself failed, with *err).
Reply stat_reply(const std::string& dir, std::string* err, pid_t pid = getpid()) {
  Reply rep;
  rep.status = -1;
  const int s = connect_to(pid, dir, err);
  if (s < 0) return rep;
  if (call(s, Request{}, -1, &rep, err, 5000ms) != 0) rep.status = -1;
  close(s);
  return rep;
}

}  // namespace

// A second Server for the same socket path fails with a clear error; the
// first keeps its socket (same inode) and keeps serving. (Before, the second
// unlinked the first's socket and bound its own.)
TEST_F(ControlServer, ASecondServerForTheSamePathFails) {
  struct stat before {}, after {};
  ASSERT_EQ(stat(server_->socket_path().c_str(), &before), 0);
  ServerOptions so;
  so.dir = dir_;
  Error err;
  auto second = Server::start(*snap_, so, &err);
  EXPECT_FALSE(second) << "a second server took over " << server_->socket_path();
  EXPECT_EQ(err.code, EADDRINUSE);
  EXPECT_NE(err.message.find("a control server already serves " + server_->socket_path()),
            std::string::npos)
      << err.message;
  second.reset();
  ASSERT_EQ(stat(server_->socket_path().c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino) << "the socket was replaced";
  EXPECT_TRUE(stat_works());
  // Stopped, the server leaves neither its socket nor its lock file; the
  // path can be served again.
  server_.reset();
  const std::string stem = dir_ + "/" + std::to_string(getpid());
  EXPECT_NE(access((stem + ".sock").c_str(), F_OK), 0) << "socket left behind";
  EXPECT_NE(access((stem + ".lock").c_str(), F_OK), 0) << "lock file left behind";
  server_ = Server::start(*snap_, so, &err);
  ASSERT_TRUE(server_) << err.message;
  EXPECT_TRUE(stat_works());
}

// Two threads starting a server for the same fresh path at once: exactly
// one wins, every time.
TEST_F(ControlServer, RacingStartsForOnePathOneWins) {
  for (int round = 0; round < 50; round++) {
    ServerOptions so;
    so.dir = base_ + "/race" + std::to_string(round);
    std::unique_ptr<Server> got[2];
    Error errs[2];
    std::atomic<int> ready{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 2; i++) {
      ts.emplace_back([&, i] {
        // Relaxed: a start line only (the two starts need no order between them).
        ready.fetch_add(1, std::memory_order_relaxed);
        while (ready.load(std::memory_order_relaxed) < 2) {
        }
        got[i] = Server::start(*snap_, so, &errs[i]);
      });
    }
    for (auto& t : ts) t.join();
    ASSERT_EQ((got[0] ? 1 : 0) + (got[1] ? 1 : 0), 1)
        << "round " << round << ": " << errs[0].message << " / " << errs[1].message;
    const int loser = got[0] ? 1 : 0;
    EXPECT_EQ(errs[loser].code, EADDRINUSE) << errs[loser].message;
    std::string e;
    EXPECT_EQ(stat_reply(so.dir, &e).status, 0) << e;
  }
}

// A socket nobody listens on (its process died; here: bound, then closed)
// and a stale lock file are replaced.
TEST_F(ControlServer, AStaleSocketIsReplaced) {
  const std::string d = base_ + "/stale";
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  const std::string sock = d + "/" + std::to_string(getpid()) + ".sock";
  const int s = raw_listener(sock, -1);
  ASSERT_GE(s, 0);
  close(s);
  const int lk = open((d + "/" + std::to_string(getpid()) + ".lock").c_str(),
                      O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(lk, 0);
  close(lk);
  ServerOptions so;
  so.dir = d;
  Error err;
  auto server = Server::start(*snap_, so, &err);
  ASSERT_TRUE(server) << err.message;
  std::string e;
  EXPECT_EQ(stat_reply(d, &e).status, 0) << e;
}

// A socket someone else listens on (a server that does not take the lock,
// e.g. another version) is not taken over.
TEST_F(ControlServer, AListenerThatIsNotOursIsNotTakenOver) {
  const std::string d = base_ + "/foreign";
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  const std::string sock = d + "/" + std::to_string(getpid()) + ".sock";
  const int l = raw_listener(sock, 4);
  ASSERT_GE(l, 0);
  ServerOptions so;
  so.dir = d;
  Error err;
  auto server = Server::start(*snap_, so, &err);
  EXPECT_FALSE(server);
  EXPECT_EQ(err.code, EADDRINUSE);
  EXPECT_NE(err.message.find("already serves " + sock), std::string::npos) << err.message;
  // Still the foreign listener's: a connection reaches it.
  const int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
  EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  const int a = accept4(l, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  EXPECT_GE(a, 0);
  if (a >= 0) close(a);
  close(c);
  close(l);
}

// Beyond the cap on open connections (in all, and per peer process) a new
// connection is answered -EBUSY with a message saying which, and counted.
TEST_F(ControlServer, ConnectionsOverTheCapsAreAnsweredBusy) {
  for (const bool per_peer : {false, true}) {
    ServerOptions so;
    so.dir = base_ + (per_peer ? "/cap-peer" : "/cap-total");
    so.io_timeout = 20000ms;  // the idle connections stay for the whole test
    so.max_connections = per_peer ? 64 : 3;
    so.max_per_peer = per_peer ? 3 : 64;
    Error err;
    auto server = Server::start(*snap_, so, &err);
    ASSERT_TRUE(server) << err.message;
    std::vector<int> idle;
    for (int i = 0; i < 3; i++) {
      const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::strncpy(sa.sun_path, server->socket_path().c_str(), sizeof sa.sun_path - 1);
      ASSERT_EQ(connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
      // One byte of a request: started, so not the idle kind the server
      // closes to make room (FullOfIdleConnectionsTheOldestMakesRoom).
      ASSERT_EQ(send(s, "R", 1, MSG_NOSIGNAL), 1);
      idle.push_back(s);
    }
    // Accepted first (the queue is first in, first out): ours is the 4th.
    std::string e;
    const Reply rep = stat_reply(so.dir, &e);
    EXPECT_EQ(rep.status, -EBUSY) << e << rep.message;
    EXPECT_NE(rep.message.find(per_peer ? "the limit per process" : "connections open, its limit"),
              std::string::npos)
        << rep.message;
    EXPECT_EQ(server->counters().over_cap, 1u);
    for (int s : idle) close(s);
    server.reset();
  }
}

// Full of connections that sent nothing (many processes can each hold a
// few, under their own cap): the oldest idle one is closed to make room,
// answered -EBUSY, and the new client is served. (Before, every new client
// got -EBUSY for as long as the idle ones were renewed.)
TEST_F(ControlServer, FullOfIdleConnectionsTheOldestMakesRoom) {
  ServerOptions so;
  so.dir = base_ + "/cap-idle";
  so.io_timeout = 20000ms;
  so.max_connections = 3;
  so.max_per_peer = 64;
  Error err;
  auto server = Server::start(*snap_, so, &err);
  ASSERT_TRUE(server) << err.message;
  std::vector<int> idle;
  for (int i = 0; i < 3; i++) {
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, server->socket_path().c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    idle.push_back(s);
  }
  std::string e;
  const Reply rep = stat_reply(so.dir, &e);
  EXPECT_EQ(rep.status, 0) << e << rep.message;
  EXPECT_EQ(server->counters().over_cap, 1u);
  // The first idle connection was the one closed: it reads its answer, then EOF.
  char buf[4096];
  ssize_t got = 0, n;
  while ((n = recv(idle[0], buf + got, sizeof buf - static_cast<size_t>(got), 0)) > 0) got += n;
  EXPECT_EQ(n, 0);
  EXPECT_NE(std::string(buf, static_cast<size_t>(got)).find("closed to make room"), std::string::npos);
  for (int s : idle) close(s);
}

// The client's connect is bounded: against a listener whose queue is full
// and never accepted, connect_to fails with -ETIMEDOUT after its timeout,
// naming the process, the socket and the timeout. (Before, it blocked for
// ever: here the child would die of its alarm.)
TEST_F(ControlServer, ConnectTimesOutOnAFullQueue) {
  const std::string d = base_ + "/full";
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  const pid_t me = getpid();
  const std::string sock = d + "/" + std::to_string(me) + ".sock";
  const int l = raw_listener(sock, 0);
  ASSERT_GE(l, 0);
  std::vector<int> fill;
  for (int i = 0; i < 64; i++) {
    const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
    if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      EXPECT_EQ(errno, EAGAIN);
      close(s);
      break;
    }
    fill.push_back(s);
  }
  ASSERT_LT(fill.size(), 64u) << "the queue never filled";
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a connect that blocks for ever becomes SIGALRM
    const auto t0 = std::chrono::steady_clock::now();
    std::string err;
    const int rc = connect_to(me, d, &err, 300ms);
    const long ms = ms_since(t0);
    const std::string out = std::to_string(rc) + " " + std::to_string(ms) + " " + err;
    (void)!write(p[1], out.data(), out.size());
    _exit(0);
  }
  close(p[1]);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  ASSERT_TRUE(WIFEXITED(st)) << "connect_to did not return (killed by signal " << WTERMSIG(st) << ")";
  std::string out(4096, '\0');
  const ssize_t n = read(p[0], out.data(), out.size());
  close(p[0]);
  ASSERT_GT(n, 0);
  out.resize(static_cast<size_t>(n));
  int rc = 0;
  long ms = 0;
  int used = 0;
  ASSERT_EQ(std::sscanf(out.c_str(), "%d %ld %n", &rc, &ms, &used), 2) << out;
  const std::string err = out.substr(static_cast<size_t>(used));
  EXPECT_EQ(rc, -ETIMEDOUT) << err;
  EXPECT_LT(ms, 3000) << "bounded by 300 ms";
  EXPECT_NE(err.find("process " + std::to_string(me)), std::string::npos) << err;
  EXPECT_NE(err.find(sock), std::string::npos) << err;
  EXPECT_NE(err.find("300 ms"), std::string::npos) << err;
  std::printf("[ info ] connect_to against a full queue, timeout 300 ms: returned after %ld ms: %s\n",
              ms, err.c_str());
  for (int s : fill) close(s);
  close(l);
}

// The client's reply deadline is one for the whole exchange: a server that
// trickles its reply a byte every 50 ms (each read well within the
// timeout) cannot hold call() past it. (Before, the timeout was per read:
// the whole reply, at 50 ms a byte, took half a minute.)
TEST_F(ControlServer, TheClientsReplyDeadlineIsTotal) {
  const std::string d = base_ + "/slow";
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  const int l = raw_listener(d + "/" + std::to_string(getpid()) + ".sock", 4);
  ASSERT_GE(l, 0);
  Reply fake;
  fake.for_type = MsgType::kStat;
  fake.stat.cpus.resize(2);
  const std::vector<uint8_t> m = encode_reply(fake);
  std::thread slow([&] {
    const int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    uint8_t hdr[kHeaderSize];
    (void)!read(c, hdr, sizeof hdr);
    for (size_t i = 0; i < m.size(); i++) {
      if (send(c, m.data() + i, 1, MSG_NOSIGNAL) != 1) break;  // the client gave up
      std::this_thread::sleep_for(50ms);
    }
    close(c);
  });
  std::string err;
  const int s = connect_to(getpid(), d, &err);
  ASSERT_GE(s, 0) << err;
  Reply rep;
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = call(s, Request{}, -1, &rep, &err, 500ms);
  const long ms = ms_since(t0);
  close(s);
  slow.join();
  close(l);
  EXPECT_EQ(rc, -ETIMEDOUT) << err;
  EXPECT_LT(ms, 3000);
  EXPECT_NE(err.find("500 ms"), std::string::npos) << err;
  std::printf("[ info ] call() against a trickled reply (%zu bytes at 50 ms each), timeout 500 ms: "
              "%ld ms\n",
              m.size(), ms);
}

// A snapshot descriptor of a procfs file (here /proc/self/comm: regular,
// empty, writable by its owner: it passed the old checks) is refused, and
// nothing is written into it.
TEST_F(ControlServer, ASnapshotIntoProcfsIsRefused) {
  auto comm = [] {
    std::FILE* f = std::fopen("/proc/self/comm", "r");
    char b[64] = {};
    if (f) {
      (void)!std::fgets(b, sizeof b, f);
      std::fclose(f);
    }
    return std::string(b);
  };
  const std::string before = comm();
  const int fd = open("/proc/self/comm", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  std::string err;
  const int s = connect_to(getpid(), dir_, &err);
  ASSERT_GE(s, 0) << err;
  Request req;
  req.type = MsgType::kSnapshot;
  Reply rep;
  ASSERT_EQ(call(s, req, fd, &rep, &err), 0) << err;
  close(s);
  close(fd);
  EXPECT_EQ(rep.status, -EINVAL) << rep.message;
  EXPECT_NE(rep.message.find("procfs"), std::string::npos) << rep.message;
  EXPECT_EQ(comm(), before);
  EXPECT_EQ(snap_->snapshots_taken(), 0u);
  EXPECT_EQ(server_->counters().failed, 1u);
}

// fork() while the server holds an open connection: the child's copy of the
// Server, destroyed, closes the child's copies of the connections (and of
// nothing of the parent's): the client sees the end of its connection when
// the parent's server closes it at its deadline, with the child still alive.
TEST_F(ControlServer, AForkedChildClosesItsCopiesOfOpenConnections) {
  const int s = raw_connect();
  ASSERT_GE(s, 0);
  const auto m = encode_request(Request{});
  ASSERT_EQ(write(s, m.data(), 3), 3);  // never completed
  EXPECT_TRUE(stat_works());  // accepted after s: s is open in the server now
  int up[2], down[2];
  ASSERT_EQ(pipe2(up, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(down, O_CLOEXEC), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);
    close(up[0]);
    close(down[1]);
    server_.reset();  // the child's copy: its descriptors only
    char one = 1;
    (void)!write(up[1], &one, 1);
    (void)!read(down[0], &one, 1);  // alive until the parent is done
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  char one;
  ASSERT_EQ(read(up[0], &one, 1), 1);
  // The server answers -ETIMEDOUT at the deadline (500 ms) and closes: EOF,
  // though the child lives.
  bool eof = false;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> buf(4096);
  while (!eof && std::chrono::steady_clock::now() - t0 < 10s) {
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(s, buf.data(), buf.size());
    if (n <= 0) eof = true;
  }
  EXPECT_TRUE(eof) << "the child kept the connection open";
  close(s);
  close(down[1]);
  close(up[0]);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_TRUE(stat_works()) << "the child stopped the parent's server";
  EXPECT_EQ(server_->counters().timed_out, 1u);
}
