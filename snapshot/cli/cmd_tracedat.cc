// cmd_tracedat.cc - the `rbtrace` commands that read a trace.dat
// (rbtrace/tracedat_reader.h, rbtrace/trace_export.h):
//
//   rbtrace report [--json] [-t] [-R] FILE     trace-cmd-like text, or JSON lines
//   rbtrace export --chrome FILE -o OUT.json   Chrome trace-event JSON (Perfetto)
//   rbtrace export --ctf FILE -o DIR           a CTF 1.8 directory (babeltrace2)
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat_reader.h"

namespace rbtrace::cli {

int cmd_report(const Args& a) {
  rbtrace::ReportOptions opts;
  opts.ns = a.has("-t");
  opts.raw = a.has("-R");
  const std::string file = a.text("FILE");
  std::string err;
  auto r = rbtrace::TraceDatReader::open(file, &err);
  if (!r) return a.fail(err);
  const int rc = a.has("--json") ? rbtrace::write_report_json(*r, stdout, &err)
                                 : rbtrace::write_report_text(*r, stdout, opts, &err);
  if (rc) return a.fail(file + ": " + err);
  return 0;
}

int cmd_export(const Args& a) {
  const bool ctf = a.has("--ctf");
  if (a.has("--chrome") == ctf) return a.usage_error("choose one format (--chrome or --ctf)");
  if (!a.has("-o")) return a.usage_error(ctf ? "no output directory (-o DIR)" : "no output file (-o OUT.json)");
  if (ctf && a.has("--pid")) return a.usage_error("--pid is for --chrome");
  const std::string file = a.text("FILE");
  const std::string out = a.text("-o");
  std::string err;
  auto r = rbtrace::TraceDatReader::open(file, &err);
  if (!r) return a.fail(err);
  if (ctf) {
    // A directory that exists and is not empty is refused; on an error
    // nothing is left (write_ctf builds it under a temporary name).
    if (rbtrace::write_ctf(*r, out, &err) != 0) return a.fail(file + ": " + err);
    return 0;
  }
  return write_output(a, out, true, [&](int fd) {
    std::FILE* f = ::fdopen(::dup(fd), "w");  // dup: the AtomicFile keeps its own
    if (!f) return a.fail(out + ": " + std::strerror(errno));
    // 0: the file's own process (its PROCMAPS option), else 1.
    const auto pid = static_cast<int32_t>(a.number("--pid", 0));
    int rc = rbtrace::write_chrome_json(*r, f, pid, &err);
    if (std::fclose(f) != 0 && rc == 0) {
      err = std::string("write error: ") + std::strerror(errno);
      rc = -1;
    }
    return rc ? a.fail(file + ": " + err) : 0;
  });
}

}  // namespace rbtrace::cli
