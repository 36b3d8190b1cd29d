// Issue 16: recording sessions and the CLI's points, end to end. This
// process serves its own control socket (a Snapshot and a Server, as an
// application would) and emits numbered events on bound threads; the
// `rbtrace` CLI, a separate process, drives it: record start, on/off,
// rotate, flush, status, stop, `events` listing and patterns, and the
// refusals (a second start, stop with none, a symlink or another user's
// directory, an application that does not allow recording). The files the
// recording published are read back with `rbtrace report` (several files
// merged by time): every event written while recording was on, once, in
// order. Then the CLI's own points: exit codes, --dir, --version, -o DIR,
// unique default names, --force, export -o -, report --json -t.
#include <gtest/gtest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(clirec, rec, ((uint64_t, seq)))
RBTRACE_EVENT(clirec, other, ((uint32_t, x)))

using namespace rbtrace;

namespace {

using rbtrace_test::Proc;
using rbtrace_test::run_shell;

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// The *.dat files in `dir`, sorted by name (the consumer's names sort by
// segment).
std::vector<std::string> dat_files(const std::string& dir) {
  std::vector<std::string> v;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".dat") == 0) v.push_back(dir + "/" + n);
    }
    closedir(d);
  }
  std::sort(v.begin(), v.end());
  return v;
}

// From `rbtrace report --json` lines: each record's (ts_ns, seq) for
// clirec:rec, in output order.
std::vector<std::pair<uint64_t, uint64_t>> rec_seqs(const std::string& json) {
  std::vector<std::pair<uint64_t, uint64_t>> v;
  std::istringstream in(json);
  std::string line;
  while (std::getline(in, line)) {
    if (!contains(line, "\"name\":\"rec\"")) continue;
    const size_t t = line.find("\"ts_ns\":"), s = line.find("\"seq\":");
    if (t == std::string::npos || s == std::string::npos) continue;
    v.emplace_back(std::strtoull(line.c_str() + t + 8, nullptr, 10),
                   std::strtoull(line.c_str() + s + 6, nullptr, 10));
  }
  return v;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += " " + x;
  return s;
}

class RecordCli : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-recordcli-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    setenv("RBTRACE_CONTROL_DIR", (base_ + "/ctl").c_str(), 1);
    cli_ = RBTRACE_CLI;
    pid_ = std::to_string(getpid());
  }
  void TearDown() override {
    server_.reset();
    snap_.reset();
    unsetenv("RBTRACE_CONTROL_DIR");
    std::system(("rm -rf " + base_).c_str());
  }

  // A producer/consumer ring big enough that nothing written here is
  // dropped, and a control server on it.
  void serve(bool allow_recording = true) {
    Options o;
    o.ncpus = 2;
    o.pages_per_cpu = 64;
    o.mode = Mode::kProducerConsumer;
    Error err;
    snap_ = Snapshot::create(o, &err);
    ASSERT_TRUE(snap_) << err.message;
    control::ServerOptions so;
    so.allow_recording = allow_recording;
    server_ = control::Server::start(*snap_, so, &err);
    ASSERT_TRUE(server_) << err.message;
  }

  // Emits seq = from .. from+n-1 on CPU `cpu` from a thread of its own.
  void emit(uint32_t cpu, uint64_t from, uint64_t n) {
    std::thread t([&] {
      ASSERT_EQ(snap_->live().bind_thread(cpu), 0);
      for (uint64_t i = 0; i < n; i++) rbtrace_events::clirec_rec::emit(snap_->live(), from + i);
      snap_->live().unbind_thread();
    });
    t.join();
  }

  Proc rb(const std::string& args) { return run_shell(cli_ + " " + args); }

  std::string base_, cli_, pid_;
  std::unique_ptr<Snapshot> snap_;
  std::unique_ptr<control::Server> server_;
};

