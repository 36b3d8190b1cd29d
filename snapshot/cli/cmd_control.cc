// cmd_control.cc - the `rbtrace` commands that talk to a traced process's
// control server (rbtrace/control.h): list, stat, snapshot, events, record.
//
//   rbtrace list [--dir DIR]                       this user's traced processes
//   rbtrace stat PID                               CPUs and their counters
//   rbtrace snapshot PID [--cpu N] [-o FILE|DIR] [--force] [--timeout MS]
//   rbtrace events PID [PATTERN] [--enable|--disable]
//   rbtrace record start PID -o DIR [options] | stop|flush|rotate|status|on|off PID
//
// stat, snapshot, events and record find the process's control directory
// as the process chose it (its uid and environment, rbtrace/control.h
// connect_to): as root, another user's process too; --dir, or
// RBTRACE_CONTROL_DIR in our own environment, overrides.
//
// `snapshot` creates FILE itself (write_output: unnamed until the process
// has written it) and passes the descriptor to the process, which never
// opens a path. An existing FILE is never replaced (unless --force).
// `record start` likewise opens DIR itself (O_DIRECTORY|O_NOFOLLOW, after
// creating it 0700 when missing) and passes the descriptor: the process
// records into that directory without ever looking up its path.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
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
// answer (bounded here as if up to 64 CPUs did not); a recording's flush
// and stop wait for the disk (the server gives up on a stop after its
// record_stop_timeout, 20 s by default).
std::chrono::milliseconds reply_timeout(const control::Request& req) {
  switch (req.type) {
    case control::MsgType::kSnapshot: {
      const uint64_t cpus = req.cpu >= 0 ? 1 : 64;
      return kReplyTimeout + std::chrono::milliseconds(cpus * req.timeout_ms);
    }
    case control::MsgType::kRecordStart:
    case control::MsgType::kRecordStop:
    case control::MsgType::kRecordFlush:
      return std::chrono::milliseconds(60000);
    default:
      return kReplyTimeout;
  }
}

