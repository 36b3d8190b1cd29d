// rbtrace - the command-line tool.
//
//   rbtrace report [--json] [-t] [-R] FILE     trace-cmd-like text, or JSON lines
//   rbtrace export --chrome FILE -o OUT.json   Chrome trace-event JSON (Perfetto)
//   rbtrace recover DIR                        spool of a killed process -> trace.dat
//
// Commands are rows of kCommands, each one function taking its own
// arguments (argv[0] = the command name). Exit status: 0 success, 1 the
// command failed (bad or corrupt file, I/O error), 2 usage error. Every
// failure prints one line "rbtrace <command>: <what>" on stderr.
#include "cli_common.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "rbtrace/consumer.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat_reader.h"

// cmd_control.cc: the control-socket commands.
namespace rbtrace::cli {
int cmd_list(int, char**), cmd_stat(int, char**), cmd_snapshot(int, char**), cmd_events(int, char**);
extern const char kListUsage[], kStatUsage[], kSnapshotUsage[], kEventsUsage[];
}  // namespace rbtrace::cli

namespace {

using rbtrace::cli::fail;
using rbtrace::cli::kExitFail;
using rbtrace::cli::kExitUsage;
using rbtrace::cli::usage_error;

// ---- report -------------------------------------------------------------------
constexpr const char* kReportUsage = "rbtrace report [--json] [-t] [-R] FILE";

int cmd_report(int argc, char** argv) {
  bool json = false;
  rbtrace::ReportOptions opts;
  const char* file = nullptr;
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "--json") json = true;
    else if (a == "-t") opts.ns = true;
    else if (a == "-R") opts.raw = true;
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s\n", kReportUsage);
      return 0;
    } else if (!a.empty() && a[0] == '-') return usage_error("report", "unknown option '" + std::string(a) + "'", kReportUsage);
    else if (file) return usage_error("report", "more than one FILE", kReportUsage);
    else file = argv[i];
  }
  if (!file) return usage_error("report", "no FILE", kReportUsage);
  std::string err;
  auto r = rbtrace::TraceDatReader::open(file, &err);
  if (!r) return fail("report", err);
  const int rc = json ? rbtrace::write_report_json(*r, stdout, &err)
                      : rbtrace::write_report_text(*r, stdout, opts, &err);
  if (rc) return fail("report", std::string(file) + ": " + err);
  return 0;
}

// ---- export -------------------------------------------------------------------
constexpr const char* kExportUsage = "rbtrace export --chrome FILE -o OUT.json [--pid N]";

int cmd_export(int argc, char** argv) {
  bool chrome = false;
  const char* file = nullptr;
  const char* out = nullptr;
  long pid = 1;
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "--chrome") {
      chrome = true;
    } else if (a == "-o") {
      if (++i >= argc) return usage_error("export", "-o needs a file name", kExportUsage);
      out = argv[i];
    } else if (a == "--pid") {
      if (++i >= argc) return usage_error("export", "--pid needs a number", kExportUsage);
      char* end = nullptr;
      errno = 0;
      pid = std::strtol(argv[i], &end, 10);
      if (errno || *end || end == argv[i] || pid < 0 || pid > 0x7fffffff)
        return usage_error("export", "bad --pid '" + std::string(argv[i]) + "'", kExportUsage);
    } else if (a == "-h" || a == "--help") {
      std::printf("usage: %s\n", kExportUsage);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("export", "unknown option '" + std::string(a) + "'", kExportUsage);
    } else if (file) {
      return usage_error("export", "more than one FILE", kExportUsage);
    } else {
      file = argv[i];
    }
  }
  if (!chrome) return usage_error("export", "choose a format (--chrome)", kExportUsage);
  if (!file) return usage_error("export", "no FILE", kExportUsage);
  if (!out) return usage_error("export", "no output file (-o OUT.json)", kExportUsage);
  std::string err;
  auto r = rbtrace::TraceDatReader::open(file, &err);
  if (!r) return fail("export", err);

  // Written under a private name next to OUT, renamed over it when complete:
  // a failed export leaves no partial OUT.
  std::string tmp = std::string(out) + ".XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return fail("export", std::string(out) + ": " + std::strerror(errno));
  ::fchmod(fd, 0644);
  std::FILE* f = ::fdopen(fd, "w");
  if (!f) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail("export", std::string(out) + ": " + std::strerror(e));
  }
  int rc = rbtrace::write_chrome_json(*r, f, static_cast<int32_t>(pid), &err);
  if (rc == 0 && ::fsync(::fileno(f)) != 0) {
    err = std::string("write error: ") + std::strerror(errno);
    rc = -1;
  }
  if (std::fclose(f) != 0 && rc == 0) {
    err = std::string("write error: ") + std::strerror(errno);
    rc = -1;
  }
  if (rc == 0 && ::rename(tmp.c_str(), out) != 0) {
    err = std::string(out) + ": " + std::strerror(errno);
    rc = -1;
  }
  if (rc) {
    ::unlink(tmp.c_str());
    return fail("export", std::string(file) + ": " + err);
  }
  return 0;
}