TEST_F(RecordCli, StartRotateFlushStopAndReportEveryEventOnce) {
  serve();
  const std::string out = base_ + "/out";
  emit(0, 0, 1000);  // before the start: still in the ring, recorded too
  Proc r = rb("record start " + pid_ + " -o " + out + " --segment-size 1 --period-us 1000");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "recording process " + pid_ + " into " + out)) << r.out;
  struct stat st {};
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);  // made by the CLI, private

  // A second start is refused, and says why.
  r = rb("record start " + pid_ + " -o " + base_ + "/out2");
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "refused: a recording is already running")) << r.out;

  r = rb("record status " + pid_);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "recording: running; tracing on")) << r.out;

  emit(1, 1000, 1000);
  r = rb("record rotate " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "published trace-")) << r.out;
  const size_t after_rotate = dat_files(out).size();
  EXPECT_GE(after_rotate, 1u) << r.out;
  EXPECT_TRUE(contains(r.out, "2000 events")) << r.out;  // everything so far is published

  // Off: events are refused (counted as disabled), none recorded.
  r = rb("record off " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "tracing off")) << r.out;
  EXPECT_FALSE(snap_->live().record_is_on());
  emit(0, 900000, 100);
  EXPECT_EQ(snap_->total_stats(0).disabled, 100u);
  r = rb("record on " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(snap_->live().record_is_on());

  emit(0, 2000, 500);
  r = rb("record flush " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_GT(dat_files(out).size(), after_rotate) << r.out;
  emit(1, 2500, 500);
  r = rb("record stop " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "recording stopped")) << r.out;
  EXPECT_TRUE(contains(r.out, "3000 events")) << r.out;
  EXPECT_TRUE(contains(r.out, "0 events and 0 pages lost")) << r.out;

  // Stop (and flush, rotate) with none running: refused.
  for (const char* a : {"stop", "flush", "rotate"}) {
    r = rb(std::string("record ") + a + " " + pid_);
    EXPECT_EQ(r.status, 6) << a << ": " << r.out;
    EXPECT_TRUE(contains(r.out, "no recording is running")) << r.out;
  }
  r = rb("record status " + pid_);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "recording: none")) << r.out;

  // Every event recorded once: the files, newest first on the command line,
  // merged by time into one report.
  std::vector<std::string> files = dat_files(out);
  ASSERT_GE(files.size(), 3u);
  std::reverse(files.begin(), files.end());
  r = rb("report --json" + join(files));
  ASSERT_EQ(r.status, 0) << r.out.substr(0, 2000);
  const auto seqs = rec_seqs(r.out);
  ASSERT_EQ(seqs.size(), 3000u);
  std::vector<uint64_t> got;
  for (size_t i = 0; i < seqs.size(); i++) {
    if (i > 0) {
      EXPECT_LE(seqs[i - 1].first, seqs[i].first) << "not merged by time at " << i;
    }
    got.push_back(seqs[i].second);
  }
  // In time order the writers' batches follow each other: 0..2999.
  for (uint64_t i = 0; i < got.size(); i++) ASSERT_EQ(got[i], i) << "at " << i;
  // The text report too (-i as trace-cmd takes them), and -t.
  std::string is;
  for (const std::string& f : files) is += " -i " + f;
  r = rb("report -t" + is);
  ASSERT_EQ(r.status, 0) << r.out.substr(0, 2000);
  size_t n = 0;
  for (size_t at = 0; (at = r.out.find(" rec:", at)) != std::string::npos; at++) n++;
  EXPECT_EQ(n, 3000u);
  EXPECT_TRUE(contains(r.out, "seq=2999")) << r.out.substr(0, 2000);
  // A new recording can start once the last stopped.
  r = rb("record start " + pid_ + " -o " + base_ + "/again");
  EXPECT_EQ(r.status, 0) << r.out;
}

