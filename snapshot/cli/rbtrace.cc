// rbtrace - the command-line tool: main and the one table of commands.
//
// Each row of kCommands names a command, the function that runs it (in the
// cmd_*.cc file of its group), its usage and summary, and its options and
// operands, which Args (args.cc) checks before the command runs: every
// command answers -h/--help, and refuses an unknown option, in one way.
// Exit status and messages: see cli.h.
#include <cstdio>
#include <string_view>

#include "cli.h"
#include "rbtrace/control.h"
#include "rbtrace/ring_buffer.h"

namespace {

using rbtrace::cli::Command;
using rbtrace::cli::kMaxPid;
using rbtrace::cli::Param;
namespace cli = rbtrace::cli;

// --dir DIR: the control directory to look in (else $RBTRACE_CONTROL_DIR,
// else the process's own, found from its uid and environment in /proc).
constexpr Command kCommands[] = {
    {"report", cli::cmd_report, "rbtrace report [--json] [-t] [-R] FILE... | -i FILE [-i FILE...]",
     "print trace.dat files as text (trace-cmd report) or JSON lines; several\n"
     "           files are merged by time (-t: ns time stamps, text only)",
     {Param::flag("--json"), Param::flag("-t"), Param::flag("-R"), Param::text("-i")},
     {Param{"FILE", false, 0, -1, true, true}}},
    {"export", cli::cmd_export,
     "rbtrace export --chrome FILE... -o OUT.json|- [--force] [--pid N] | --ctf FILE -o DIR",
     "convert trace.dat files (merged by time) to Chrome trace-event JSON (Perfetto;\n"
     "           -o - writes to stdout; the process is the files' own, or --pid N), or\n"
     "           one to a CTF 1.8 directory (babeltrace2, Trace Compass; DIR must not\n"
     "           exist or be empty)",
     {Param::flag("--chrome"), Param::flag("--ctf"), Param::text("-o"),
      Param::number("--pid", 0, kMaxPid), Param::text("-i"), Param::flag("--force")},
     {Param{"FILE", false, 0, -1, true, true}}},
    {"recover", cli::cmd_recover, "rbtrace recover DIR",
     "turn the spool of a killed process into trace.dat files",
     {},
     {Param::text("DIR")}},
    {"list", cli::cmd_list, "rbtrace list [--dir DIR]",
     "this user's traced processes (control sockets in DIR, else the default one)",
     {Param::text("--dir")},
     {}},
    {"stat", cli::cmd_stat, "rbtrace stat PID [--dir DIR]",
     "a traced process's CPUs and counters, and its recording",
     {Param::text("--dir")},
     {Param::number("PID", 1, kMaxPid)}},
    {"snapshot", cli::cmd_snapshot,
     "rbtrace snapshot PID [--cpu N] [-o FILE|DIR] [--force] [--timeout MS] [--dir DIR]",
     "swap out and dump a traced process's buffers as trace.dat (default name:\n"
     "           rbtrace-PID-DATE-TIME.MS.dat, made unique; -o DIR: that name in DIR)",
     {Param::number("--cpu", 0, rbtrace::kMaxCpus - 1), Param::text("-o"),
      Param::number("--timeout", 1, 60000), Param::flag("--force"), Param::text("--dir")},
     {Param::number("PID", 1, kMaxPid)}},
    {"events", cli::cmd_events,
     "rbtrace events PID [PATTERN] [--enable|--disable] [--dir DIR]",
     "list a traced process's events and their state, or enable or disable the\n"
     "           ones PATTERN matches (SYSTEM:NAME, '*' anywhere; '*' alone: all)",
     {Param::flag("--enable"), Param::flag("--disable"), Param::text("--dir")},
     {Param::number("PID", 1, kMaxPid), Param::optional_text("PATTERN")}},
    {"record", cli::cmd_record,
     "rbtrace record start PID -o DIR [--segment-size MB] [--segment-seconds S]\n"
     "                  [--pool-pages N] [--period-us US] [--watermark-pages N]\n"
     "                  [--batch-pages N] [--file-mode 600|640|644] [--prefix NAME]\n"
     "                  [--backend auto|io_uring|pwritev] [--no-fsync] [--direct-io]\n"
     "           rbtrace record stop|flush|rotate|status|on|off PID   (all: [--dir DIR])",
     "record a traced process to disk (a consumer inside it, writing trace.dat\n"
     "           files into DIR: the CLI opens DIR, creating it 0700, and passes it);\n"
     "           stop it, flush or rotate it now (publish the current segment),\n"
     "           show it; on/off: turn the process's tracing on or off",
     {Param::text("-o"), Param::number("--segment-size", 0, 1 << 20),
      Param::number("--segment-seconds", 0, 7 * 86400),
      Param::number("--pool-pages", 0, 4096), Param::number("--period-us", 100, 10000000),
      Param::number("--watermark-pages", 0, 1 << 20), Param::number("--batch-pages", 1, 4096),
      Param::text("--file-mode"), Param::text("--prefix"), Param::text("--backend"),
      Param::flag("--no-fsync"), Param::flag("--direct-io"), Param::text("--dir")},
     {Param::text("ACTION"), Param::number("PID", 1, kMaxPid)}},
};

void print_help(std::FILE* f) {
  std::fprintf(f, "usage: rbtrace <command> [arguments]  (rbtrace <command> --help)\n");
  std::fprintf(f, "       rbtrace --version\n\n");
  std::fprintf(f, "commands:\n");
  for (const Command& c : kCommands)
    std::fprintf(f, "  %-8s %s\n           %s\n", c.name, c.summary, c.usage);
  std::fprintf(f,
               "\nthe control socket: <dir>/<pid>.sock, <dir> from --dir, else\n"
               "$RBTRACE_CONTROL_DIR, else the process's own choice (its uid and environment:\n"
               "$RBTRACE_CONTROL_DIR, $XDG_RUNTIME_DIR/rbtrace, /run/user/<uid>/rbtrace,\n"
               "/tmp/rbtrace-<uid>); only its user and root may use it.\n"
               "\nexit status:\n"
               "    0  success (and --help, --version)\n"
               "    1  failed: a bad or corrupt file, an I/O error, a request the process could\n"
               "       not carry out (no such CPU, no event matches, a recording that failed)\n"
               "    2  usage error\n"
               "    3  partial: snapshot wrote its file without every CPU asked for\n"
               "    4  no such process\n"
               "    5  not traced: the process has no control socket\n"
               "    6  refused: another user's process or a directory not private (peer\n"
               "       credentials), or the process said no (a second record start, stop with\n"
               "       no recording, recording not allowed, an output directory not its user's)\n");
}

}  // namespace

const char* rbtrace::cli::version() { return RBTRACE_VERSION; }

int main(int argc, char** argv) {
  if (argc < 2) {
    print_help(stderr);
    return cli::kExitUsage;
  }
  const std::string_view cmd = argv[1];
  if (cmd == "help" || cmd == "-h" || cmd == "--help") {
    print_help(stdout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    std::printf("rbtrace %s (control protocol %u)\n", cli::version(),
                static_cast<unsigned>(rbtrace::control::kVersion));
    return 0;
  }
  for (const Command& c : kCommands) {
    if (cmd != c.name) continue;
    cli::Args args(c);
    if (const int rc = args.parse(argc - 1, argv + 1); rc >= 0) return rc;
    return c.run(args);
  }
  std::fprintf(stderr, "rbtrace: unknown command '%s'\n", argv[1]);
  print_help(stderr);
  return cli::kExitUsage;
}