// ---- recover ------------------------------------------------------------------
constexpr const char* kRecoverUsage = "rbtrace recover DIR";

// The consumer's spool recovery (rbtrace::recover_spool): every session in
// DIR/spool whose process is gone becomes trace.dat files in DIR.
int cmd_recover(int argc, char** argv) {
  const char* dir = nullptr;
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: %s\n", kRecoverUsage);
      return 0;
    }
    if (!a.empty() && a[0] == '-')
      return usage_error("recover", "unknown option '" + std::string(a) + "'", kRecoverUsage);
    if (dir) return usage_error("recover", "more than one DIR", kRecoverUsage);
    dir = argv[i];
  }
  if (!dir) return usage_error("recover", "no DIR", kRecoverUsage);
  rbtrace::RecoverResult r;
  std::string err;
  const int rc = rbtrace::recover_spool(dir, &r, &err);
  for (const std::string& m : r.messages) std::printf("%s\n", m.c_str());
  for (const std::string& f : r.published) std::printf("recovered %s\n", f.c_str());
  std::printf("%llu dead session(s), %llu still recording; %llu trace(s) written: %llu pages, "
              "%llu events; %llu incomplete pages skipped\n",
              static_cast<unsigned long long>(r.sessions), static_cast<unsigned long long>(r.sessions_live),
              static_cast<unsigned long long>(r.segments), static_cast<unsigned long long>(r.pages),
              static_cast<unsigned long long>(r.events), static_cast<unsigned long long>(r.pages_rejected));
  if (rc) return fail("recover", err);
  return 0;
}

// ---- the command table ----------------------------------------------------------
struct Command {
  const char* name;
  int (*run)(int argc, char** argv);
  const char* usage;
  const char* summary;
};

// `rbtrace recover DIR` (the consumer's spool recovery), and `list`,
// `snapshot`, `stat` (the control socket) are added here by their owners.
constexpr Command kCommands[] = {
    {"report", cmd_report, kReportUsage, "print a trace.dat as text (trace-cmd report) or JSON lines"},
    {"export", cmd_export, kExportUsage, "convert a trace.dat to Chrome trace-event JSON"},
    {"recover", cmd_recover, kRecoverUsage, "turn the spool of a killed process into trace.dat files"},
    {"list", rbtrace::cli::cmd_list, rbtrace::cli::kListUsage, "this user's traced processes (control sockets)"},
    {"stat", rbtrace::cli::cmd_stat, rbtrace::cli::kStatUsage, "a traced process's CPUs and counters"},
    {"snapshot", rbtrace::cli::cmd_snapshot, rbtrace::cli::kSnapshotUsage, "swap out and dump a traced process's buffers as trace.dat"},
    {"events", rbtrace::cli::cmd_events, rbtrace::cli::kEventsUsage, "enable or disable a traced process's events"},
};

void print_help(std::FILE* f) {
  std::fprintf(f, "usage: rbtrace <command> [arguments]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(f, "  %-8s %s\n           %s\n", c.name, c.summary, c.usage);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_help(stderr);
    return kExitUsage;
  }
  const std::string_view cmd = argv[1];
  if (cmd == "help" || cmd == "-h" || cmd == "--help") {
    print_help(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (cmd == c.name) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "rbtrace: unknown command '%s'\n", argv[1]);
  print_help(stderr);
  return kExitUsage;
}