// A recording the CLI started stops with the application's Server: every
// event published, no spool left, no recording after.
TEST_F(RecordCli, RecordingStopsCleanlyWithTheServer) {
  serve();
  const std::string out = base_ + "/out";
  Proc r = rb("record start " + pid_ + " -o " + out + " --file-mode 640 --prefix app");
  ASSERT_EQ(r.status, 0) << r.out;
  emit(0, 0, 700);
  emit(1, 700, 300);
  server_.reset();  // as the application stops
  const std::vector<std::string> files = dat_files(out);
  ASSERT_FALSE(files.empty());
  struct stat st {};
  for (const std::string& f : files) {
    EXPECT_TRUE(contains(f, out + "/app-")) << f;
    ASSERT_EQ(stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u) << f;
  }
  r = rb("report --json" + join(files));
  ASSERT_EQ(r.status, 0) << r.out.substr(0, 2000);
  EXPECT_EQ(rec_seqs(r.out).size(), 1000u);
  // The session's spool is gone (what is left is the empty spool/ and tmp/).
  r = run_shell("find " + out + "/spool -mindepth 1");
  EXPECT_EQ(r.out, "");
  // The ring is read by no one now: a new Server may record it again.
  Error err;
  server_ = control::Server::start(*snap_, control::ServerOptions{}, &err);
  ASSERT_TRUE(server_) << err.message;
  r = rb("record start " + pid_ + " -o " + base_ + "/out2");
  EXPECT_EQ(r.status, 0) << r.out;
  r = rb("record stop " + pid_);
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST_F(RecordCli, RefusedDirectoriesAndApplications) {
  serve();
  // A symlink as -o: never followed.
  ASSERT_EQ(mkdir((base_ + "/real").c_str(), 0700), 0);
  ASSERT_EQ(symlink((base_ + "/real").c_str(), (base_ + "/link").c_str()), 0);
  Proc r = rb("record start " + pid_ + " -o " + base_ + "/link");
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "symbolic link")) << r.out;
  // Not with a trailing slash either (O_NOFOLLOW alone would follow
  // "link/"), for record start and for snapshot -o.
  r = rb("record start " + pid_ + " -o " + base_ + "/link/");
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "symbolic link")) << r.out;
  r = rb("snapshot " + pid_ + " -o " + base_ + "/link/");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_EQ(run_shell("ls -A " + base_ + "/real").out, "") << "something was written through the link";
  // A directory of another user (we are root in CI; as anyone else the
  // chown fails and the test says so).
  const std::string other = base_ + "/other";
  ASSERT_EQ(mkdir(other.c_str(), 0700), 0);
  ASSERT_EQ(chown(other.c_str(), 65534, 65534), 0) << "needs root: " << std::strerror(errno);
  r = rb("record start " + pid_ + " -o " + other);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "owned by uid 65534, not by the traced process's user")) << r.out;
  // Open to others: refused.
  const std::string open_dir = base_ + "/open";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  r = rb("record start " + pid_ + " -o " + open_dir);
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "writable by group or others")) << r.out;
  // Nothing started by any of these.
  r = rb("record status " + pid_);
  EXPECT_TRUE(contains(r.out, "recording: none")) << r.out;
  // Usage errors: exit 2.
  EXPECT_EQ(rb("record start " + pid_).status, 2);
  EXPECT_EQ(rb("record restart " + pid_).status, 2);
  EXPECT_EQ(rb("record stop " + pid_ + " -o " + base_).status, 2);
  EXPECT_EQ(rb("record start " + pid_ + " -o " + base_ + "/x --file-mode 777").status, 2);
  EXPECT_EQ(rb("record start " + pid_ + " -o " + base_ + "/x --prefix ../a").status, 2);
  EXPECT_EQ(rb("record start " + pid_ + " -o " + base_ + "/x --backend dpdk").status, 2);

  // An application that does not let the control socket record.
  server_.reset();
  Error err;
  control::ServerOptions so;
  so.allow_recording = false;
  server_ = control::Server::start(*snap_, so, &err);
  ASSERT_TRUE(server_) << err.message;
  r = rb("record start " + pid_ + " -o " + base_ + "/denied");
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "does not let the control socket record")) << r.out;
  // The directory the refused start made is gone again.
  struct stat st {};
  EXPECT_NE(lstat((base_ + "/denied").c_str(), &st), 0) << "left behind by a refused start";

  // An application that records the ring with a consumer of its own and
  // leaves allow_recording at its default: the start is refused (one
  // consumer per ring), the application's recording goes on.
  server_.reset();
  server_ = control::Server::start(*snap_, control::ServerOptions{}, &err);
  ASSERT_TRUE(server_) << err.message;
  ConsumerOptions own;
  own.dir = base_ + "/own";
  own.fsync = false;
  auto mine = Consumer::create(snap_->live(), own, &err);
  ASSERT_TRUE(mine) << err.message;
  r = rb("record start " + pid_ + " -o " + base_ + "/second");
  EXPECT_EQ(r.status, 6) << r.out;
  EXPECT_TRUE(contains(r.out, "consumer of its own")) << r.out;
  ASSERT_EQ(mine->stop(), 0);
  mine.reset();
  r = rb("record off " + pid_);  // on/off still work
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_FALSE(snap_->live().record_is_on());
  snap_->live().record_on();
}

