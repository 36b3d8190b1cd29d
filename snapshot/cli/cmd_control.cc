// cmd_control.cc - the `rbtrace` commands that talk to a traced process's
// control server (rbtrace/control.h): list, stat, snapshot, events.
//
//   rbtrace list                                   this user's traced processes
//   rbtrace stat PID                               CPUs and their counters
//   rbtrace snapshot PID [--cpu N] [-o FILE] [--timeout MS]
//   rbtrace events PID (--enable|--disable) SYSTEM:NAME|SYSTEM:*
//
// stat, snapshot and events find the process's control directory as the
// process chose it (its uid and environment, rbtrace/control.h connect_to):
// as root, another user's process too; RBTRACE_CONTROL_DIR in our own
// environment overrides.
//
// `snapshot` creates FILE itself (write_output: unnamed until the process
// has written it) and passes the descriptor to the process, which never
// opens a path. An existing FILE is never replaced.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>

#include "cli.h"
#include "rbtrace/control.h"

namespace rbtrace::cli {

namespace {

// The first line of a /proc comm file, or "?".
std::string comm_in(const std::string& path) {
  std::ifstream f(path);
  std::string c;
  if (!std::getline(f, c)) c = "?";
  return c;
}

std::string comm_of(pid_t pid) { return comm_in("/proc/" + std::to_string(pid) + "/comm"); }

// The name of thread `tid` of process `pid`, or "?".
std::string thread_comm(pid_t pid, int32_t tid) {
  return comm_in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
}

// Why swap_cpu_marshalled failed (rbtrace/swap.h), for a person.
std::string swap_failure_reason(int32_t rc) {
  switch (-rc) {
    case ETIMEDOUT:
      return "the thread did not answer the swap request in time and a swap without a "
             "signal was not possible (busy, or membarrier(2) unavailable); --timeout MS "
             "waits longer";
    case EBUSY:
      return "the CPU stayed busy (a write, a read or another swap) on every try until the "
             "timeout";
    case EAGAIN:
      return "recording is disabled on the CPU";
    case ENOSYS:
      return "the thread does not take the doorbell signal (it blocks it, or the "
             "application replaced rbtrace's handler for it), and a swap without a signal "
             "needs membarrier(2), which the process cannot use (kernel before 4.14, "
             "seccomp, or RBTRACE_MEMBARRIER=0)";
    default:
      return std::strerror(-rc);
  }
}

// How long the CLI waits: for room in the process's connection queue, and
// for the whole reply (one deadline for the exchange, not one per read).
constexpr std::chrono::milliseconds kConnectTimeout{2000};
constexpr std::chrono::milliseconds kReplyTimeout{10000};

// The reply deadline of a request: a snapshot also waits for its swaps,
// one after another, each up to its --timeout when a thread does not
// answer (bounded here as if up to 64 CPUs did not).
std::chrono::milliseconds reply_timeout(const control::Request& req) {
  if (req.type != control::MsgType::kSnapshot) return kReplyTimeout;
  const uint64_t cpus = req.cpu >= 0 ? 1 : 64;
  return kReplyTimeout + std::chrono::milliseconds(cpus * req.timeout_ms);
}

// Connects and runs one request. 0 with *reply (whose status is 0), or
// kExitFail after printing why (naming the process, its socket and, when
// it did not answer in time, how long we waited; a control directory that
// is refused is named with what is wrong with it and how to fix it).
int request(const Args& a, pid_t pid, const control::Request& req, int pass_fd,
            control::Reply* reply) {
  std::string err, path;
  // The process's own control directory, found as it chose it (its uid
  // and environment in /proc): root reaches another user's process.
  const int s = control::connect_to(pid, "", &err, kConnectTimeout, &path);
  if (s < 0) return a.fail(err);
  const int rc = control::call(s, req, pass_fd, reply, &err, reply_timeout(req));
  close(s);
  const std::string who = "process " + std::to_string(pid) + " (" + path + "): ";
  if (rc != 0) return a.fail(who + err);
  if (reply->status != 0) return a.fail(who + reply->message);
  return 0;
}

pid_t pid_of(const Args& a) { return static_cast<pid_t>(a.number("PID", 0)); }

// rbtrace-PID-YYYYmmdd-HHMMSS.dat
std::string default_snapshot_name(pid_t pid) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  return "rbtrace-" + std::to_string(pid) + "-" + stamp + ".dat";
}

}  // namespace

int cmd_list(const Args& a) {
  const std::string dir = control::default_dir();
  std::string err;
  const int fd = control::open_private_dir(dir, false, &err);
  if (fd < 0) {
    if (fd == -ENOENT) return 0;  // nobody traced yet
    return a.fail(err);
  }
  close(fd);
  std::printf("%-8s %-16s %6s %12s %10s\n", "PID", "COMMAND", "CPUS", "ENTRIES", "SNAPSHOTS");
  for (pid_t pid : control::list_processes(dir)) {
    control::Request req;
    req.type = control::MsgType::kStat;
    control::Reply rep;
    std::string e;
    const int s = control::connect_to(pid, dir, &e, kConnectTimeout);
    bool ok = false;
    if (s >= 0) {
      ok = control::call(s, req, -1, &rep, &e, std::chrono::milliseconds(2000)) == 0 &&
           rep.status == 0;
      close(s);
    }
    if (!ok) {
      std::printf("%-8d %-16s %6s %12s %10s\n", static_cast<int>(pid), comm_of(pid).c_str(), "-",
                  "-", "-");
      continue;
    }
    uint64_t entries = 0;
    for (const control::StatCpu& c : rep.stat.cpus) entries += c.total.entries;
    std::printf("%-8d %-16s %6zu %12llu %10llu\n", static_cast<int>(pid), comm_of(pid).c_str(),
                rep.stat.cpus.size(), static_cast<unsigned long long>(entries),
                static_cast<unsigned long long>(rep.stat.snapshots));
  }
  return 0;
}