// Whether process `pid` exists (kill 0: EPERM is another user's, alive).
bool process_exists(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

// The exit status of a connection that failed with `rc` (cli.h's table).
int connect_exit(pid_t pid, int rc) {
  if (rc == -EACCES || rc == -EPERM) return kExitRefused;
  if (rc == -ENOENT || rc == -ECONNREFUSED)
    return process_exists(pid) ? kExitNotTraced : kExitNoProcess;
  return kExitFail;
}

// The exit status of a request the process answered with `status` < 0:
// refused when the peer-credential rules or the process's state said no.
int status_exit(int32_t status) {
  switch (-status) {
    case EACCES:
    case EPERM:
    case EALREADY:
    case ENOTCONN:
    case EBUSY:
      return kExitRefused;
    default:
      return kExitFail;
  }
}

// Prints why, as Args::fail, and returns `code`.
int fail_with(const Args& a, int code, const std::string& what) {
  a.fail(what);
  return code;
}

// --dir DIR, else "" (connect_to's default: $RBTRACE_CONTROL_DIR, else the
// process's own).
std::string dir_of(const Args& a) {
  const char* d = a.text("--dir");
  return d ? d : "";
}

// Connects to process `pid`'s server: 0 with *sock and *path, or an exit
// status after printing why (naming the process, its socket and, when it
// did not answer in time, how long we waited; a control directory that is
// refused is named with what is wrong with it and how to fix it).
int connect_checked(const Args& a, pid_t pid, int* sock, std::string* path) {
  std::string err;
  // The process's own control directory, found as it chose it (its uid
  // and environment in /proc): root reaches another user's process.
  *sock = control::connect_to(pid, dir_of(a), &err, kConnectTimeout, path);
  if (*sock >= 0) return 0;
  const int code = connect_exit(pid, *sock);
  if (code == kExitNoProcess) return fail_with(a, code, "no such process " + std::to_string(pid));
  if (code == kExitNotTraced)
    err = "process " + std::to_string(pid) + " (" + comm_of(pid) +
          ") is not traced: it has no control socket (" + err + ")";
  return fail_with(a, code, err);
}

// Runs one request on the connected `sock` (closed here). 0 with *reply
// (whose status is 0), or an exit status after printing why.
int exchange(const Args& a, pid_t pid, int sock, const std::string& path,
             const control::Request& req, int pass_fd, control::Reply* reply) {
  std::string err;
  const int rc = control::call(sock, req, pass_fd, reply, &err, reply_timeout(req));
  close(sock);
  const std::string who = "process " + std::to_string(pid) + " (" + path + "): ";
  if (rc != 0) return a.fail(who + err);
  if (reply->status != 0) {
    const int code = status_exit(reply->status);
    const bool said = reply->message.find("refused") != std::string::npos;
    return fail_with(a, code, who + (code == kExitRefused && !said ? "refused: " : "") +
                                  reply->message);
  }
  return 0;
}

// Connects and runs one request: exchange() after connect_checked().
int request(const Args& a, pid_t pid, const control::Request& req, int pass_fd,
            control::Reply* reply) {
  int sock = -1;
  std::string path;
  if (int rc = connect_checked(a, pid, &sock, &path)) return rc;
  return exchange(a, pid, sock, path, req, pass_fd, reply);
}

pid_t pid_of(const Args& a) { return static_cast<pid_t>(a.number("PID", 0)); }

// rbtrace-PID-YYYYmmdd-HHMMSS.mmm.dat, in `dir` ("": the working
// directory), with -2, -3, ... when that name is taken (two snapshots in
// one millisecond).
std::string default_snapshot_name(pid_t pid, const char* o) {
  char stamp[32];
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&secs, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  char msbuf[8];
  std::snprintf(msbuf, sizeof msbuf, ".%03d", static_cast<int>(ms));
  const std::string stem = "rbtrace-" + std::to_string(pid) + "-" + stamp + msbuf;
  std::string name = output_path(o, stem + ".dat");
  struct stat st {};
  for (int k = 2; k < 1000 && lstat(name.c_str(), &st) == 0; k++)
    name = output_path(o, stem + "-" + std::to_string(k) + ".dat");
  return name;
}

// The recording's state, after a record request.
void print_record(const control::RecordReply& r, const char* files_label) {
  std::printf("recording: %s; tracing %s; %llu segments published (%llu pages, %llu events), "
              "%llu failed; %llu events and %llu pages lost by the consumer\n",
              r.active ? "running" : "none", r.recording_on ? "on" : "off",
              static_cast<unsigned long long>(r.segments_published),
              static_cast<unsigned long long>(r.pages_published),
              static_cast<unsigned long long>(r.events_published),
              static_cast<unsigned long long>(r.segments_failed),
              static_cast<unsigned long long>(r.events_lost),
              static_cast<unsigned long long>(r.pages_lost));
  for (const std::string& f : r.files) std::printf("%s %s\n", files_label, f.c_str());
  if (!r.note.empty()) std::printf("last consumer message: %s\n", r.note.c_str());
}

}  // namespace

int cmd_list(const Args& a) {
  std::string dir = dir_of(a);
  if (dir.empty()) dir = control::default_dir();
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
  // The recording the control socket started, if any (a second exchange:
  // the stat reply's layout is version 2's).
  control::Request rq;
  rq.type = control::MsgType::kRecordStatus;
  control::Reply rr;
  // The counters were printed; a failed second question is a failure too.
  if (const int rc = request(a, pid, rq, -1, &rr); rc != 0) return rc;
  print_record(rr.record, "file");
  return 0;
}

