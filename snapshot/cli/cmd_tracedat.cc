// cmd_tracedat.cc - the `rbtrace` commands that read trace.dat files
// (rbtrace/tracedat_reader.h, rbtrace/trace_export.h):
//
//   rbtrace report [--json] [-t] [-R] FILE... | -i FILE...   text or JSON lines
//   rbtrace export --chrome FILE... -o OUT.json|- [--force]  Chrome JSON (Perfetto)
//   rbtrace export --ctf FILE -o DIR                        a CTF 1.8 directory
//
// Several files (operands, or -i as trace-cmd takes them) are merged by
// time into one report or Chrome trace.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat_reader.h"

namespace rbtrace::cli {

namespace {

// Every file stays open while they are merged: as many descriptors as
// the hard limit allows (a day of one-minute segments is 1,440 files).
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Every input file (-i first, then the operands), opened. 0, or an exit
// status after saying why (a usage error when there is none).
int open_inputs(const Args& a, std::vector<std::unique_ptr<TraceDatReader>>* readers,
                std::vector<TraceDatReader*>* raw) {
  std::vector<std::string> files = a.texts("-i");
  for (std::string& f : a.texts("FILE")) files.push_back(std::move(f));
  if (files.empty()) return a.usage_error("no FILE");
  if (files.size() > 16) raise_fd_limit();
  for (const std::string& f : files) {
    std::string err;
    auto r = TraceDatReader::open(f, &err);
    if (!r) return a.fail(err);
    raw->push_back(r.get());
    readers->push_back(std::move(r));
  }
  return 0;
}

// The file a failed merge stopped at (the reader with an error), else all
// of them: a corrupt file among hundreds is named.
std::string names(const Args& a, const std::vector<TraceDatReader*>& raw = {}) {
  std::vector<std::string> files = a.texts("-i");
  for (std::string& f : a.texts("FILE")) files.push_back(std::move(f));
  for (size_t i = 0; i < raw.size() && i < files.size(); i++)
    if (!raw[i]->error().empty()) return files[i];
  std::string n;
  for (const std::string& f : files) n += (n.empty() ? "" : ", ") + f;
  return n;
}

}  // namespace

int cmd_report(const Args& a) {
  // The JSON lines always carry ts_ns in nanoseconds and every field by
  // name: -t and -R are the text report's.
  if (a.has("--json") && (a.has("-t") || a.has("-R")))
    return a.usage_error(std::string(a.has("-t") ? "-t" : "-R") +
                         " is for the text report (--json always has ts_ns in nanoseconds and "
                         "every field by name)");
  rbtrace::ReportOptions opts;
  opts.ns = a.has("-t");
  opts.raw = a.has("-R");
  std::vector<std::unique_ptr<TraceDatReader>> readers;
  std::vector<TraceDatReader*> raw;
  if (int rc = open_inputs(a, &readers, &raw)) return rc;
  std::string err;
  const int rc = a.has("--json") ? rbtrace::write_report_json(raw, stdout, &err)
                                 : rbtrace::write_report_text(raw, stdout, opts, &err);
  if (rc) return a.fail(names(a, raw) + ": " + err);
  return 0;
}

int cmd_export(const Args& a) {
  const bool ctf = a.has("--ctf");
  if (a.has("--chrome") == ctf) return a.usage_error("choose one format (--chrome or --ctf)");
  if (!a.has("-o")) return a.usage_error(ctf ? "no output directory (-o DIR)" : "no output file (-o OUT.json or -o -)");
  if (ctf && a.has("--pid")) return a.usage_error("--pid is for --chrome");
  if (ctf && a.has("--force")) return a.usage_error("--force is for --chrome (a CTF directory is never replaced)");
  const std::string out = a.text("-o");
  if (ctf && out == "-") return a.usage_error("a CTF trace is a directory: -o - is for --chrome");
  std::vector<std::unique_ptr<TraceDatReader>> readers;
  std::vector<TraceDatReader*> raw;
  if (int rc = open_inputs(a, &readers, &raw)) return rc;
  std::string err;
  if (ctf) {
    if (raw.size() != 1) return a.usage_error("--ctf takes one FILE");
    // A directory that exists and is not empty is refused; on an error
    // nothing is left (write_ctf builds it under a temporary name).
    if (rbtrace::write_ctf(*raw[0], out, &err) != 0) return a.fail(names(a, raw) + ": " + err);
    return 0;
  }
  // 0: the files' own process (their PROCMAPS option), else 1.
  const auto pid = static_cast<int32_t>(a.number("--pid", 0));
  if (out == "-") {
    // A stream: written as it goes (a reader's error leaves it cut short,
    // and says so).
    if (rbtrace::write_chrome_json(raw, stdout, pid, &err) != 0) return a.fail(names(a, raw) + ": " + err);
    return 0;
  }
  return write_output(
      a, out, true,
      [&](int fd) {
        std::FILE* f = ::fdopen(::dup(fd), "w");  // dup: the AtomicFile keeps its own
        if (!f) return a.fail(out + ": " + std::strerror(errno));
        int rc = rbtrace::write_chrome_json(raw, f, pid, &err);
        if (std::fclose(f) != 0 && rc == 0) {
          err = std::string("write error: ") + std::strerror(errno);
          rc = -1;
        }
        return rc ? a.fail(names(a, raw) + ": " + err) : 0;
      },
      a.has("--force"));
}

}  // namespace rbtrace::cli
