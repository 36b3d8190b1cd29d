// rbtrace/trace_export.h - text, JSON, Chrome trace-event and CTF renderings of a
// trace.dat (rbtrace::tracedat); the `rbtrace report` and `rbtrace export`
// commands are thin wrappers around these.
//
// Each function reads every record of `r` from the start (it rewinds), writes
// as it goes, and returns 0, or -1 with a sentence in *err: corrupt data
// found while reading (the reader's error) or a write error on `out`. On an
// error the output written so far is incomplete. Any thread; one call per
// reader at a time.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <vector>

#include "rbtrace/tracedat_reader.h"

namespace rbtrace {

struct ReportOptions {
  bool ns = false;   // time stamps as seconds.nanoseconds (trace-cmd report -t)
  bool raw = false;  // every field as name=value instead of the print fmt (-R)
};

// trace-cmd report's text:
//   cpus=N
//   CPU:N [M EVENTS DROPPED]             (before the first record of a page
//   CPU:N [EVENTS DROPPED]                that reports lost events)
//   <comm:16>-<pid:-5> [cpu:03] <s:5>.<us:06>: <name:>-21 <fields>
//   [N EVENTS REFUSED: NO FREE CPU SLOT (all CPUs)]   (last, when the file's
//                                         ring-wide count is not 0; tracedat.h)
// A record whose type has no format prints "[unknown event type N]".
// Nothing from the file reaches the output but printable ASCII: in the
// comm, the string fields and the print fmt's text, every byte outside
// 0x20..0x7e (control bytes such as ESC and newline, DEL, every byte >=
// 0x80, UTF-8 included) prints as \xNN; a backslash prints as itself (as
// trace-cmd prints ASCII strings), so the text is for reading — the JSON
// below is the lossless form.
int write_report_text(TraceDatReader& r, std::FILE* out, const ReportOptions& opts,
                      std::string* err);

// One JSON object per line:
//   {"cpu":0,"ts_ns":123,"pid":42,"comm":"app","type":1000,"system":"demo",
//    "name":"tick","fields":{"seq":1,"who":"x"}}
// with "lost_before":M (or "lost_before":null when the count was not stored)
// on a record whose page reports lost events. Integers are JSON numbers,
// strings are escaped (control bytes and DEL as \n, \t, \r or \u00XX; a
// valid UTF-8 sequence is kept; every other byte >= 0x80 becomes \u00XX,
// its Latin-1 code point), so the output is valid JSON and valid UTF-8
// whatever the file holds; byte arrays are hex strings. Unknown types have "system":null,"name":null.
int write_report_json(TraceDatReader& r, std::FILE* out, std::string* err);

// Chrome trace-event JSON (opens in the Perfetto UI and chrome://tracing):
//   {"displayTimeUnit":"ns","traceEvents":[
//     {"name":"process_name","ph":"M","pid":P,"args":{"name":process}},
//     {"name":"thread_name","ph":"M","pid":P,"tid":T,"args":{"name":comm}},
//     {"name":"tick","cat":"demo","ph":"i","s":"t","ts":12.345,"pid":P,"tid":T,
//      "args":{"cpu":0,"seq":1,...}},
//     {"name":"lost events","cat":"rbtrace","ph":"i","s":"g",...,"args":{"cpu":0,"count":M}}]}
// ts is in microseconds with nanosecond decimals; P = `pid` when it is
// above 0, else the file's own (TraceDatReader::process_pid: rbtrace's
// files name their process), else 1; `process` the file's process name,
// else "rbtrace". Thread ids are the records' common_pid.
// The track events of rbtrace/track.h (system "rbtrace", "cat":"rbtrace")
// become Chrome's durations, counters and flows instead of instants:
//   slice_begin / slice_end  "ph":"B" / "E" on the writer's thread, args
//                            {"cpu":N}; an end with no begin open on its
//                            thread (its begin overwritten) stays an instant
//   slice                    "ph":"X", "ts" = the event's time - dur_ns,
//                            "dur" in microseconds
//   async_begin / async_end  "ph":"b" / "e", "id":"0x<id hex>"
//   counter, counter_f       "ph":"C", "args":{<name>:<value>} (a number; a
//                            NaN or infinite counter_f stays an instant)
//   flow                     "ph":"s" / "t" / "f" (phase out / step / in),
//                            "id":"0x<id hex>", "f" with "bp":"e" (bound to
//                            the slice enclosing it, as "s" and "t" are)
// with "name" the event's name field. A record of the system whose fields
// are not track.h's stays an instant.
int write_chrome_json(TraceDatReader& r, std::FILE* out, int32_t pid, std::string* err);

// The same over several files at once, their records merged by time (ts_ns;
// a tie goes to the earlier reader), as `trace-cmd report -i a -i b`: each
// record's comm from its own file; the text report's cpus= is the largest
// count and each file's ring-wide refusal line follows the records; the
// Chrome export names each thread once (the first file that names it). A
// reader's error ends the output (-1 with that reader's sentence).
int write_report_text(const std::vector<TraceDatReader*>& rs, std::FILE* out,
                      const ReportOptions& opts, std::string* err);
int write_report_json(const std::vector<TraceDatReader*>& rs, std::FILE* out, std::string* err);
int write_chrome_json(const std::vector<TraceDatReader*>& rs, std::FILE* out, int32_t pid,
                      std::string* err);

// A CTF 1.8 trace directory (babeltrace2, Trace Compass): `metadata` (TSDL
// text) and one stream file `cpu<N>` per CPU with records, in packets of at
// most 256 KiB plus one record (memory does not grow with the trace). Each
// record is an event named "system:name" (records of a type without a
// format: "rbtrace:unknown_type" with its `type`), with the header time
// stamp = ts_ns on a 1 GHz clock of offset 0, the event context
// { pid, comm }, and the non-common fields: integers of their size and
// signedness, __data_loc char[] as strings, char[N] as UTF-8 text arrays,
// other bytes as u8 arrays. Lost events (TraceRecord::missed) go into the
// packet context's events_discarded (a running total; 1 for a count the
// page did not store), the record after them opening its own packet.
// `dir` must not exist or be an empty directory (else -1: "exists and is
// not empty (never replaced)"); it is built under a temporary name beside
// it (mode 0755 less the umask, files O_EXCL and never through a symbolic
// link) and renamed to `dir` only once complete: on any error nothing is
// left. Every file is fsync'ed before the rename.
int write_ctf(TraceDatReader& r, const std::string& dir, std::string* err);

// Appends `s` to *out as a JSON string literal (quotes included).
void append_json_string(std::string* out, const std::string& s);

}  // namespace rbtrace