// Through the client API, what the CLI never sends: record start without a
// descriptor, with a regular file's, with /proc's; a descriptor with a
// request that takes none. Each refused, nothing started.
TEST_F(RecordCli, RecordStartNeedsAPrivateDirectoryDescriptor) {
  serve();
  auto call = [&](control::MsgType t, int fd, control::Reply* rep) {
    std::string err;
    const int s = control::connect_to(getpid(), "", &err);
    EXPECT_GE(s, 0) << err;
    control::Request req;
    req.type = t;
    const int rc = control::call(s, req, fd, rep, &err);
    close(s);
    return rc;
  };
  control::Reply rep;
  ASSERT_EQ(call(control::MsgType::kRecordStart, -1, &rep), 0);
  EXPECT_EQ(rep.status, -EBADF) << rep.message;
  const std::string file = base_ + "/file";
  const int f = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(f, 0);
  ASSERT_EQ(call(control::MsgType::kRecordStart, f, &rep), 0);
  EXPECT_EQ(rep.status, -ENOTDIR) << rep.message;
  ASSERT_EQ(call(control::MsgType::kRecordStatus, f, &rep), 0);
  EXPECT_EQ(rep.status, -EBADMSG) << rep.message;
  close(f);
  const int proc = open("/proc/self", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(proc, 0);
  ASSERT_EQ(call(control::MsgType::kRecordStart, proc, &rep), 0);
  EXPECT_NE(rep.status, 0) << rep.message;  // not ours to write (or procfs): refused
  close(proc);
  ASSERT_EQ(call(control::MsgType::kRecordStatus, -1, &rep), 0);
  EXPECT_EQ(rep.status, 0) << rep.message;
  EXPECT_FALSE(rep.record.active);
  EXPECT_EQ(server_->counters().failed, 3u);
  EXPECT_EQ(server_->counters().malformed, 1u);
}

TEST_F(RecordCli, EventsAreListedAndPatternsTakeStars) {
  serve();
  Proc r = rb("events " + pid_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "clirec:rec")) << r.out;
  EXPECT_TRUE(contains(r.out, "clirec:other")) << r.out;
  r = rb("events " + pid_ + " 'clirec:*' --disable");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "disabled 2 events")) << r.out;
  r = rb("events " + pid_ + " 'clirec:*'");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "clirec:rec")) << r.out;
  EXPECT_FALSE(contains(r.out, " enabled")) << r.out;
  EXPECT_FALSE(rbtrace_events::clirec_rec::enabled());
  for (const char* all : {"'*'", "'*:*'"}) {
    r = rb("events " + pid_ + " " + all + " --enable");
    ASSERT_EQ(r.status, 0) << all << ": " << r.out;
    EXPECT_TRUE(rbtrace_events::clirec_rec::enabled()) << all;
    rb("events " + pid_ + " '*:oth*' --disable");
    EXPECT_FALSE(rbtrace_events::clirec_other::enabled());
    EXPECT_TRUE(rbtrace_events::clirec_rec::enabled());
  }
  r = rb("events " + pid_ + " 'clirec:oth*'");
  EXPECT_TRUE(contains(r.out, "disabled")) << r.out;
  EXPECT_FALSE(contains(r.out, "clirec:rec")) << r.out;
  rb("events " + pid_ + " '*' --enable");
  r = rb("events " + pid_ + " 'nosuch:*' --enable");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "no event matches nosuch:*")) << r.out;
  EXPECT_EQ(rb("events " + pid_ + " 'a:b:c'").status, 2);
  EXPECT_EQ(rb("events " + pid_ + " --enable").status, 2);
  EXPECT_EQ(rb("events " + pid_ + " '*' --enable --disable").status, 2);
}

