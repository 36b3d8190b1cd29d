// trace_export.cc - report text, JSON lines and Chrome trace-event JSON
// (see rbtrace/trace_export.h).
#include "rbtrace/trace_export.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <cstdarg>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "rbtrace/tracedat.h"
#include "tracedat_text.h"

namespace rbtrace {

namespace {

// Output through a std::string batch, flushed to the FILE every 64 KiB.
class Writer {
 public:
  explicit Writer(std::FILE* f) : f_(f) { buf_.reserve(kBatch + 4096); }
  std::string& buf() { return buf_; }
  bool maybe_flush() { return buf_.size() >= kBatch ? flush() : true; }
  bool flush() {
    if (!buf_.empty() && std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size()) {
      errno_ = errno;
      return false;
    }
    buf_.clear();
    if (std::fflush(f_) != 0) {
      errno_ = errno;
      return false;
    }
    return true;
  }
  std::string error() const {
    return std::string("write error: ") + std::strerror(errno_ ? errno_ : EIO);
  }

 private:
  static constexpr size_t kBatch = 64 * 1024;
  std::FILE* f_;
  std::string buf_;
  int errno_ = 0;
};

void appendf(std::string* s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void appendf(std::string* s, const char* fmt, ...) {
  char b[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  if (n > 0) s->append(b, std::min<size_t>(static_cast<size_t>(n), sizeof b - 1));
}

void lost_line(std::string* s, const TraceRecord& rec) {
  if (rec.missed_known)
    appendf(s, "CPU:%u [%" PRIu64 " EVENTS DROPPED]\n", rec.cpu, rec.missed_count);
  else
    appendf(s, "CPU:%u [EVENTS DROPPED]\n", rec.cpu);
}

// Length of a valid UTF-8 sequence at p (n bytes left), 0 if invalid.
size_t utf8_len(const unsigned char* p, size_t n) {
  const unsigned char c = p[0];
  size_t len;
  uint32_t min;
  if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  uint32_t cp = c & (0xff >> (len + 1));
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

void json_value(std::string* out, const TraceValue& v) {
  switch (v.kind) {
    case TraceValue::Kind::kSigned: appendf(out, "%" PRId64, v.i); return;
    case TraceValue::Kind::kUnsigned: appendf(out, "%" PRIu64, v.u); return;
    case TraceValue::Kind::kString: append_json_string(out, v.s); return;
    case TraceValue::Kind::kBytes: {
      std::string h;
      for (unsigned char c : v.s) appendf(&h, "%02x", c);
      append_json_string(out, h);
      return;
    }
    case TraceValue::Kind::kFloat:
      // A JSON number that reads back as the same double; NaN and the
      // infinities, which JSON has no number for, as the strings "nan",
      // "-nan", "inf" and "-inf".
      if (std::isnan(v.d) || std::isinf(v.d)) {
        append_json_string(out, tracedat::float_text(v.d, v.single));
      } else {
        *out += tracedat::float_text(v.d, v.single);
      }
      return;
    case TraceValue::Kind::kArray:
      *out += '[';
      for (size_t k = 0; k < v.a.size(); k++) {
        if (k) *out += ',';
        if (v.array_signed) appendf(out, "%" PRId64, static_cast<int64_t>(v.a[k]));
        else appendf(out, "%" PRIu64, v.a[k]);
      }
      *out += ']';
      return;
  }
}

// "name":value,... of the record's non-common fields (no braces).
bool json_fields(std::string* out, const TraceRecord& rec, std::string* err) {
  if (!rec.event) return true;
  bool first = true;
  for (size_t i = rec.event->first_field; i < rec.event->fields.size(); i++) {
    const TraceField& f = rec.event->fields[i];
    TraceValue v;
    if (!TraceDatReader::field_value(rec, f, &v, err)) return false;
    if (!first) *out += ',';
    first = false;
    append_json_string(out, f.name);
    *out += ':';
    if (!f.symbols.empty() && (v.kind == TraceValue::Kind::kSigned || v.kind == TraceValue::Kind::kUnsigned)) {
      // An enum (__print_symbolic in the print fmt): its name when it has one.
      const uint64_t raw = v.kind == TraceValue::Kind::kSigned ? static_cast<uint64_t>(v.i) : v.u;
      const uint64_t z = f.size < 8 ? raw & ((uint64_t{1} << (8 * f.size)) - 1) : raw;
      if (const std::string* name = find_symbol(f, z)) {
        append_json_string(out, *name);
        continue;
      }
    }
    json_value(out, v);
  }
  return true;
}

std::string record_error(const TraceRecord& rec, const std::string& e) {
  return "CPU " + std::to_string(rec.cpu) + ", record at file offset " +
         std::to_string(rec.file_offset) + ": " + e;
}

// render_records' result when *err is set: a record that does not fit its
// format, or a write error.
constexpr int kRenderFailed = -2;

// Several readers' records as one stream, in time order (ts_ns; a tie goes
// to the earlier reader, then to each reader's own order): what `trace-cmd
// report -i a -i b` shows. Each reader's next record is held until it is
// the oldest; a record handed out stays valid until the next call (its
// reader is not read again before then).
class Merge {
 public:
  explicit Merge(const std::vector<TraceDatReader*>& rs)
      : rs_(rs), head_(rs.size()), state_(rs.size(), kEmpty) {
    for (TraceDatReader* r : rs_) r->rewind();
  }
  // > 0 with *rec (from reader *from), 0 at the end of every reader, -1 at
  // a reader's error (failed()).
  int next(TraceRecord* rec, size_t* from) {
    size_t best = rs_.size();
    for (size_t i = 0; i < rs_.size(); i++) {
      if (state_[i] == kEmpty) {
        const int rc = rs_[i]->next(&head_[i]);
        if (rc < 0) {
          failed_ = i;
          return -1;
        }
        state_[i] = rc > 0 ? kHeld : kDone;
      }
      if (state_[i] == kHeld && (best == rs_.size() || head_[i].ts_ns < head_[best].ts_ns)) best = i;
    }
    if (best == rs_.size()) return 0;
    *rec = head_[best];
    *from = best;
    state_[best] = kEmpty;  // read again at the next call, after the caller is done
    return 1;
  }
  TraceDatReader& reader(size_t i) { return *rs_[i]; }
  const std::string& error() const { return rs_[failed_]->error(); }

 private:
  enum State : uint8_t { kEmpty, kHeld, kDone };
  std::vector<TraceDatReader*> rs_;
  std::vector<TraceRecord> head_;
  std::vector<State> state_;
  size_t failed_ = 0;
};

// Renders every record of `m` with render(rec, its reader) (false with
// *err: the record does not fit its format), flushing `w` as its batch
// fills. 0 after the last record, -1 at a reader's error (m.error()), or
// kRenderFailed.
template <class Render>
int render_records(Merge& m, Writer& w, std::string* err, Render render) {
  TraceRecord rec;
  size_t from = 0;
  int rc;
  while ((rc = m.next(&rec, &from)) > 0) {
    if (!render(rec, m.reader(from))) {
      *err = record_error(rec, *err);
      w.flush();
      return kRenderFailed;
    }
    if (!w.maybe_flush()) {
      *err = w.error();
      return kRenderFailed;
    }
  }
  return rc;
}

// The end of an export after render_records' `rc`: everything flushed (a
// write error first), then the readers' verdict. 0, or -1 with *err.
int finish(const Merge& m, Writer& w, int rc, std::string* err) {
  if (rc == kRenderFailed) return -1;
  if (!w.flush()) {
    *err = w.error();
    return -1;
  }
  if (rc < 0) {
    *err = m.error();
    return -1;
  }
  return 0;
}

// ---- Chrome: the rbtrace:* track events of rbtrace/track.h ----

// What a record of the `rbtrace` system maps to in the Chrome export.
struct ChromeTrack {
  char ph = 0;            // 'B' 'E' 'X' 'b' 'e' 'C' 's' 't' 'f'; 0: an instant
  std::string name;       // the event's `name` field
  uint64_t u = 0;         // X: dur_ns; b, e, s, t, f: id
  TraceValue value;       // C: the counter's value (kSigned or a finite kFloat)
};

// The value of the field called `name` of kind `want`; false when the
// format has no such field or the record does not hold it.
bool track_field(const TraceRecord& rec, const char* name, TraceValue::Kind want, TraceValue* v) {
  for (size_t i = rec.event->first_field; i < rec.event->fields.size(); i++) {
    const TraceField& f = rec.event->fields[i];
    if (f.name != name) continue;
    std::string ignored;  // a record that does not fit: an instant, whose
                          // json_fields says why
    return TraceDatReader::field_value(rec, f, v, &ignored) && v->kind == want;
  }
  return false;
}

// Fills *t for a track event (rbtrace:slice_begin ... rbtrace:flow) whose
// fields are as track.h declares them; false for any other record, which
// the export writes as an instant.
bool chrome_track(const TraceRecord& rec, ChromeTrack* t) {
  if (!rec.event || rec.event->system != "rbtrace") return false;
  const std::string& n = rec.event->name;
  TraceValue v;
  if (!track_field(rec, "name", TraceValue::Kind::kString, &v)) return false;
  t->name = std::move(v.s);
  if (n == "slice_begin" || n == "slice_end") {
    t->ph = n == "slice_begin" ? 'B' : 'E';
    return true;
  }
  if (n == "slice" || n == "async_begin" || n == "async_end" || n == "flow") {
    if (!track_field(rec, n == "slice" ? "dur_ns" : "id", TraceValue::Kind::kUnsigned, &v))
      return false;
    t->u = v.u;
    if (n == "slice") t->ph = 'X';
    else if (n == "async_begin") t->ph = 'b';
    else if (n == "async_end") t->ph = 'e';
    else {
      // phase: FlowPhase {out, step, in} as its u8
      if (!track_field(rec, "phase", TraceValue::Kind::kUnsigned, &v) || v.u > 2) return false;
      t->ph = "stf"[v.u];
    }
    return true;
  }
  if (n == "counter") {
    if (!track_field(rec, "value", TraceValue::Kind::kSigned, &t->value)) return false;
    t->ph = 'C';
    return true;
  }
  if (n == "counter_f") {
    // NaN and the infinities have no JSON number: an instant then.
    if (!track_field(rec, "value", TraceValue::Kind::kFloat, &t->value) ||
        !std::isfinite(t->value.d))
      return false;
    t->ph = 'C';
    return true;
  }
  return false;
}

// Appends the Chrome event of track event `t` (no leading separator).
void chrome_track_json(std::string* s, const TraceRecord& rec, const ChromeTrack& t, int32_t pid) {
  uint64_t ts = rec.ts_ns, dur = 0;
  if (t.ph == 'X') {  // the slice ended at the event's time
    dur = std::min(t.u, ts);
    ts -= dur;
  }
  *s += "{\"name\":";
  append_json_string(s, t.name);
  appendf(s,
          ",\"cat\":\"rbtrace\",\"ph\":\"%c\",\"ts\":%" PRIu64 ".%03" PRIu64
          ",\"pid\":%d,\"tid\":%d",
          t.ph, ts / 1000, ts % 1000, pid, rec.pid);
  switch (t.ph) {
    case 'X': appendf(s, ",\"dur\":%" PRIu64 ".%03" PRIu64, dur / 1000, dur % 1000); break;
    case 'b': case 'e': case 's': case 't': appendf(s, ",\"id\":\"0x%" PRIx64 "\"", t.u); break;
    // "bp":"e": the flow ends in the slice enclosing it (not the next one).
    case 'f': appendf(s, ",\"id\":\"0x%" PRIx64 "\",\"bp\":\"e\"", t.u); break;
    default: break;
  }
  if (t.ph == 'C') {  // one series, named as the counter
    *s += ",\"args\":{";
    append_json_string(s, t.name);
    *s += ':';
    json_value(s, t.value);
    *s += "}}";
  } else {
    appendf(s, ",\"args\":{\"cpu\":%u}}", rec.cpu);
  }
}

}  // namespace

void append_json_string(std::string* out, const std::string& s) {
  *out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = p[i];
    switch (c) {
      case '"': *out += "\\\""; continue;
      case '\\': *out += "\\\\"; continue;
      case '\n': *out += "\\n"; continue;
      case '\t': *out += "\\t"; continue;
      case '\r': *out += "\\r"; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      appendf(out, "\\u%04x", c);
    } else if (c < 0x80) {
      *out += static_cast<char>(c);
    } else if (const size_t l = utf8_len(p + i, n - i)) {
      out->append(reinterpret_cast<const char*>(p + i), l);
      i += l - 1;
    } else {
      appendf(out, "\\u%04x", c);  // not UTF-8: the byte as a Latin-1 code point
    }
  }
  *out += '"';
}

int write_report_text(TraceDatReader& r, std::FILE* out, const ReportOptions& opts,
                      std::string* err) {
  return write_report_text(std::vector<TraceDatReader*>{&r}, out, opts, err);
}

int write_report_text(const std::vector<TraceDatReader*>& rs, std::FILE* out,
                      const ReportOptions& opts, std::string* err) {
  Merge m(rs);
  Writer w(out);
  std::string& s = w.buf();
  uint32_t ncpus = 0;
  for (const TraceDatReader* r : rs) ncpus = std::max(ncpus, r->ncpus());
  appendf(&s, "cpus=%u\n", ncpus);
  std::string fields;
  const int rc = render_records(m, w, err, [&](const TraceRecord& rec, TraceDatReader& r) {
    if (rec.missed) lost_line(&s, rec);
    // The comm comes from the file: escaped (tracedat_text.h) before it is
    // padded, NUL bytes included.
    std::string comm;
    tracedat::append_escaped(&comm, r.comm(rec.pid));
    if (comm.size() < 16) s.append(16 - comm.size(), ' ');
    s += comm;
    appendf(&s, "-%-5d [%03u] ", rec.pid, rec.cpu);
    if (opts.ns) {
      appendf(&s, "%5" PRIu64 ".%09" PRIu64 ": ", rec.ts_ns / UINT64_C(1000000000), rec.ts_ns % UINT64_C(1000000000));
    } else {
      // Rounded to the nearest microsecond, as libtraceevent prints it.
      const uint64_t us = rec.ts_ns / 1000 + (rec.ts_ns % 1000 >= 500 ? 1 : 0);
      appendf(&s, "%5" PRIu64 ".%06" PRIu64 ": ", us / 1000000, us % 1000000);
    }
    if (!rec.event) {
      appendf(&s, "[unknown event type %u]\n", rec.type);
      return true;
    }
    std::string name = rec.event->name + ":";
    if (name.size() < 21) name.append(21 - name.size(), ' ');
    s += name;
    s += opts.raw ? "  " : " ";  // trace-cmd -R puts a space before each field
    const bool ok = opts.raw ? TraceDatReader::raw_fields(rec, &fields, err)
                             : TraceDatReader::format_fields(rec, &fields, err);
    if (!ok) return false;
    s += fields;
    s += '\n';
    return true;
  });
  // After the records: the events that never reached any CPU (tracedat.h,
  // ring_stats_text), which trace-cmd report shows only with --stat.
  // (Each file's, one line each: they are different recordings.)
  for (const TraceDatReader* r : rs) {
    if (rc < 0 || r->cpus().empty()) continue;
    if (const uint64_t n = no_slot_dropped_in(r->cpus()[0].stats))
      appendf(&s, "[%" PRIu64 " EVENTS REFUSED: NO FREE CPU SLOT (all CPUs)]\n", n);
  }
  return finish(m, w, rc, err);
}

int write_report_json(TraceDatReader& r, std::FILE* out, std::string* err) {
  return write_report_json(std::vector<TraceDatReader*>{&r}, out, err);
}

int write_report_json(const std::vector<TraceDatReader*>& rs, std::FILE* out, std::string* err) {
  Merge m(rs);
  Writer w(out);
  std::string& s = w.buf();
  const int rc = render_records(m, w, err, [&](const TraceRecord& rec, TraceDatReader& r) {
    appendf(&s, "{\"cpu\":%u,\"ts_ns\":%" PRIu64 ",\"pid\":%d,\"comm\":", rec.cpu, rec.ts_ns, rec.pid);
    append_json_string(&s, r.comm(rec.pid));
    appendf(&s, ",\"type\":%u,\"system\":", rec.type);
    if (rec.event) {
      append_json_string(&s, rec.event->system);
      s += ",\"name\":";
      append_json_string(&s, rec.event->name);
    } else {
      s += "null,\"name\":null";
    }
    if (rec.missed) {
      if (rec.missed_known)
        appendf(&s, ",\"lost_before\":%" PRIu64, rec.missed_count);
      else
        s += ",\"lost_before\":null";
    }
    s += ",\"fields\":{";
    if (!json_fields(&s, rec, err)) return false;
    s += "}}\n";
    return true;
  });
  return finish(m, w, rc, err);
}

int write_chrome_json(TraceDatReader& r, std::FILE* out, int32_t pid, std::string* err) {
  return write_chrome_json(std::vector<TraceDatReader*>{&r}, out, pid, err);
}

int write_chrome_json(const std::vector<TraceDatReader*>& rs, std::FILE* out, int32_t pid,
                      std::string* err) {
  Merge m(rs);
  // The process: the one given, else the first file's own (PROCMAPS) that
  // names one, else 1 and "rbtrace".
  std::string pname;
  for (const TraceDatReader* r : rs) {
    if (r->process_pid() <= 0) continue;
    if (pid <= 0) pid = r->process_pid();
    pname = r->process_name();
    break;
  }
  if (pid <= 0) pid = 1;
  if (pname.empty()) pname = "rbtrace";
  Writer w(out);
  std::string& s = w.buf();
  appendf(&s,
          "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
          "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":",
          pid);
  append_json_string(&s, pname);
  s += "}}";
  // Each thread named once (the first file that names it).
  std::map<int32_t, std::string> names;
  for (const TraceDatReader* r : rs) names.insert(r->cmdlines().begin(), r->cmdlines().end());
  for (const auto& [tid, comm] : names) {
    appendf(&s, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":",
            pid, tid);
    append_json_string(&s, comm);
    s += "}}";
  }
  // Per thread, the slice_begin events not ended yet: a slice_end without
  // one (its begin overwritten, or before the file's first page) is an
  // instant, so every "E" closes a "B".
  std::unordered_map<int32_t, uint64_t> open_slices;
  ChromeTrack track;
  const int rc = render_records(m, w, err, [&](const TraceRecord& rec, TraceDatReader&) {
    const uint64_t us = rec.ts_ns / 1000, frac = rec.ts_ns % 1000;
    if (rec.missed) {
      appendf(&s,
              ",\n{\"name\":\"lost events\",\"cat\":\"rbtrace\",\"ph\":\"i\",\"s\":\"g\","
              "\"ts\":%" PRIu64 ".%03" PRIu64 ",\"pid\":%d,\"tid\":%d,\"args\":{\"cpu\":%u,\"count\":",
              us, frac, pid, rec.pid, rec.cpu);
      if (rec.missed_known)
        appendf(&s, "%" PRIu64 "}}", rec.missed_count);
      else
        s += "null}}";
    }
    if (chrome_track(rec, &track)) {
      bool as_track = true;
      if (track.ph == 'B') {
        open_slices[rec.pid]++;
      } else if (track.ph == 'E') {
        const auto it = open_slices.find(rec.pid);
        if (it != open_slices.end() && it->second != 0) it->second--;
        else as_track = false;
      }
      if (as_track) {
        s += ",\n";
        chrome_track_json(&s, rec, track, pid);
        return true;
      }
    }
    s += ",\n{\"name\":";
    if (rec.event)
      append_json_string(&s, rec.event->name);
    else
      appendf(&s, "\"unknown event type %u\"", rec.type);
    s += ",\"cat\":";
    append_json_string(&s, rec.event ? rec.event->system : std::string("unknown"));
    appendf(&s,
            ",\"ph\":\"i\",\"s\":\"t\",\"ts\":%" PRIu64 ".%03" PRIu64
            ",\"pid\":%d,\"tid\":%d,\"args\":{\"cpu\":%u",
            us, frac, pid, rec.pid, rec.cpu);
    if (rec.event && rec.event->fields.size() > rec.event->first_field) s += ',';
    if (!json_fields(&s, rec, err)) return false;
    s += "}}";
    return true;
  });
  if (rc == kRenderFailed) return -1;
  if (rc < 0) {  // the reader's error: what was written stays unterminated
    w.flush();
    *err = m.error();
    return -1;
  }
  s += "\n]}\n";
  return finish(m, w, rc, err);
}

}  // namespace rbtrace