int cmd_snapshot(const Args& a) {
  const pid_t pid = pid_of(a);
  const char* o = a.text("-o");
  // -o DIR (an existing directory): a default name inside it; no -o: a
  // default name here. A name of our choosing is never one that exists.
  const bool is_dir = o && output_path(o, "x") != o;
  const std::string out = !o || is_dir ? default_snapshot_name(pid, o) : o;
  control::Request req;
  req.type = control::MsgType::kSnapshot;
  req.cpu = static_cast<int32_t>(a.number("--cpu", -1));
  req.timeout_ms = static_cast<uint32_t>(a.number("--timeout", 500));
  control::Reply rep;
  if (int rc = write_output(
          a, out, false, [&](int fd) { return request(a, pid, req, fd, &rep); },
          a.has("--force")))
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
  if (a.has("--enable") && a.has("--disable"))
    return a.usage_error("--enable and --disable together");
  const char* pattern = a.text("PATTERN");
  if (pattern && (std::strlen(pattern) > control::kMaxEventName ||
                  !control::valid_event_pattern(pattern)))
    return a.usage_error(std::string("bad pattern '") + pattern +
                         "' (SYSTEM:NAME of letters, digits, '_' and '*'; or '*')");
  control::Request req;
  control::Reply rep;
  if (!a.has("--enable") && !a.has("--disable")) {
    // The events and their state (as `lttng list PID`, `trace-cmd list -e`).
    req.type = control::MsgType::kEventList;
    req.event = pattern ? pattern : "";
    if (int rc = request(a, pid_of(a), req, -1, &rep)) return rc;
    for (const control::EventState& e : rep.events)
      std::printf("%-40s %s\n", e.name.c_str(), e.enabled ? "enabled" : "disabled");
    if (rep.events_truncated)
      std::fprintf(stderr, "rbtrace events: more events than one reply holds: the first %zu "
                           "shown (give a PATTERN)\n", rep.events.size());
    return 0;
  }
  if (!pattern) return a.usage_error("--enable and --disable need a PATTERN");
  req.type = control::MsgType::kEvents;
  req.enable = a.has("--enable");
  req.event = pattern;
  if (int rc = request(a, pid_of(a), req, -1, &rep)) return rc;
  std::printf("%s %u event%s\n", req.enable ? "enabled" : "disabled", rep.events_changed,
              rep.events_changed == 1 ? "" : "s");
  return 0;
}

namespace {

// The options of `record start` into *o; 0 or a usage error.
int record_options(const Args& a, control::RecordOptions* o) {
  using L = control::RecordLimits;
  if (a.has("--segment-size")) {
    const auto mb = static_cast<uint64_t>(a.number("--segment-size", 64));
    o->segment_bytes = mb << 20;
    if (mb != 0 && (o->segment_bytes < L::kMinSegmentBytes || o->segment_bytes > L::kMaxSegmentBytes))
      return a.usage_error("bad --segment-size (MiB: 0 never, 1..1048576)");
  }
  o->segment_seconds = static_cast<uint32_t>(a.number("--segment-seconds", o->segment_seconds));
  o->pool_pages = static_cast<uint32_t>(a.number("--pool-pages", o->pool_pages));
  o->period_us = static_cast<uint32_t>(a.number("--period-us", o->period_us));
  o->watermark_pages = static_cast<uint32_t>(a.number("--watermark-pages", o->watermark_pages));
  o->batch_pages = static_cast<uint32_t>(a.number("--batch-pages", o->batch_pages));
  if (const char* m = a.text("--file-mode")) {
    const std::string_view v = m[0] == '0' ? m + 1 : m;
    if (v == "600") o->file_mode = 0600;
    else if (v == "640") o->file_mode = 0640;
    else if (v == "644") o->file_mode = 0644;
    else return a.usage_error(std::string("bad --file-mode '") + m + "' (600, 640 or 644)");
  }
  if (const char* p = a.text("--prefix")) {
    o->prefix = p;
    control::Request probe;  // the codec's own check of the prefix
    probe.type = control::MsgType::kRecordStart;
    probe.record = *o;
    const auto m = control::encode_request(probe);
    control::Request back;
    std::string why;
    if (o->prefix.size() > L::kMaxPrefix || control::parse_request(m.data(), m.size(), &back, &why) != 0)
      return a.usage_error(std::string("bad --prefix '") + p +
                           "' (1..64 letters, digits, '_' and '-', not first)");
  }
  if (const char* b = a.text("--backend")) {
    const std::string_view v = b;
    if (v == "auto") o->backend = 0;
    else if (v == "io_uring") o->backend = 1;
    else if (v == "pwritev") o->backend = 2;
    else return a.usage_error(std::string("bad --backend '") + b + "' (auto, io_uring, pwritev)");
  }
  o->fsync = !a.has("--no-fsync");
  o->direct_io = a.has("--direct-io");
  return 0;
}

// Opens (creating it 0700 when missing) the output directory of `record
// start`: never through a symlink as its last component. An fd, or an
// exit status after saying why.
int open_output_dir(const Args& a, std::string dir, int* fd, bool* created) {
  // Without its trailing slashes: O_NOFOLLOW does not stop "link/" from
  // following the link.
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  *created = mkdir(dir.c_str(), 0700) == 0;
  if (!*created && errno != EEXIST)
    return a.fail("cannot create " + dir + ": " + std::strerror(errno));
  *fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (*fd >= 0) return 0;
  const int e = errno;
  struct stat st {};
  if (e == ELOOP || (e == ENOTDIR && lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)))
    return fail_with(a, kExitRefused, dir + " is a symbolic link, which is never followed: refused "
                                            "(give the directory it points to)");
  if (e == ENOTDIR) return a.fail(dir + ": not a directory");
  return a.fail("cannot open " + dir + ": " + std::strerror(e));
}

}  // namespace

