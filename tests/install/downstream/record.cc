// Built against the *installed* rbtrace with nothing but what a user has:
// by run_install_test.sh with pkg-config (`pkg-config --cflags --libs
// rbtrace`) and by downstream/CMakeLists.txt with find_package, static and
// shared, under -Wall -Wextra -Wpedantic -Werror. Records events into a
// ring, to a directory through rbtrace::Consumer (which needs liburing),
// and reads the published trace.dat back (rbtrace::tracedat); names a
// control socket path (rbtrace::snapshot). Exit status 0 only if every
// event came back.
//
//   downstream-record DIR
#include <unistd.h>

#include <cstdio>
#include <string>

#include <rbtrace/consumer.h>
#include <rbtrace/control.h>
#include <rbtrace/rbtrace.h>
#include <rbtrace/tracedat_reader.h>

RBTRACE_EVENT(downstream, record, ((uint32_t, n))((rbtrace::str, who)))

namespace {
int fail(const std::string& what) {
  std::fprintf(stderr, "downstream-record: %s\n", what.c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return fail("usage: downstream-record DIR");
  constexpr uint32_t kEvents = 1000;
  rbtrace::Options o;
  o.ncpus = 1;
  rbtrace::Error err;
  auto rb = rbtrace::RingBuffer::create(o, &err);
  if (!rb) return fail("RingBuffer::create: " + err.message);
  rbtrace::ConsumerOptions co;
  co.dir = argv[1];
  co.fsync = false;
  auto consumer = rbtrace::Consumer::create(*rb, co, &err);
  if (!consumer) return fail("Consumer::create: " + err.message);
  for (uint32_t i = 0; i < kEvents; i++)
    if (rbtrace_events::downstream_record::emit(*rb, i, "downstream") != 0)
      return fail("emit " + std::to_string(i));
  // The consumer stops before the ring is destroyed.
  if (int rc = consumer->stop(); rc != 0) return fail("Consumer::stop: " + std::to_string(rc));
  const auto files = consumer->published();
  if (files.size() != 1) return fail(std::to_string(files.size()) + " files published, not 1");

  std::string why;
  auto reader = rbtrace::TraceDatReader::open(files[0], &why);
  if (!reader) return fail("TraceDatReader::open " + files[0] + ": " + why);
  rbtrace::TraceRecord rec;
  uint32_t n = 0;
  int rc;
  while ((rc = reader->next(&rec)) == 1) {
    if (!rec.event || rec.event->system != "downstream" || rec.event->name != "record") continue;
    std::string fields;
    if (!rbtrace::TraceDatReader::format_fields(rec, &fields, &why)) return fail(why);
    const std::string want = "n=" + std::to_string(n) + " who=downstream";
    if (fields != want) return fail("record " + std::to_string(n) + ": '" + fields + "', not '" + want + "'");
    n++;
  }
  if (rc != 0) return fail("reading " + files[0] + ": " + reader->error());
  if (n != kEvents) return fail(std::to_string(n) + " events read back, not " + std::to_string(kEvents));
  const std::string sock = rbtrace::control::socket_path(getpid(), "/nonexistent");
  if (sock != "/nonexistent/" + std::to_string(getpid()) + ".sock") return fail("socket_path: " + sock);
  std::printf("downstream-record: %u events through %s\n", n, files[0].c_str());
  return 0;
}
