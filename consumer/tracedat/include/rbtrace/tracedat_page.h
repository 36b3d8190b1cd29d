// rbtrace/tracedat_page.h - one ring-buffer page as a file holds it
// (rbtrace::tracedat): the page check that the trace.dat reader and the
// consumer's spool recovery share, so that recovery publishes only pages
// the reader reads.
//
// A page is the kernel's buffer_data_page (rbtrace/format.h): u64 time
// stamp, u64 commit word (bits 0..29 the data length, bit 30 MISSED_STORED,
// bit 31 MISSED_EVENTS, no bit above), the data; with MISSED_STORED the
// lost-event count follows the data as a u64.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "rbtrace/tracedat_reader.h"

namespace rbtrace {

struct TracePageHeader {
  uint64_t ts = 0;             // the page's time stamp
  uint32_t length = 0;         // data bytes (commit & kCommitMask)
  bool missed = false;         // MISSED_EVENTS: events were lost before it
  bool missed_stored = false;  // MISSED_STORED: their count follows the data
  uint64_t missed_count = 0;   // that count; 0 without MISSED_STORED
};

// Reads the header of `page` (page_size bytes, 4096 <= page_size) into *out
// and checks it: no unknown bit in the commit word, a length of at most
// page_size - 16, MISSED_STORED only with MISSED_EVENTS and with room for
// the count after the data. A length of 0 passes (a page without events).
// False with a sentence in *why (when not null); *out is then partly filled.
// Any thread; reads only the page.
bool read_page_header(const unsigned char* page, uint32_t page_size, TracePageHeader* out,
                      std::string* why);

// Parses one event format text (events/<system>/<name>/format) exactly as
// the trace.dat reader parses the formats of a file: name, ID, fields
// (offsets, sizes, kinds, no field twice), the print fmt. False with a
// sentence in *why (naming the line).
bool parse_event_format(std::string_view text, const std::string& system, TraceEventFormat* out,
                        std::string* why);

// The event formats of a trace by ID: what check_trace_page checks records
// against. The reader keeps the formats of the file it reads in one;
// spool recovery builds one from the segment's sidecar.
class TraceEventTable {
 public:
  // Adds a parsed format; false (and nothing added) when its ID is taken.
  bool insert(TraceEventFormat ev);
  // parse_event_format, then insert: false with a sentence in *why.
  bool add(const std::string& system, std::string_view text, std::string* why);
  // The format of `id`, or null. The pointer stays valid until the next
  // insert.
  const TraceEventFormat* find(uint16_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &events_[it->second];
  }
  const std::vector<TraceEventFormat>& events() const { return events_; }
  size_t size() const { return events_.size(); }

 private:
  std::vector<TraceEventFormat> events_;
  std::unordered_map<uint16_t, size_t> by_id_;
};

// What check_trace_page found on a page that passed.
struct TracePageInfo {
  TracePageHeader header;
  uint64_t records = 0;  // data events on the page
};

// THE check of one page: the trace.dat reader applies it to every page
// before it returns any record of it, and `rbtrace recover` to every spool
// page before it publishes it (a page that fails is skipped and counted),
// so a page recovery publishes is one the reader reads to the end. In
// order:
//   - the header (read_page_header);
//   - every event in [0, length) (PageWalker: each event's length within
//     the data, 4-byte aligned; a truncated header or time event fails);
//   - every record: at least the 8-byte common header; when `events` has a
//     format for its common_type, at least that format's min_size bytes,
//     and every __data_loc string (offset, length) inside the record —
//     what printing its fields needs. A type without a format passes (it
//     prints as "[unknown event type N]").
// A page of length 0 passes (no records; recovery counts it as a hole).
// False with a sentence in *why (when not null) naming the offset in the
// page data and the problem; *out (when not null) is filled when it passes.
// Any thread; reads only the page and `events`.
bool check_trace_page(const unsigned char* page, uint32_t page_size, const TraceEventTable& events,
                      TracePageInfo* out, std::string* why);

}  // namespace rbtrace
