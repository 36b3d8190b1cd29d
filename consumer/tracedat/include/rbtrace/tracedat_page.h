// rbtrace/tracedat_page.h - the header of one ring-buffer page as a file
// holds it (rbtrace::tracedat): the one check that the trace.dat reader and
// the consumer's spool recovery share.
//
// A page is the kernel's buffer_data_page (rbtrace/format.h): u64 time
// stamp, u64 commit word (bits 0..29 the data length, bit 30 MISSED_STORED,
// bit 31 MISSED_EVENTS, no bit above), the data; with MISSED_STORED the
// lost-event count follows the data as a u64.
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace rbtrace
