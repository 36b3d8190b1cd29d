// tracedat_page.cc - the page check shared by the trace.dat reader and the
// consumer's spool recovery, and the event table it checks records
// against (see rbtrace/tracedat_page.h).
#include "rbtrace/tracedat_page.h"

#include <cstdio>
#include <cstring>
#include <utility>

#include "rbtrace/format.h"
#include "tracedat_event_format.h"

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

bool parse_event_format(std::string_view text, const std::string& system, TraceEventFormat* out,
                        std::string* why) {
  std::string e;
  if (tracedat::parse_format(text, system, out, &e)) return true;
  return refuse(why, e);
}

bool TraceEventTable::insert(TraceEventFormat ev) {
  if (by_id_.count(ev.id)) return false;
  by_id_[ev.id] = events_.size();
  events_.push_back(std::move(ev));
  return true;
}

bool TraceEventTable::add(const std::string& system, std::string_view text, std::string* why) {
  TraceEventFormat ev;
  if (!parse_event_format(text, system, &ev, why)) return false;
  const uint16_t id = ev.id;
  if (!insert(std::move(ev))) return refuse(why, "ID " + std::to_string(id) + " used twice");
  return true;
}

namespace tracedat {

bool field_in_record(const unsigned char* rec, uint32_t size, const TraceField& f,
                     uint32_t* dyn_off, uint32_t* dyn_len, std::string* err) {
  if (f.offset > size || f.size > size - f.offset) {
    *err = "field '" + f.name + "' (offset " + std::to_string(f.offset) + ", size " +
           std::to_string(f.size) + ") is outside the " + std::to_string(size) + "-byte record";
    return false;
  }
  if (f.kind != TraceField::Kind::kDynString && f.kind != TraceField::Kind::kDynArray) return true;
  // u32: offset in the low 16 bits, length in the high 16 (parse_format
  // made sure the field is 4 bytes).
  const uint32_t loc = load_u32(rec + f.offset);
  const uint32_t off = loc & 0xffff, len = loc >> 16;
  if (off > size || len > size - off) {
    *err = "__data_loc of '" + f.name + "' (offset " + std::to_string(off) + ", length " +
           std::to_string(len) + ") is outside the " + std::to_string(size) + "-byte record";
    return false;
  }
  if (dyn_off) *dyn_off = off;
  if (dyn_len) *dyn_len = len;
  return true;
}

}  // namespace tracedat

bool check_trace_page(const unsigned char* page, uint32_t page_size, const TraceEventTable& events,
                      TracePageInfo* out, std::string* why) {
  TracePageHeader h;
  if (!read_page_header(page, page_size, &h, why)) return false;
  PageWalker w(page + kPageHeaderSize, h.length, h.ts);
  PageEvent ev;
  uint64_t n = 0;
  std::string e;
  while (w.next(&ev)) {
    n++;
    if (ev.length < sizeof(CommonHeader))
      return refuse(why, "record at data offset " + std::to_string(ev.offset) + " is " +
                             std::to_string(ev.length) +
                             " bytes, shorter than the 8-byte common header");
    CommonHeader ch;
    std::memcpy(&ch, ev.data, sizeof ch);
    const TraceEventFormat* f = events.find(ch.common_type);
    if (!f) continue;  // printed as an unknown type
    if (ev.length < f->min_size)
      return refuse(why, "record of " + f->system + ":" + f->name + " at data offset " +
                             std::to_string(ev.offset) + " is " + std::to_string(ev.length) +
                             " bytes, its format needs " + std::to_string(f->min_size));
    for (const TraceField& fd : f->fields) {
      if (fd.kind != TraceField::Kind::kDynString && fd.kind != TraceField::Kind::kDynArray) continue;
      if (!tracedat::field_in_record(ev.data, ev.length, fd, nullptr, nullptr, &e))
        return refuse(why, "record of " + f->system + ":" + f->name + " at data offset " +
                               std::to_string(ev.offset) + ": " + e);
    }
  }
  if (w.error())
    return refuse(why, "corrupt event at data offset " + std::to_string(w.offset()));
  if (out) {
    out->header = h;
    out->records = n;
  }
  return true;
}

}  // namespace rbtrace