TEST_F(RecordCli, ExitCodesDirAndHelp) {
  for (const char* c : {"list", "stat", "snapshot", "events", "record", "report", "export",
                        "recover"}) {
    Proc r = rb(std::string(c) + " --help");
    EXPECT_EQ(r.status, 0) << c << ": " << r.out;
    EXPECT_TRUE(contains(r.out, "usage: rbtrace " + std::string(c))) << r.out;
  }
  Proc r = rb("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, "rbtrace 0.")) << r.out;
  r = rb("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* line : {"  4  no such process", "  5  not traced", "  6  refused", "record"})
    EXPECT_TRUE(contains(r.out, line)) << line << "\n" << r.out;

  // No such process: a pid that is not (a child reaped).
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, nullptr, 0);
  r = rb("stat " + std::to_string(gone));
  EXPECT_EQ(r.status, 4) << r.out;
  EXPECT_TRUE(contains(r.out, "no such process " + std::to_string(gone))) << r.out;
  // Not traced: we exist, and serve nothing yet.
  r = rb("stat " + pid_);
  EXPECT_EQ(r.status, 5) << r.out;
  EXPECT_TRUE(contains(r.out, "is not traced")) << r.out;

  // --dir: a server in another directory is found through it (the
  // environment names ours).
  Options o;
  o.ncpus = 1;
  o.pages_per_cpu = 4;
  auto snap = Snapshot::create(o);
  ASSERT_TRUE(snap);
  control::ServerOptions so;
  so.dir = base_ + "/elsewhere";
  Error err;
  auto server = control::Server::start(*snap, so, &err);
  ASSERT_TRUE(server) << err.message;
  EXPECT_EQ(rb("stat " + pid_).status, 5);
  r = rb("stat " + pid_ + " --dir " + so.dir);
  EXPECT_EQ(r.status, 0) << r.out;
  r = rb("list --dir " + so.dir);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, pid_ + " ")) << r.out;
  r = rb("list");
  EXPECT_FALSE(contains(r.out, pid_ + " ")) << r.out;
  // Without --dir and without the environment: the process's own choice
  // (its environment is ours, which names `ctl`): not there.
  r = run_shell("env -u RBTRACE_CONTROL_DIR " + cli_ + " events " + pid_ + " --dir " + so.dir);
  EXPECT_EQ(r.status, 0) << r.out;
  // Refused: a control directory open to others.
  ASSERT_EQ(chmod(so.dir.c_str(), 0755), 0);
  r = rb("stat " + pid_ + " --dir " + so.dir);
  EXPECT_EQ(r.status, 6) << r.out;
  ASSERT_EQ(chmod(so.dir.c_str(), 0700), 0);
}

