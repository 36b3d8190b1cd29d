// Reading a trace.dat from code: open it with TraceDatReader (which checks
// every section and every page before handing out a record), iterate the
// records of all CPUs in time order, decode fields by name.
//
//   rbtrace-example-read-tracedat FILE [FIELD]
//
// Prints the traced process, then per event type "system:name: N events",
// and the sum of FIELD (default "value") over the events that have it:
// for the files of rbtrace-example-record-to-disk, app:work's value.
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include <rbtrace/tracedat_reader.h>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [FIELD]\n", argv[0]);
    return 2;
  }
  const std::string field = argc > 2 ? argv[2] : "value";
  std::string err;
  auto reader = rbtrace::TraceDatReader::open(argv[1], &err);
  if (!reader) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  std::printf("process %d (%s), %u CPUs, clock %s\n", reader->process_pid(),
              reader->process_name().c_str(), reader->ncpus(), reader->clock().c_str());

  std::map<std::string, uint64_t> counts;
  uint64_t sum = 0, missed = 0;
  rbtrace::TraceRecord rec;
  int rc;
  while ((rc = reader->next(&rec)) == 1) {
    if (rec.missed) missed++;  // the page before this record lost events
    if (rec.event == nullptr) continue;  // a raw write() payload: no format
    counts[rec.event->system + ":" + rec.event->name]++;
    // A field by name: the format lists them (common_* first); the reader
    // decodes with bounds checks.
    for (const rbtrace::TraceField& f : rec.event->fields) {
      if (f.name != field) continue;
      rbtrace::TraceValue v;
      if (!rbtrace::TraceDatReader::field_value(rec, f, &v, &err)) {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
      }
      sum += v.kind == rbtrace::TraceValue::Kind::kSigned ? static_cast<uint64_t>(v.i) : v.u;
    }
  }
  if (rc < 0) {  // corrupt data: where and what
    std::fprintf(stderr, "%s\n", reader->error().c_str());
    return 1;
  }
  for (const auto& [name, n] : counts)
    std::printf("%s: %" PRIu64 " events\n", name.c_str(), n);
  std::printf("sum of %s: %" PRIu64 "\n", field.c_str(), sum);
  std::printf("pages that lost events before them: %" PRIu64 "\n", missed);
  return 0;
}