int cmd_record(const Args& a) {
  const std::string_view action = a.text("ACTION");
  const bool start = action == "start";
  // Options of `start` given to another action are a mistake, said.
  static constexpr const char* kStartOnly[] = {
      "-o", "--segment-size", "--segment-seconds", "--pool-pages", "--period-us",
      "--watermark-pages", "--batch-pages", "--file-mode", "--prefix", "--backend",
      "--no-fsync", "--direct-io"};
  if (!start)
    for (const char* opt : kStartOnly)
      if (a.has(opt)) return a.usage_error(std::string(opt) + " is for record start");
  control::Request req;
  const char* label = "file";
  if (start) req.type = control::MsgType::kRecordStart;
  else if (action == "stop") req.type = control::MsgType::kRecordStop, label = "published";
  else if (action == "flush" || action == "rotate") req.type = control::MsgType::kRecordFlush, label = "published";
  else if (action == "status") req.type = control::MsgType::kRecordStatus;
  else if (action == "on" || action == "off") req.type = control::MsgType::kRecordSwitch, req.on = action == "on";
  else
    return a.usage_error("unknown action '" + std::string(action) +
                         "' (start, stop, flush, rotate, status, on, off)");
  if (start) {
    if (!a.has("-o")) return a.usage_error("record start needs -o DIR");
    if (int rc = record_options(a, &req.record)) return rc;
  }
  // Connected first: a process we may not use is refused before DIR is
  // made or opened.
  int sock = -1;
  std::string path;
  if (int rc = connect_checked(a, pid_of(a), &sock, &path)) return rc;
  int dirfd = -1;
  bool created = false;
  if (start) {
    if (int rc = open_output_dir(a, a.text("-o"), &dirfd, &created)) {
      close(sock);
      return rc;
    }
  }
  control::Reply rep;
  const int rc = exchange(a, pid_of(a), sock, path, req, dirfd, &rep);
  if (dirfd >= 0) close(dirfd);
  if (rc) {
    // A directory this command made for a recording that did not start
    // goes again (if still empty: rmdir removes nothing else).
    if (created) {
      std::string d = a.text("-o");
      while (d.size() > 1 && d.back() == '/') d.pop_back();
      rmdir(d.c_str());
    }
    return rc;
  }
  if (start) std::printf("recording process %d into %s\n", static_cast<int>(pid_of(a)), a.text("-o"));
  else if (action == "rotate")
    std::printf("rotated: %s\n", rep.record.files.empty() ? "nothing new to publish"
                                                           : "the current segment is published");
  else if (!rep.message.empty()) std::printf("%s\n", rep.message.c_str());
  print_record(rep.record, label);
  return 0;
}

}  // namespace rbtrace::cli