int cmd_stat(const Args& a) {
  const pid_t pid = pid_of(a);
  control::Request req;
  req.type = control::MsgType::kStat;
  control::Reply rep;
  if (int rc = request(a, pid, req, -1, &rep)) return rc;
  const control::StatReply& st = rep.stat;
  std::printf("process %d (%s): %zu CPUs, %u pages of %u bytes per CPU, %s mode, %llu snapshots\n",
              static_cast<int>(pid), comm_of(pid).c_str(), st.cpus.size(), st.pages_per_cpu,
              st.page_size, st.mode == 0 ? "overwrite" : "producer/consumer",
              static_cast<unsigned long long>(st.snapshots));
  std::printf("counters since start (every buffer generation):\n");
  std::printf("%-4s %8s %12s %14s %12s %10s %10s %8s %8s %12s\n", "cpu", "owner", "entries",
              "bytes", "overrun", "c_overrun", "dropped", "nested", "disabled", "read");
  for (size_t c = 0; c < st.cpus.size(); c++) {
    const CpuStats& s = st.cpus[c].total;
    std::printf("%-4zu %8d %12llu %14llu %12llu %10llu %10llu %8llu %8llu %12llu\n", c,
                st.cpus[c].owner, static_cast<unsigned long long>(s.entries),
                static_cast<unsigned long long>(s.bytes), static_cast<unsigned long long>(s.overrun),
                static_cast<unsigned long long>(s.commit_overrun),
                static_cast<unsigned long long>(s.dropped),
                static_cast<unsigned long long>(s.nested_dropped),
                static_cast<unsigned long long>(s.disabled),
                static_cast<unsigned long long>(s.read));
  }
  // Not any CPU's: a thread that found no free slot wrote nothing anywhere.
  std::printf("refused for want of a CPU slot (all CPUs): %llu events\n",
              static_cast<unsigned long long>(st.no_slot_dropped));
  return 0;
}

int cmd_snapshot(const Args& a) {
  const pid_t pid = pid_of(a);
  const char* o = a.text("-o");
  const std::string out = o ? o : default_snapshot_name(pid);
  control::Request req;
  req.type = control::MsgType::kSnapshot;
  req.cpu = static_cast<int32_t>(a.number("--cpu", -1));
  req.timeout_ms = static_cast<uint32_t>(a.number("--timeout", 500));
  control::Reply rep;
  if (int rc = write_output(a, out, false, [&](int fd) { return request(a, pid, req, fd, &rep); }))
    return rc;
  uint64_t pages = 0, bytes = 0, swap_ns = 0;
  int dumped = 0, missed = 0;
  for (const control::SnapshotReplyCpu& c : rep.snapshot.cpus) {
    swap_ns += c.swap_ns;
    if (c.swap_result != 0) {
      missed++;
      std::string who = "no owner thread";
      if (c.owner > 0)
        who = "thread " + std::to_string(c.owner) + " (" + thread_comm(pid, c.owner) + ")";
      std::fprintf(stderr, "rbtrace snapshot: CPU %u not captured: %s: %s\n", c.cpu, who.c_str(),
                   swap_failure_reason(c.swap_result).c_str());
      continue;
    }
    dumped++;
    pages += c.pages;
    bytes += c.bytes;
  }
  std::printf("%s: %d CPU%s, %llu pages, %llu bytes of events, %.3f ms in the process "
              "(%.3f ms of it in swaps)\n",
              out.c_str(), dumped, dumped == 1 ? "" : "s", static_cast<unsigned long long>(pages),
              static_cast<unsigned long long>(bytes),
              static_cast<double>(rep.snapshot.total_ns) / 1e6, static_cast<double>(swap_ns) / 1e6);
  if (missed > 0) {
    std::fprintf(stderr, "rbtrace snapshot: partial: %d of %zu CPUs not captured (exit %d)\n",
                 missed, rep.snapshot.cpus.size(), kExitPartial);
    return kExitPartial;
  }
  return 0;
}

int cmd_events(const Args& a) {
  if (a.has("--enable") == a.has("--disable"))
    return a.usage_error("expected --enable or --disable");
  control::Request req;
  req.type = control::MsgType::kEvents;
  req.enable = a.has("--enable");
  req.event = a.text("SYSTEM:NAME");
  if (req.event.size() > control::kMaxEventName) return a.usage_error("event name too long");
  control::Reply rep;
  if (int rc = request(a, pid_of(a), req, -1, &rep)) return rc;
  std::printf("%s %u event%s\n", req.enable ? "enabled" : "disabled", rep.events_changed,
              rep.events_changed == 1 ? "" : "s");
  return 0;
}

}  // namespace rbtrace::cli
