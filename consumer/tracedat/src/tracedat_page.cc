// tracedat_page.cc - the page-header check (see rbtrace/tracedat_page.h).
#include "rbtrace/tracedat_page.h"

#include <cstdio>

#include "rbtrace/format.h"

namespace rbtrace {

namespace {

bool refuse(std::string* why, std::string sentence) {
  if (why) *why = std::move(sentence);
  return false;
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

bool read_page_header(const unsigned char* page, uint32_t page_size, TracePageHeader* out,
                      std::string* why) {
  const uint64_t commit = load_u64(page + 8);
  const uint64_t len = commit & kCommitMask;
  const uint32_t cap = page_size - kPageHeaderSize;
  if (commit & ~(kCommitMask | kMissedEvents | kMissedStored))
    return refuse(why, "commit word " + hex(commit) + " has unknown bits set");
  if (len > cap)
    return refuse(why, "commit length " + std::to_string(len) + " exceeds the page's " +
                           std::to_string(cap) + " data bytes");
  out->ts = load_u64(page);
  out->length = static_cast<uint32_t>(len);
  out->missed = commit & kMissedEvents;
  out->missed_stored = commit & kMissedStored;
  out->missed_count = 0;
  if (out->missed_stored && !out->missed)
    return refuse(why, "MISSED_STORED without MISSED_EVENTS");
  if (out->missed_stored) {
    if (len + 8 > cap)
      return refuse(why, "no room after " + std::to_string(len) +
                             " data bytes for the stored lost-event count");
    out->missed_count = load_u64(page + kPageHeaderSize + len);
  }
  return true;
}

}  // namespace rbtrace
