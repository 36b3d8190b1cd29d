// End to end: the `rbtrace` CLI against a running `rbtrace-demo --control`
// (snapshot within a second, trace-cmd reads the file, list, refusals), and
// `rbtrace stat PID` against this process's own counters (exactly equal).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/control.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/snapshot.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(clitest, rec, ((uint64_t, seq)))

using namespace rbtrace;
using namespace std::chrono_literals;

namespace {

using rbtrace_test::Proc;
using rbtrace_test::run_shell;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rbtrace-clitest-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    setenv("RBTRACE_CONTROL_DIR", (base_ + "/ctl").c_str(), 1);
  }
  void TearDown() override {
    unsetenv("RBTRACE_CONTROL_DIR");
    std::system(("rm -rf " + base_).c_str());
  }
  std::string base_;
};

// Starts rbtrace-demo --control; returns its pid once its socket is up.
pid_t start_demo(int* out_fd, const char* blocking_workers = "0", bool membarrier = true) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    if (!membarrier) setenv("RBTRACE_MEMBARRIER", "0", 1);
    execl(RBTRACE_DEMO, RBTRACE_DEMO, "--control", "--seconds", "30", "--mode", "overwrite",
          "--pages", "256", "--blocking-workers", blocking_workers, static_cast<char*>(nullptr));
    _exit(127);
  }
  close(p[1]);
  *out_fd = p[0];
  std::string seen;
  char buf[512];
  while (seen.find("control socket") == std::string::npos) {
    const ssize_t n = read(p[0], buf, sizeof buf);
    if (n <= 0) return -1;
    seen.append(buf, static_cast<size_t>(n));
  }
  return pid;
}

TEST_F(CliTest, SnapshotOfARunningDemoIsReadByTraceCmd) {
  int demo_out = -1;
  const pid_t pid = start_demo(&demo_out);
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(300ms);  // let it trace a while
  const std::string cli = RBTRACE_CLI;
  const std::string pids = std::to_string(pid);

  Proc list = run_shell(cli + " list");
  EXPECT_EQ(list.status, 0) << list.out;
  EXPECT_NE(list.out.find(pids + " "), std::string::npos) << list.out;

  const std::string f = base_ + "/f.dat";
  const auto t0 = std::chrono::steady_clock::now();
  Proc snap = run_shell(cli + " snapshot " + pids + " -o " + f);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(snap.status, 0) << snap.out;
  EXPECT_LT(took, 1s) << "rbtrace snapshot took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  struct stat st {};
  ASSERT_EQ(stat(f.c_str(), &st), 0) << snap.out;
  EXPECT_GT(st.st_size, 4096);
  EXPECT_EQ(st.st_uid, geteuid());

  Proc report = run_shell("trace-cmd report " + f);
  EXPECT_EQ(report.status, 0) << report.out.substr(0, 2000);
  EXPECT_NE(report.out.find("work:"), std::string::npos) << report.out.substr(0, 2000);
  EXPECT_NE(report.out.find("seq="), std::string::npos);
  EXPECT_EQ(report.out.find("failed"), std::string::npos) << report.out.substr(0, 2000);

  // One CPU; an existing name is never replaced; a bad CPU is refused.
  Proc one = run_shell(cli + " snapshot " + pids + " --cpu 1 -o " + base_ + "/one.dat");
  EXPECT_EQ(one.status, 0) << one.out;
  EXPECT_NE(one.out.find("1 CPU,"), std::string::npos) << one.out;
  Proc again = run_shell(cli + " snapshot " + pids + " -o " + f);
  EXPECT_EQ(again.status, 1) << again.out;
  EXPECT_NE(again.out.find("exists"), std::string::npos) << again.out;
  Proc badcpu = run_shell(cli + " snapshot " + pids + " --cpu 99 -o " + base_ + "/bad.dat");
  EXPECT_EQ(badcpu.status, 1) << badcpu.out;
  EXPECT_NE(stat((base_ + "/bad.dat").c_str(), &st), 0) << "a failed snapshot left a file";

  Proc stat_run = run_shell(cli + " stat " + pids);
  EXPECT_EQ(stat_run.status, 0) << stat_run.out;
  EXPECT_NE(stat_run.out.find("2 snapshots"), std::string::npos) << stat_run.out;
  Proc ev = run_shell(cli + " events " + pids + " --disable demo:tick");
  EXPECT_EQ(ev.status, 0) << ev.out;
  Proc usage = run_shell(cli + " snapshot");
  EXPECT_EQ(usage.status, 2);

  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  close(demo_out);
  // The dead process's socket is stale: list skips it, snapshot fails.
  list = run_shell(cli + " list");
  EXPECT_EQ(list.status, 0);
  EXPECT_EQ(list.out.find(pids + " "), std::string::npos) << list.out;
  Proc dead = run_shell(cli + " snapshot " + pids + " -o " + base_ + "/dead.dat");
  EXPECT_EQ(dead.status, 4);  // no such process
  EXPECT_NE(stat((base_ + "/dead.dat").c_str(), &st), 0);
}

