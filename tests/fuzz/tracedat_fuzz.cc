// libFuzzer target: the trace.dat reader on arbitrary bytes. Opens the
// input, walks every record, renders each one (print fmt, raw fields, every
// field value) and runs the three exporters. Any crash, sanitizer report,
// leak, or an error without a message is a finding.
//
// Built with -DRBTRACE_BUILD_FUZZERS=ON and clang; tests/fuzz/run_fuzzers.sh
// configures, builds and runs it for a bounded time, seeded from
// tests/corpus/tracedat.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat_reader.h"

namespace {
void require_message(const std::string& err) {
  if (err.empty()) {
    std::fprintf(stderr, "an error without a message\n");
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::FILE* devnull = std::fopen("/dev/null", "w");
  std::string err;
  auto r = rbtrace::TraceDatReader::open_memory(data, size, &err);
  if (!r) {
    require_message(err);
    return 0;
  }
  rbtrace::TraceRecord rec;
  std::string text;
  int rc;
  while ((rc = r->next(&rec)) > 0) {
    if (!rec.event) continue;
    if (!rbtrace::TraceDatReader::format_fields(rec, &text, &err)) require_message(err);
    if (!rbtrace::TraceDatReader::raw_fields(rec, &text, &err)) require_message(err);
    for (const rbtrace::TraceField& f : rec.event->fields) {
      rbtrace::TraceValue v;
      if (!rbtrace::TraceDatReader::field_value(rec, f, &v, &err)) require_message(err);
    }
  }
  if (rc < 0) require_message(r->error());
  rbtrace::ReportOptions opts;
  opts.raw = size & 1;
  opts.ns = size & 2;
  if (rbtrace::write_report_text(*r, devnull, opts, &err)) require_message(err);
  if (rbtrace::write_report_json(*r, devnull, &err)) require_message(err);
  if (rbtrace::write_chrome_json(*r, devnull, 1, &err)) require_message(err);
  return 0;
}
