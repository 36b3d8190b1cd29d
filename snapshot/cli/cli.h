// snapshot/cli/cli.h - what the `rbtrace` subcommands share: the command
// table's row (Command), the one argument parser (Args), exit codes and
// messages, and the output-file helper.
//
//   rbtrace.cc        main and the table of commands (names, usage strings,
//                     options and operands)
//   args.cc           Args: --help, unknown options, numbers, operands
//   output.cc         write_output: -o files, named only once complete
//   cmd_tracedat.cc   report, export        (trace.dat files)
//   cmd_recover.cc    recover               (the consumer's spool)
//   cmd_control.cc    list, stat, snapshot, events, record   (the control socket)
//
// Exit status (the same table is in `rbtrace --help`):
//   0  success (and --help, --version)
//   1  the command failed: a bad or corrupt file, an I/O error, a request
//      the process could not carry out (no such CPU, no event matches, a
//      recording that failed to start or flush)
//   2  usage error
//   3  partial: `rbtrace snapshot` wrote its file but could not capture
//      every CPU it was asked for (each one named on stderr with its
//      thread and the reason)
//   4  no such process
//   5  not traced: the process exists but has no control socket (in its
//      control directory, or in --dir / $RBTRACE_CONTROL_DIR)
//   6  refused: by the peer-credential rules (another user's process, a
//      control directory that is not private), or by the process in its
//      state (a second record start, stop with no recording, a recording
//      the application does not allow, an output directory not its user's)
// Every failure prints one line "rbtrace <command>: <what>" on stderr; a
// usage error adds the usage line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace rbtrace::cli {

inline constexpr int kExitFail = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitPartial = 3;
inline constexpr int kExitNoProcess = 4;
inline constexpr int kExitNotTraced = 5;
inline constexpr int kExitRefused = 6;
inline constexpr long kMaxPid = 0x7fffffff;

// An option ("--cpu", "-o") or an operand ("PID", "FILE") of a command.
struct Param {
  const char* name = nullptr;  // nullptr: an unused slot of the row
  bool is_flag = false;        // an option without a value
  long lo = 0, hi = -1;        // lo <= hi: the value is a number in [lo, hi]
  bool optional = false;       // an operand that may be left out (the last ones)
  bool repeats = false;        // the last operand: one or more

  static constexpr Param flag(const char* n) { return {n, true}; }
  static constexpr Param text(const char* n) { return {n}; }
  static constexpr Param number(const char* n, long lo, long hi) { return {n, false, lo, hi}; }
  static constexpr Param optional_text(const char* n) { return {n, false, 0, -1, true}; }
  static constexpr Param texts(const char* n) { return {n, false, 0, -1, false, true}; }
  constexpr bool is_number() const { return lo <= hi; }
};

class Args;

// One row of the command table (rbtrace.cc). Options may come in any order
// and anywhere among the operands; every operand is required.
struct Command {
  const char* name;
  int (*run)(const Args& args);
  const char* usage;
  const char* summary;
  Param options[16];
  Param operands[3];
};

// The arguments of one command, checked against its row. An option given
// twice keeps its last value (text, number), or all of them (texts).
class Args {
 public:
  explicit Args(const Command& command) : command_(command) {}

  // Parses argv (argv[0] is the command's name). -1: run the command; else
  // the exit status after answering -h/--help (0, usage on stdout) or a
  // usage error (2, on stderr).
  int parse(int argc, char** argv);

  // An option or operand by name: given at all; its text (nullptr when
  // absent, "" for a flag); its number (checked against its range).
  bool has(std::string_view name) const { return find(name) != nullptr; }
  const char* text(std::string_view name) const;
  long number(std::string_view name, long dflt) const;
  std::vector<std::string> texts(std::string_view name) const;  // every value, in order
  const char* name() const { return command_.name; }

  // "rbtrace CMD: WHAT" on stderr: kExitFail.
  int fail(const std::string& what) const;
  // The same plus the usage line: kExitUsage.
  int usage_error(const std::string& what) const;

 private:
  struct Given {
    std::string_view name;
    const char* text;
    long number;
  };
  const Given* find(std::string_view name) const;
  int take(const Param& p, const char* value);

  const Command& command_;
  std::vector<Given> given_;
};

// The one number parser: all of `s` in base 10, within [lo, hi].
bool parse_number(const char* s, long lo, long hi, long* out);

// Creates `out` as an AtomicFile (rbtrace/atomic_file.h): `fill` writes
// into the descriptor and returns 0 or an exit status after saying why;
// the file is named `out` only once filled (fsync'ed first when `durable`),
// and an existing `out` is never replaced (checked before `fill` runs, and
// again when naming it) unless `force`: then an existing regular file (not
// a directory, a symlink or a device) is replaced once the new one is
// complete. 0 or an exit status.
int write_output(const Args& args, const std::string& out, bool durable,
                 const std::function<int(int fd)>& fill, bool force = false);
// Where -o puts a file: `o` itself, or `o`/`default_name` when `o` is an
// existing directory (not through a symlink's name: `o` is the user's).
std::string output_path(const char* o, const std::string& default_name);

// The commands, by group.
int cmd_report(const Args&);
int cmd_export(const Args&);
int cmd_recover(const Args&);
int cmd_list(const Args&);
int cmd_stat(const Args&);
int cmd_snapshot(const Args&);
int cmd_events(const Args&);
int cmd_record(const Args&);

// The version `rbtrace --version` prints (the CMake project's).
const char* version();

}  // namespace rbtrace::cli