// `rbtrace stat PID` prints exactly this process's counters.
TEST_F(CliTest, StatAgreesWithTheProcessCounters) {
  Options o;
  o.ncpus = 3;
  o.pages_per_cpu = 4;
  o.mode = Mode::kOverwrite;
  auto snap = Snapshot::create(o);
  ASSERT_TRUE(snap);
  control::ServerOptions so;
  Error err;
  auto server = control::Server::start(*snap, so, &err);
  ASSERT_TRUE(server) << err.message;
  auto write_n = [&](uint32_t cpu, uint64_t n) {
    std::thread t([&] {
      ASSERT_EQ(snap->live().bind_thread(cpu), 0);
      for (uint64_t i = 0; i < n; i++) rbtrace_events::clitest_rec::emit(snap->live(), i);
      snap->live().unbind_thread();
    });
    t.join();
  };
  write_n(0, 5000);
  write_n(2, 77);
  const int fd = memfd_create("s", MFD_CLOEXEC);
  std::string e;
  ASSERT_EQ(snap->take(fd, -1, &e), 0) << e;
  close(fd);
  write_n(0, 123);
  snap->live().record_disable_cpu(1);
  write_n(1, 9);  // refused: counted in disabled
  snap->live().record_enable_cpu(1);

  Proc r = run_shell(std::string(RBTRACE_CLI) + " stat " + std::to_string(getpid()));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("3 CPUs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 snapshots"), std::string::npos) << r.out;
  std::istringstream in(r.out);
  std::string line;
  int rows = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    uint32_t cpu;
    int32_t owner;
    CpuStats s;
    if (!(ls >> cpu >> owner >> s.entries >> s.bytes >> s.overrun >> s.commit_overrun >> s.dropped >>
          s.nested_dropped >> s.disabled >> s.read))
      continue;
    ASSERT_LT(cpu, 3u);
    rows++;
    const CpuStats want = snap->total_stats(cpu);
    EXPECT_EQ(owner, snap->live().cpu_owner(cpu));
    EXPECT_EQ(s.entries, want.entries) << "cpu " << cpu;
    EXPECT_EQ(s.bytes, want.bytes) << "cpu " << cpu;
    EXPECT_EQ(s.overrun, want.overrun) << "cpu " << cpu;
    EXPECT_EQ(s.commit_overrun, want.commit_overrun);
    EXPECT_EQ(s.dropped, want.dropped);
    EXPECT_EQ(s.nested_dropped, want.nested_dropped);
    EXPECT_EQ(s.disabled, want.disabled) << "cpu " << cpu;
    EXPECT_EQ(s.read, want.read) << "cpu " << cpu;
  }
  EXPECT_EQ(rows, 3) << r.out;
  EXPECT_EQ(snap->total_stats(0).entries, 5123u);
  EXPECT_EQ(snap->total_stats(1).disabled, 9u);
  EXPECT_EQ(snap->total_stats(2).entries, 77u);
}

}  // namespace

// A worker that blocks every signal (as servers that sigwait do) cannot
// take the doorbell: its CPU is swapped without a signal (membarrier), and
// every CPU is captured.
TEST_F(CliTest, WorkersThatBlockEverySignalAreCaptured) {
  if (RingBuffer::membarrier_status() != 0) {
    // This machine cannot (old kernel, seccomp, an emulator): then the CLI
    // must say so, which the next test checks with RBTRACE_MEMBARRIER=0.
    GTEST_FAIL() << "membarrier unavailable here: " << RingBuffer::membarrier_status();
  }
  int demo_out = -1;
  const pid_t pid = start_demo(&demo_out, "3");  // all three workers
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(100ms);
  const std::string cli = RBTRACE_CLI;
  const std::string pids = std::to_string(pid);
  const std::string f = base_ + "/blocked.dat";
  Proc snap = run_shell(cli + " snapshot " + pids + " --timeout 2000 -o " + f);
  EXPECT_EQ(snap.status, 0) << snap.out;
  EXPECT_NE(snap.out.find("3 CPUs,"), std::string::npos) << snap.out;
  Proc report = run_shell("trace-cmd report " + f);
  EXPECT_EQ(report.status, 0) << report.out.substr(0, 2000);
  for (const char* w : {"worker=0 ", "worker=1 ", "worker=2 "})
    EXPECT_NE(report.out.find(w), std::string::npos) << w << report.out.substr(0, 2000);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  close(demo_out);
}

// Without membarrier (RBTRACE_MEMBARRIER=0) a worker that blocks the
// doorbell cannot be captured: the CLI names the CPU, the thread and the
// reason, still writes the other CPUs, and exits 3 (partial).
TEST_F(CliTest, PartialSnapshotNamesTheThreadAndExitsThree) {
  int demo_out = -1;
  const pid_t pid = start_demo(&demo_out, "1", false);
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(100ms);
  const std::string cli = RBTRACE_CLI;
  const std::string pids = std::to_string(pid);
  const std::string f = base_ + "/partial.dat";
  Proc snap = run_shell(cli + " snapshot " + pids + " --timeout 2000 -o " + f);
  EXPECT_EQ(snap.status, 3) << snap.out;
  EXPECT_NE(snap.out.find("CPU 0 not captured: thread "), std::string::npos) << snap.out;
  EXPECT_NE(snap.out.find(" (demo-worker-0): the thread does not take the doorbell signal (it "
                          "blocks it, or the application replaced rbtrace's handler for it), and "
                          "a swap without a signal needs membarrier(2)"),
            std::string::npos)
      << snap.out;
  EXPECT_NE(snap.out.find("partial: 1 of 3 CPUs not captured (exit 3)"), std::string::npos)
      << snap.out;
  EXPECT_NE(snap.out.find("2 CPUs,"), std::string::npos) << snap.out;
  Proc report = run_shell("trace-cmd report " + f);
  EXPECT_EQ(report.status, 0) << report.out.substr(0, 2000);
  EXPECT_NE(report.out.find("work:"), std::string::npos) << report.out.substr(0, 2000);
  Proc stat_run = run_shell(cli + " stat " + pids);
  EXPECT_EQ(stat_run.status, 0) << stat_run.out;
  EXPECT_NE(stat_run.out.find("refused for want of a CPU slot (all CPUs): 0 events"),
            std::string::npos)
      << stat_run.out;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  close(demo_out);
}