TEST_F(RecordCli, SnapshotNamesForceAndExports) {
  serve();
  emit(0, 0, 50);
  const std::string dir = base_ + "/snaps";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  // Two snapshots at once into a directory: two files, neither refused.
  Proc a = rb("snapshot " + pid_ + " -o " + dir);
  Proc b = rb("snapshot " + pid_ + " -o " + dir + "/");
  EXPECT_EQ(a.status, 0) << a.out;
  EXPECT_EQ(b.status, 0) << b.out;
  EXPECT_EQ(dat_files(dir).size(), 2u) << a.out << b.out;
  // And with no -o, in the working directory, twice within a second.
  a = run_shell("cd " + dir + " && " + cli_ + " snapshot " + pid_ + " && " + cli_ + " snapshot " + pid_);
  EXPECT_EQ(a.status, 0) << a.out;
  EXPECT_EQ(dat_files(dir).size(), 4u) << a.out;
  for (const std::string& f : dat_files(dir))
    EXPECT_TRUE(contains(f, dir + "/rbtrace-" + pid_ + "-")) << f;

  // -o FILE that exists: refused, then replaced with --force.
  const std::string f = base_ + "/one.dat";
  emit(1, 50, 10);
  EXPECT_EQ(rb("snapshot " + pid_ + " -o " + f).status, 0);
  a = rb("snapshot " + pid_ + " -o " + f);
  EXPECT_EQ(a.status, 1) << a.out;
  EXPECT_TRUE(contains(a.out, "--force")) << a.out;
  emit(1, 60, 7);
  a = rb("snapshot " + pid_ + " -o " + f + " --force");
  EXPECT_EQ(a.status, 0) << a.out;
  a = rb("report --json " + f);
  EXPECT_EQ(rec_seqs(a.out).size(), 7u) << a.out;  // the new snapshot's events only
  // --force never replaces a directory.
  ASSERT_EQ(mkdir((base_ + "/adir.dat").c_str(), 0700), 0);
  EXPECT_EQ(rb("export --chrome " + f + " -o " + base_ + "/adir.dat --force").status, 1);

  // export -o -: to stdout, the same bytes as -o FILE.
  a = rb("export --chrome " + f + " -o -");
  EXPECT_EQ(a.status, 0) << a.out;
  EXPECT_TRUE(contains(a.out, "\"traceEvents\"")) << a.out.substr(0, 500);
  EXPECT_EQ(rb("export --chrome " + f + " -o " + base_ + "/c.json").status, 0);
  b = run_shell("cat " + base_ + "/c.json");
  EXPECT_EQ(a.out, b.out);
  struct stat st {};
  EXPECT_NE(lstat("-", &st), 0) << "a file named '-' was made";
  EXPECT_EQ(rb("export --chrome " + f + " -o " + base_ + "/c.json").status, 1);
  EXPECT_EQ(rb("export --chrome " + f + " -o " + base_ + "/c.json --force").status, 0);
  EXPECT_EQ(rb("export --ctf " + f + " -o -").status, 2);
  // report --json with -t or -R: refused, said.
  a = rb("report --json -t " + f);
  EXPECT_EQ(a.status, 2) << a.out;
  EXPECT_TRUE(contains(a.out, "-t is for the text report")) << a.out;
  EXPECT_EQ(rb("report " + f + " -t").status, 0);
  // Merged files: a corrupt one among them is named, alone.
  const std::string good = std::string(RBTRACE_CORPUS_DIR) + "/valid_two_cpus.dat";
  const std::string bad = std::string(RBTRACE_CORPUS_DIR) + "/event_length_beyond_page.dat";
  a = rb("report " + good + " " + bad);
  EXPECT_EQ(a.status, 1) << a.out;
  EXPECT_TRUE(contains(a.out, "rbtrace report: " + bad + ": ")) << a.out;
  EXPECT_FALSE(contains(a.out, "valid_two_cpus.dat")) << a.out;
  EXPECT_EQ(rb("report").status, 2);
}

}  // namespace
