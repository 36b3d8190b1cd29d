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
#include "rbtrace/ring_buffer.h"

namespace {

using rbtrace::cli::Command;
using rbtrace::cli::kMaxPid;
using rbtrace::cli::Param;
namespace cli = rbtrace::cli;

constexpr Command kCommands[] = {
    {"report", cli::cmd_report, "rbtrace report [--json] [-t] [-R] FILE",
     "print a trace.dat as text (trace-cmd report) or JSON lines",
     {Param::flag("--json"), Param::flag("-t"), Param::flag("-R")},
     {Param::text("FILE")}},
    {"export", cli::cmd_export,
     "rbtrace export --chrome FILE -o OUT.json [--pid N] | --ctf FILE -o DIR",
     "convert a trace.dat to Chrome trace-event JSON (Perfetto; the process is the\n"
     "           file's own, or --pid N), or to a CTF 1.8 directory (babeltrace2, Trace\n"
     "           Compass; DIR must not exist or be empty)",
     {Param::flag("--chrome"), Param::flag("--ctf"), Param::text("-o"),
      Param::number("--pid", 0, kMaxPid)},
     {Param::text("FILE")}},
    {"recover", cli::cmd_recover, "rbtrace recover DIR",
     "turn the spool of a killed process into trace.dat files",
     {},
     {Param::text("DIR")}},
    {"list", cli::cmd_list, "rbtrace list",
     "this user's traced processes (control sockets)",
     {},
     {}},
    {"stat", cli::cmd_stat, "rbtrace stat PID",
     "a traced process's CPUs and counters",
     {},
     {Param::number("PID", 1, kMaxPid)}},
    {"snapshot", cli::cmd_snapshot, "rbtrace snapshot PID [--cpu N] [-o FILE] [--timeout MS]",
     "swap out and dump a traced process's buffers as trace.dat",
     {Param::number("--cpu", 0, rbtrace::kMaxCpus - 1), Param::text("-o"),
      Param::number("--timeout", 1, 60000)},
     {Param::number("PID", 1, kMaxPid)}},
    {"events", cli::cmd_events, "rbtrace events PID (--enable|--disable) SYSTEM:NAME|SYSTEM:*",
     "enable or disable a traced process's events",
     {Param::flag("--enable"), Param::flag("--disable")},
     {Param::number("PID", 1, kMaxPid), Param::text("SYSTEM:NAME")}},
};

void print_help(std::FILE* f) {
  std::fprintf(f, "usage: rbtrace <command> [arguments]  (rbtrace <command> --help)\n\n");
  std::fprintf(f, "commands:\n");
  for (const Command& c : kCommands)
    std::fprintf(f, "  %-8s %s\n           %s\n", c.name, c.summary, c.usage);
}

}  // namespace

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
