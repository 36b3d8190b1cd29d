// cmd_control.cc - the `rbtrace` commands that talk to a traced process's
// control server (rbtrace/control.h): list, stat, snapshot, events.
//
//   rbtrace list                                   this user's traced processes
//   rbtrace stat PID                               CPUs and their counters
//   rbtrace snapshot PID [--cpu N] [-o FILE] [--timeout MS]
//   rbtrace events PID (--enable|--disable) SYSTEM:NAME|SYSTEM:*
//
// `snapshot` opens FILE itself (O_TMPFILE in FILE's directory, named with
// linkat once the process has written it; where O_TMPFILE is not supported,
// O_CREAT|O_EXCL and removed on failure) and passes the descriptor to the
// process, which never opens a path. An existing FILE is never replaced.
// Exit status as the rest of the CLI: 0 success, 1 failure, 2 usage.
#include "cli_common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>

#include "rbtrace/control.h"

namespace rbtrace::cli {

extern const char kListUsage[] = "rbtrace list";
extern const char kStatUsage[] = "rbtrace stat PID";
extern const char kSnapshotUsage[] =
    "rbtrace snapshot PID [--cpu N] [-o FILE] [--timeout MS]";
extern const char kEventsUsage[] = "rbtrace events PID (--enable|--disable) SYSTEM:NAME|SYSTEM:*";

namespace {

using rbtrace::cli::fail;
using rbtrace::cli::kExitFail;
using rbtrace::cli::kExitUsage;
using rbtrace::cli::usage_error;

bool parse_long(const char* s, long lo, long hi, long* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

std::string comm_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string c;
  if (!std::getline(f, c)) c = "?";
  return c;
}

// Connects and runs one request. 0 with *reply, or 1 after printing why.
int request(const char* cmd, pid_t pid, const control::Request& req, int pass_fd,
            control::Reply* reply) {
  std::string err;
  const int s = control::connect_to(pid, "", &err);
  if (s < 0) return fail(cmd, err);
  const int rc = control::call(s, req, pass_fd, reply, &err);
  close(s);
  if (rc != 0) return fail(cmd, "process " + std::to_string(pid) + ": " + err);
  return 0;
}

}  // namespace

int cmd_list(int argc, char** argv) {
  (void)argv;
  if (argc != 1) return usage_error("list", "no arguments expected", kListUsage);
  const std::string dir = control::default_dir();
  std::string err;
  const int fd = control::open_private_dir(dir, false, &err);
  if (fd < 0) {
    if (fd == -ENOENT) return 0;  // nobody traced yet
    return fail("list", err);
  }
  close(fd);
  std::printf("%-8s %-16s %6s %12s %10s\n", "PID", "COMMAND", "CPUS", "ENTRIES", "SNAPSHOTS");
  for (pid_t pid : control::list_processes(dir)) {
    control::Request req;
    req.type = control::MsgType::kStat;
    control::Reply rep;
    std::string e;
    const int s = control::connect_to(pid, dir, &e);
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

int cmd_stat(int argc, char** argv) {
  long pid = 0;
  if (argc != 2 || !parse_long(argv[1], 1, 0x7fffffff, &pid))
    return usage_error("stat", "expected one PID", kStatUsage);
  control::Request req;
  req.type = control::MsgType::kStat;
  control::Reply rep;
  if (int rc = request("stat", static_cast<pid_t>(pid), req, -1, &rep)) return rc;
  if (rep.status != 0) return fail("stat", rep.message);
  const control::StatReply& st = rep.stat;
  std::printf("process %ld (%s): %zu CPUs, %u pages of %u bytes per CPU, %s mode, %llu snapshots\n",
              pid, comm_of(static_cast<pid_t>(pid)).c_str(), st.cpus.size(), st.pages_per_cpu,
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
  return 0;
}

int cmd_snapshot(int argc, char** argv) {
  long pid = 0, cpu = -1, timeout_ms = 500;
  std::string out;
  if (argc < 2 || !parse_long(argv[1], 1, 0x7fffffff, &pid))
    return usage_error("snapshot", "expected a PID", kSnapshotUsage);
  for (int i = 2; i < argc; i++) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--cpu") {
      if (!parse_long(v, 0, static_cast<long>(kMaxCpus) - 1, &cpu))
        return usage_error("snapshot", "bad --cpu", kSnapshotUsage);
      i++;
    } else if (a == "-o") {
      if (!v || !*v) return usage_error("snapshot", "-o needs a file name", kSnapshotUsage);
      out = v;
      i++;
    } else if (a == "--timeout") {
      if (!parse_long(v, 1, 60000, &timeout_ms))
        return usage_error("snapshot", "bad --timeout (1..60000 ms)", kSnapshotUsage);
      i++;
    } else {
      return usage_error("snapshot", "unknown argument " + a, kSnapshotUsage);
    }
  }
  if (out.empty()) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    out = "rbtrace-" + std::to_string(pid) + "-" + stamp + ".dat";
  }
  struct stat st {};
  if (lstat(out.c_str(), &st) == 0) return fail("snapshot", out + ": exists (never replaced)");
  const size_t slash = out.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));

  // The file: unnamed until complete where the filesystem allows it.
  bool tmpfile = true;
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) {
    tmpfile = false;
    fd = open(out.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return fail("snapshot", out + ": " + std::strerror(errno));
  }
  control::Request req;
  req.type = control::MsgType::kSnapshot;
  req.cpu = static_cast<int32_t>(cpu);
  req.timeout_ms = static_cast<uint32_t>(timeout_ms);
  control::Reply rep;
  int rc = request("snapshot", static_cast<pid_t>(pid), req, fd, &rep);
  if (rc == 0 && rep.status != 0) rc = fail("snapshot", "process " + std::to_string(pid) + ": " + rep.message);
  if (rc == 0 && tmpfile) {
    // Name the complete file; fails safely (EEXIST) if the name was taken.
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, out.c_str(), AT_SYMLINK_FOLLOW) != 0)
      rc = fail("snapshot", out + ": " + std::strerror(errno));
  }
  if (rc != 0 && !tmpfile) unlink(out.c_str());
  close(fd);
  if (rc != 0) return rc;
  uint64_t pages = 0, bytes = 0;
  int dumped = 0;
  for (const control::SnapshotReplyCpu& c : rep.snapshot.cpus) {
    if (c.swap_result != 0) {
      std::fprintf(stderr, "rbtrace snapshot: CPU %u not captured: %s\n", c.cpu,
                   std::strerror(-c.swap_result));
      continue;
    }
    dumped++;
    pages += c.pages;
    bytes += c.bytes;
  }
  std::printf("%s: %d CPU%s, %llu pages, %llu bytes of events, %.3f ms in the process\n",
              out.c_str(), dumped, dumped == 1 ? "" : "s", static_cast<unsigned long long>(pages),
              static_cast<unsigned long long>(bytes),
              static_cast<double>(rep.snapshot.total_ns) / 1e6);
  return 0;
}

int cmd_events(int argc, char** argv) {
  long pid = 0;
  if (argc != 4 || !parse_long(argv[1], 1, 0x7fffffff, &pid))
    return usage_error("events", "expected PID, --enable or --disable, and an event", kEventsUsage);
  const std::string flag = argv[2];
  if (flag != "--enable" && flag != "--disable")
    return usage_error("events", "expected --enable or --disable", kEventsUsage);
  control::Request req;
  req.type = control::MsgType::kEvents;
  req.enable = flag == "--enable";
  req.event = argv[3];
  if (req.event.size() > control::kMaxEventName)
    return usage_error("events", "event name too long", kEventsUsage);
  control::Reply rep;
  if (int rc = request("events", static_cast<pid_t>(pid), req, -1, &rep)) return rc;
  if (rep.status != 0) return fail("events", rep.message);
  std::printf("%s %u event%s\n", req.enable ? "enabled" : "disabled", rep.events_changed,
              rep.events_changed == 1 ? "" : "s");
  return 0;
}

}  // namespace rbtrace::cli
