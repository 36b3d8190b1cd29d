// lttng_session.cc - see lttng_session.h.
#include "lttng_session.h"

#include <benchmark/benchmark.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <thread>

#include "rbtrace_bench_tp.h"

namespace rbtrace::bench {
namespace {

std::string g_reason = "the LTTng session was not started";

// Runs a shell command; returns its exit status and its output (stdout and
// stderr) in *out.
int run(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[512];
  std::string s;
  while (fgets(buf, sizeof buf, p)) s += buf;
  const int st = pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// The benchmark filter's decision for one name ("", "all", a regex, or a
// regex with a leading '-' that excludes).
bool selected(const std::string& name) {
  std::string f = benchmark::GetBenchmarkFilter();
  if (f.empty() || f == "all" || f == ".") return true;
  bool negate = false;
  if (f[0] == '-') {
    negate = true;
    f = f.substr(1);
  }
  try {
    return std::regex_search(name, std::regex(f)) != negate;
  } catch (const std::regex_error&) {
    return true;  // let Google Benchmark report the bad filter
  }
}

int read_pid(const char* path) {
  std::ifstream f(path);
  int pid = 0;
  f >> pid;
  return pid;
}

bool wait_enabled(std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (lttng_ust_tracepoint_enabled(rbtrace_bench, rec16)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return lttng_ust_tracepoint_enabled(rbtrace_bench, rec16);
}

}  // namespace

std::string lttng_unavailable_reason() {
  if (lttng_ust_tracepoint_enabled(rbtrace_bench, rec16)) return {};
  return g_reason;
}

void LttngSession::start_if_selected() {
  if (!selected("BM_Peer_LttngUst/16")) {
    status_ = g_reason = "not selected by --benchmark_filter";
    return;
  }
  const char* manage = std::getenv("RBTRACE_BENCH_LTTNG_SESSION");
  if (manage && std::string(manage) == "0") {
    g_reason = "RBTRACE_BENCH_LTTNG_SESSION=0 and no session enables rbtrace_bench:rec16";
    status_ = wait_enabled(std::chrono::milliseconds(3000)) ? "active (external session)"
                                                              : g_reason;
    return;
  }
  std::string out;
  if (run("command -v lttng", &out) != 0 || run("command -v lttng-sessiond", &out) != 0) {
    status_ = g_reason = "lttng-tools is not installed (apt-get install lttng-tools)";
    std::fprintf(stderr, "rbtrace-bench: %s; BM_Peer_LttngUst is skipped\n", g_reason.c_str());
    return;
  }
  if (run("lttng list", &out) != 0) {
    // No session daemon answers: start one (user space only) and remember
    // its pid so that stop() ends exactly the daemon started here.
    if (run("lttng-sessiond --daemonize --no-kernel", &out) != 0) {
      status_ = g_reason = "lttng-sessiond --daemonize failed: " + out;
      std::fprintf(stderr, "rbtrace-bench: %s; BM_Peer_LttngUst is skipped\n", g_reason.c_str());
      return;
    }
    const std::string pidfile = geteuid() == 0
        ? std::string("/var/run/lttng/lttng-sessiond.pid")
        : std::string(std::getenv("HOME") ? std::getenv("HOME") : "") +
              "/.lttng/lttng-sessiond.pid";
    sessiond_pid_ = read_pid(pidfile.c_str());
    std::fprintf(stderr, "rbtrace-bench: started lttng-sessiond (pid %d)\n", sessiond_pid_);
  }
  name_ = "rbtrace-bench-" + std::to_string(getpid());
  const std::string out_dir = "/tmp/" + name_;
  const std::string cmds[] = {
      "lttng create " + name_ + " --snapshot --output=" + out_dir,
      "lttng enable-channel --userspace --session=" + name_ +
          " --overwrite --subbuf-size=4096 --num-subbuf=8 rbtrace_ch",
      "lttng enable-event --userspace --session=" + name_ +
          " --channel=rbtrace_ch rbtrace_bench:rec16",
      "lttng start " + name_,
  };
  for (const std::string& c : cmds) {
    if (run(c, &out) != 0) {
      status_ = g_reason = "'" + c + "' failed: " + out;
      std::fprintf(stderr, "rbtrace-bench: %s; BM_Peer_LttngUst is skipped\n", g_reason.c_str());
      stop();
      return;
    }
    created_ = true;
  }
  // The application registers with the session daemon asynchronously (its
  // listener thread); wait until the daemon has enabled the tracepoint.
  if (!wait_enabled(std::chrono::milliseconds(10000))) {
    status_ = g_reason =
        "session started but rbtrace_bench:rec16 was not enabled in this process within 10 s";
    std::fprintf(stderr, "rbtrace-bench: %s; BM_Peer_LttngUst is skipped\n", g_reason.c_str());
    return;
  }
  status_ = "active: snapshot session " + name_ +
            ", per-UID per-CPU overwrite channel, 8 x 4 KiB sub-buffers";
  std::fprintf(stderr, "rbtrace-bench: LTTng %s\n", status_.c_str());
}

void LttngSession::stop() {
  std::string out;
  if (created_) {
    run("lttng stop " + name_, &out);
    run("lttng destroy " + name_, &out);
    created_ = false;
  }
  if (sessiond_pid_ > 0) {
    kill(sessiond_pid_, SIGTERM);
    sessiond_pid_ = 0;
  }
}

}  // namespace rbtrace::bench
