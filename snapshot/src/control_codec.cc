// control_codec.cc - the control protocol's message codec: pure functions
// over byte buffers, fuzzed by tests/fuzz/control_fuzz.cc. See
// rbtrace/control.h for the format.
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "rbtrace/control.h"

namespace rbtrace::control {
namespace {

constexpr uint32_t kMaxMessage = 1024;  // reply message text
constexpr uint32_t kStatCpuSize = 8 + 16 * 8;
constexpr uint32_t kSnapCpuSize = 32;

// ---- little helpers: append / bounded cursor -------------------------------
template <class T>
void put(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof v);
  std::memcpy(out->data() + at, &v, sizeof v);
}

struct Cursor {
  const uint8_t* p;
  size_t left;
  template <class T>
  bool get(T* v) {
    if (left < sizeof *v) return false;
    std::memcpy(v, p, sizeof *v);
    p += sizeof *v;
    left -= sizeof *v;
    return true;
  }
  bool bytes(size_t n, std::string* s) {
    if (left < n) return false;
    s->assign(reinterpret_cast<const char*>(p), n);
    p += n;
    left -= n;
    return true;
  }
};

int fail(int code, std::string* why, const char* msg) {
  if (why) *why = msg;
  return code;
}

void put_header(std::vector<uint8_t>* out, MsgType type, uint32_t length) {
  put<uint32_t>(out, kMagic);
  put<uint16_t>(out, kVersion);
  put<uint16_t>(out, static_cast<uint16_t>(type));
  put<uint32_t>(out, length);
  put<uint32_t>(out, 0);
}

void put_stats(std::vector<uint8_t>* out, const CpuStats& s) {
  for (uint64_t v : {s.entries, s.bytes, s.overrun, s.commit_overrun, s.dropped,
                     s.nested_dropped, s.disabled, s.read})
    put<uint64_t>(out, v);
}

bool get_stats(Cursor* c, CpuStats* s) {
  return c->get(&s->entries) && c->get(&s->bytes) && c->get(&s->overrun) &&
         c->get(&s->commit_overrun) && c->get(&s->dropped) && c->get(&s->nested_dropped) &&
         c->get(&s->disabled) && c->get(&s->read);
}

// One part of a pattern: letters, digits, '_' and '*'; not empty.
bool valid_pattern_part(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '*';
    if (!ok) return false;
  }
  return true;
}

// `s` matches the glob `p` whose only special character is '*' (any run).
bool glob(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (pi < p.size() && p[pi] == s[si]) {
      pi++;
      si++;
    } else if (star != std::string_view::npos) {
      pi = star + 1;  // the last '*' takes one more character
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') pi++;
  return pi == p.size();
}

bool valid_file_prefix(const std::string& s) {
  if (s.empty() || s.size() > RecordLimits::kMaxPrefix || s[0] == '-') return false;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

void put_text(std::vector<uint8_t>* out, const std::string& s) {
  put<uint16_t>(out, static_cast<uint16_t>(s.size()));
  out->insert(out->end(), s.begin(), s.end());
}

bool get_text(Cursor* c, size_t max, std::string* s) {
  uint16_t n = 0;
  return c->get(&n) && n <= max && c->bytes(n, s);
}

void put_record_options(std::vector<uint8_t>* p, const RecordOptions& o) {
  put<uint64_t>(p, o.segment_bytes);
  for (uint32_t v : {o.segment_seconds, o.pool_pages, o.period_us, o.watermark_pages,
                     o.batch_pages, o.file_mode})
    put<uint32_t>(p, v);
  for (uint8_t v : {o.backend, o.publish, static_cast<uint8_t>(o.fsync ? 1 : 0),
                    static_cast<uint8_t>(o.direct_io ? 1 : 0)})
    put<uint8_t>(p, v);
  put_text(p, o.prefix);
}

int get_record_options(Cursor* c, RecordOptions* o, std::string* why) {
  using L = RecordLimits;
  uint8_t fsync = 0, direct = 0;
  if (!c->get(&o->segment_bytes) || !c->get(&o->segment_seconds) || !c->get(&o->pool_pages) ||
      !c->get(&o->period_us) || !c->get(&o->watermark_pages) || !c->get(&o->batch_pages) ||
      !c->get(&o->file_mode) || !c->get(&o->backend) || !c->get(&o->publish) || !c->get(&fsync) ||
      !c->get(&direct))
    return fail(-EBADMSG, why, "short record start request");
  if (o->segment_bytes != 0 &&
      (o->segment_bytes < L::kMinSegmentBytes || o->segment_bytes > L::kMaxSegmentBytes))
    return fail(-EBADMSG, why, "bad segment size");
  if (o->segment_seconds > L::kMaxSegmentSeconds) return fail(-EBADMSG, why, "bad segment seconds");
  if (o->pool_pages > L::kMaxPoolPages) return fail(-EBADMSG, why, "bad pool size");
  if (o->period_us < L::kMinPeriodUs || o->period_us > L::kMaxPeriodUs)
    return fail(-EBADMSG, why, "bad period");
  if (o->watermark_pages > L::kMaxWatermarkPages) return fail(-EBADMSG, why, "bad watermark");
  if (o->batch_pages == 0 || o->batch_pages > L::kMaxBatchPages)
    return fail(-EBADMSG, why, "bad batch size");
  if (o->file_mode != 0600 && o->file_mode != 0640 && o->file_mode != 0644)
    return fail(-EBADMSG, why, "bad file mode (0600, 0640 or 0644)");
  if (o->backend > 2 || o->publish > 2 || fsync > 1 || direct > 1)
    return fail(-EBADMSG, why, "bad record flags");
  o->fsync = fsync != 0;
  o->direct_io = direct != 0;
  if (!get_text(c, L::kMaxPrefix, &o->prefix)) return fail(-EBADMSG, why, "bad file prefix length");
  if (!valid_file_prefix(o->prefix)) return fail(-EBADMSG, why, "bad file prefix");
  return 0;
}

void put_event_list(std::vector<uint8_t>* p, const std::vector<EventState>& events,
                    bool truncated) {
  put<uint32_t>(p, static_cast<uint32_t>(events.size()));
  put<uint8_t>(p, truncated ? 1 : 0);
  for (int i = 0; i < 3; i++) put<uint8_t>(p, 0);
  for (const EventState& e : events) {
    put<uint8_t>(p, e.enabled ? 1 : 0);
    put<uint8_t>(p, 0);
    put_text(p, e.name);
  }
}

int get_event_list(Cursor* c, std::vector<EventState>* events, bool* truncated,
                   std::string* why) {
  uint32_t n = 0;
  uint8_t trunc = 0, pad[3] = {};
  if (!c->get(&n) || !c->get(&trunc) || !c->get(&pad[0]) || !c->get(&pad[1]) || !c->get(&pad[2]))
    return fail(-EBADMSG, why, "short event list");
  if (trunc > 1 || pad[0] || pad[1] || pad[2]) return fail(-EBADMSG, why, "bad event list flags");
  if (n > c->left / 4) return fail(-EBADMSG, why, "bad event count");  // 4: the least an event takes
  *truncated = trunc != 0;
  events->resize(n);
  for (EventState& e : *events) {
    uint8_t on = 0, epad = 0;
    if (!c->get(&on) || !c->get(&epad) || on > 1 || epad != 0)
      return fail(-EBADMSG, why, "bad event state");
    if (!get_text(c, kMaxEventName, &e.name) || e.name.empty())
      return fail(-EBADMSG, why, "bad event name");
    e.enabled = on != 0;
  }
  return 0;
}

void put_record_reply(std::vector<uint8_t>* p, const RecordReply& r) {
  put<uint8_t>(p, r.active ? 1 : 0);
  put<uint8_t>(p, r.recording_on ? 1 : 0);
  put<uint16_t>(p, 0);
  put<uint32_t>(p, static_cast<uint32_t>(r.files.size()));
  for (uint64_t v : {r.pages_published, r.segments_published, r.segments_failed,
                     r.events_published, r.events_lost, r.pages_lost})
    put<uint64_t>(p, v);
  put_text(p, r.note.substr(0, kMaxMessage));
  for (const std::string& f : r.files) put_text(p, f);
}

int get_record_reply(Cursor* c, RecordReply* r, std::string* why) {
  uint8_t active = 0, on = 0;
  uint16_t pad = 0;
  uint32_t nfiles = 0;
  if (!c->get(&active) || !c->get(&on) || !c->get(&pad) || !c->get(&nfiles) ||
      !c->get(&r->pages_published) || !c->get(&r->segments_published) ||
      !c->get(&r->segments_failed) || !c->get(&r->events_published) ||
      !c->get(&r->events_lost) || !c->get(&r->pages_lost))
    return fail(-EBADMSG, why, "short record reply");
  if (active > 1 || on > 1 || pad != 0) return fail(-EBADMSG, why, "bad record reply flags");
  if (nfiles > kMaxRecordFiles) return fail(-EBADMSG, why, "bad record file count");
  r->active = active != 0;
  r->recording_on = on != 0;
  if (!get_text(c, kMaxMessage, &r->note)) return fail(-EBADMSG, why, "bad record note");
  r->files.resize(nfiles);
  for (std::string& f : r->files) {
    // A name in the output directory: never a path, never "." or "..".
    if (!get_text(c, kMaxFileName, &f) || f.empty() || f == "." || f == ".." ||
        f.find('/') != std::string::npos || f.find('\0') != std::string::npos)
      return fail(-EBADMSG, why, "bad record file name");
  }
  return 0;
}

bool is_record_request(MsgType t) {
  return t == MsgType::kRecordStart || t == MsgType::kRecordStop || t == MsgType::kRecordFlush ||
         t == MsgType::kRecordStatus || t == MsgType::kRecordSwitch;
}

// A whole message: the header, then `payload`.
std::vector<uint8_t> message(MsgType type, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  put_header(&out, type, static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// Checks one complete message's header (of type `want`, unless -1) and
// length; *c then covers exactly its payload.
int open_message(const void* buf, size_t len, uint32_t max_payload, int want, uint16_t* type,
                 Cursor* c, std::string* why) {
  uint32_t n = 0;
  if (int rc = parse_header(buf, len, max_payload, type, &n, why); rc != 0) return rc;
  if (want >= 0 && *type != want) return fail(-EPROTO, why, "not a reply");
  if (len - kHeaderSize < n) return fail(-EBADMSG, why, "truncated payload");
  if (len - kHeaderSize > n) return fail(-EBADMSG, why, "trailing bytes");
  *c = Cursor{static_cast<const uint8_t*>(buf) + kHeaderSize, n};
  return 0;
}

void put_stat_reply(std::vector<uint8_t>* p, const StatReply& st) {
  put<uint32_t>(p, st.page_size);
  put<uint32_t>(p, st.pages_per_cpu);
  put<uint32_t>(p, st.mode);
  put<uint32_t>(p, static_cast<uint32_t>(st.cpus.size()));
  put<uint64_t>(p, st.snapshots);
  put<uint64_t>(p, st.no_slot_dropped);
  for (const StatCpu& c : st.cpus) {
    put<int32_t>(p, c.owner);
    put<uint32_t>(p, 0);
    put_stats(p, c.live);
    put_stats(p, c.total);
  }
}

int get_stat_reply(Cursor* c, StatReply* st, std::string* why) {
  uint32_t ncpus = 0;
  if (!c->get(&st->page_size) || !c->get(&st->pages_per_cpu) || !c->get(&st->mode) ||
      !c->get(&ncpus) || !c->get(&st->snapshots) || !c->get(&st->no_slot_dropped))
    return fail(-EBADMSG, why, "short stat reply");
  if (ncpus > kMaxCpus || c->left != static_cast<size_t>(ncpus) * kStatCpuSize)
    return fail(-EBADMSG, why, "bad stat CPU count");
  st->cpus.resize(ncpus);
  for (StatCpu& sc : st->cpus) {
    uint32_t pad = 0;
    if (!c->get(&sc.owner) || !c->get(&pad) || !get_stats(c, &sc.live) || !get_stats(c, &sc.total))
      return fail(-EBADMSG, why, "short stat CPU");
  }
  return 0;
}

void put_snapshot_reply(std::vector<uint8_t>* p, const SnapshotReply& sr) {
  put<uint64_t>(p, sr.total_ns);
  put<uint32_t>(p, static_cast<uint32_t>(sr.cpus.size()));
  put<uint32_t>(p, 0);
  for (const SnapshotReplyCpu& c : sr.cpus) {
    put<uint32_t>(p, c.cpu);
    put<int32_t>(p, c.swap_result);
    put<uint32_t>(p, c.pages);
    put<int32_t>(p, c.owner);
    put<uint64_t>(p, c.bytes);
    put<uint64_t>(p, c.swap_ns);
  }
}

int get_snapshot_reply(Cursor* c, SnapshotReply* sr, std::string* why) {
  uint32_t ncpus = 0, pad = 0;
  if (!c->get(&sr->total_ns) || !c->get(&ncpus) || !c->get(&pad))
    return fail(-EBADMSG, why, "short snapshot reply");
  if (ncpus > kMaxCpus || c->left != static_cast<size_t>(ncpus) * kSnapCpuSize)
    return fail(-EBADMSG, why, "bad snapshot CPU count");
  sr->cpus.resize(ncpus);
  for (SnapshotReplyCpu& sc : sr->cpus) {
    if (!c->get(&sc.cpu) || !c->get(&sc.swap_result) || !c->get(&sc.pages) || !c->get(&sc.owner) ||
        !c->get(&sc.bytes) || !c->get(&sc.swap_ns))
      return fail(-EBADMSG, why, "short snapshot CPU");
  }
  return 0;
}


}  // namespace

bool valid_event_pattern(const std::string& s) {
  if (s == "*") return true;
  const size_t colon = s.find(':');
  if (colon == std::string::npos) return false;
  const std::string_view v(s);
  return valid_pattern_part(v.substr(0, colon)) && valid_pattern_part(v.substr(colon + 1));
}

bool event_matches(const std::string& pattern, const char* system, const char* name) {
  if (pattern == "*") return true;
  const size_t colon = pattern.find(':');
  if (colon == std::string::npos || !system || !name) return false;
  const std::string_view v(pattern);
  return glob(v.substr(0, colon), system) && glob(v.substr(colon + 1), name);
}

int parse_header(const void* buf, size_t len, uint32_t max_payload, uint16_t* type,
                 uint32_t* length, std::string* why) {
  if (len < kHeaderSize) return fail(-EBADMSG, why, "truncated header");
  Cursor c{static_cast<const uint8_t*>(buf), len};
  uint32_t magic = 0, n = 0, flags = 0;
  uint16_t version = 0, t = 0;
  c.get(&magic);
  c.get(&version);
  c.get(&t);
  c.get(&n);
  c.get(&flags);
  if (magic != kMagic) return fail(-EPROTO, why, "bad magic");
  if (version != kVersion) return fail(-EPROTONOSUPPORT, why, "unsupported protocol version");
  if (flags != 0) return fail(-EBADMSG, why, "nonzero flags");
  if (n > max_payload) return fail(-EMSGSIZE, why, "payload over the limit");
  *type = t;
  *length = n;
  return 0;
}

int parse_request(const void* buf, size_t len, Request* out, std::string* why) {
  uint16_t type = 0;
  Cursor c{nullptr, 0};
  if (int rc = open_message(buf, len, kMaxRequestPayload, -1, &type, &c, why); rc != 0) return rc;
  Request r;
  switch (static_cast<MsgType>(type)) {
    case MsgType::kStat:
      r.type = MsgType::kStat;
      break;
    case MsgType::kSnapshot: {
      r.type = MsgType::kSnapshot;
      if (!c.get(&r.cpu) || !c.get(&r.timeout_ms)) return fail(-EBADMSG, why, "short snapshot request");
      if (r.cpu < -1 || r.cpu >= static_cast<int32_t>(kMaxCpus))
        return fail(-EBADMSG, why, "bad CPU number");
      if (r.timeout_ms == 0 || r.timeout_ms > 60000) return fail(-EBADMSG, why, "bad timeout");
      break;
    }
    case MsgType::kEvents: {
      r.type = MsgType::kEvents;
      uint8_t enable = 0, pad = 0;
      uint16_t nlen = 0;
      if (!c.get(&enable) || !c.get(&pad) || !c.get(&nlen)) return fail(-EBADMSG, why, "short events request");
      if (enable > 1 || pad != 0) return fail(-EBADMSG, why, "bad events flags");
      if (nlen == 0 || nlen > kMaxEventName) return fail(-EBADMSG, why, "bad event name length");
      if (!c.bytes(nlen, &r.event)) return fail(-EBADMSG, why, "truncated event name");
      if (!valid_event_pattern(r.event)) return fail(-EBADMSG, why, "bad event name");
      r.enable = enable != 0;
      break;
    }
    case MsgType::kEventList: {
      r.type = MsgType::kEventList;
      if (!get_text(&c, kMaxEventName, &r.event)) return fail(-EBADMSG, why, "bad pattern length");
      if (!r.event.empty() && !valid_event_pattern(r.event))
        return fail(-EBADMSG, why, "bad event pattern");
      break;
    }
    case MsgType::kRecordStart:
      r.type = MsgType::kRecordStart;
      if (int rc = get_record_options(&c, &r.record, why); rc != 0) return rc;
      break;
    case MsgType::kRecordStop:
    case MsgType::kRecordFlush:
    case MsgType::kRecordStatus:
      r.type = static_cast<MsgType>(type);
      break;
    case MsgType::kRecordSwitch: {
      r.type = MsgType::kRecordSwitch;
      uint8_t on = 0, pad[3] = {};
      if (!c.get(&on) || !c.get(&pad[0]) || !c.get(&pad[1]) || !c.get(&pad[2]))
        return fail(-EBADMSG, why, "short record switch request");
      if (on > 1 || pad[0] || pad[1] || pad[2]) return fail(-EBADMSG, why, "bad record switch");
      r.on = on != 0;
      break;
    }
    default:
      return fail(-EPROTO, why, "unknown request type");
  }
  if (c.left != 0) return fail(-EBADMSG, why, "trailing bytes in payload");
  *out = std::move(r);
  return 0;
}

std::vector<uint8_t> encode_request(const Request& r) {
  std::vector<uint8_t> p;
  switch (r.type) {
    case MsgType::kSnapshot:
      put<int32_t>(&p, r.cpu);
      put<uint32_t>(&p, r.timeout_ms);
      break;
    case MsgType::kEvents:
      put<uint8_t>(&p, r.enable ? 1 : 0);
      put<uint8_t>(&p, 0);
      put<uint16_t>(&p, static_cast<uint16_t>(r.event.size()));
      p.insert(p.end(), r.event.begin(), r.event.end());
      break;
    case MsgType::kEventList:
      put_text(&p, r.event);
      break;
    case MsgType::kRecordStart:
      put_record_options(&p, r.record);
      break;
    case MsgType::kRecordSwitch:
      put<uint8_t>(&p, r.on ? 1 : 0);
      for (int i = 0; i < 3; i++) put<uint8_t>(&p, 0);
      break;
    default:
      break;
  }
  return message(r.type, p);
}

std::vector<uint8_t> encode_reply(const Reply& r) {
  std::vector<uint8_t> p;
  put<int32_t>(&p, r.status);
  const std::string msg = r.message.substr(0, kMaxMessage);
  put<uint16_t>(&p, static_cast<uint16_t>(msg.size()));
  p.insert(p.end(), msg.begin(), msg.end());
  if (r.status == 0) {
    switch (r.for_type) {
      case MsgType::kStat: put_stat_reply(&p, r.stat); break;
      case MsgType::kSnapshot: put_snapshot_reply(&p, r.snapshot); break;
      case MsgType::kEvents: put<uint32_t>(&p, r.events_changed); break;
      case MsgType::kEventList: put_event_list(&p, r.events, r.events_truncated); break;
      default:
        if (is_record_request(r.for_type)) put_record_reply(&p, r.record);
        break;
    }
  }
  return message(MsgType::kReply, p);
}

int parse_reply(const void* buf, size_t len, MsgType for_type, Reply* out, std::string* why) {
  uint16_t type = 0;
  Cursor c{nullptr, 0};
  const int want = static_cast<int>(MsgType::kReply);
  int rc = open_message(buf, len, kMaxReplyPayload, want, &type, &c, why);
  if (rc != 0) return rc;
  Reply r;
  r.for_type = for_type;
  uint16_t mlen = 0;
  if (!c.get(&r.status) || !c.get(&mlen)) return fail(-EBADMSG, why, "short reply");
  if (r.status > 0 || mlen > kMaxMessage) return fail(-EBADMSG, why, "bad reply status");
  if (!c.bytes(mlen, &r.message)) return fail(-EBADMSG, why, "truncated reply message");
  if (r.status == 0) {
    switch (for_type) {
      case MsgType::kStat: rc = get_stat_reply(&c, &r.stat, why); break;
      case MsgType::kSnapshot: rc = get_snapshot_reply(&c, &r.snapshot, why); break;
      case MsgType::kEvents:
        if (!c.get(&r.events_changed)) rc = fail(-EBADMSG, why, "short events reply");
        break;
      case MsgType::kEventList:
        rc = get_event_list(&c, &r.events, &r.events_truncated, why);
        break;
      default:
        rc = is_record_request(for_type) ? get_record_reply(&c, &r.record, why)
                                         : fail(-EPROTO, why, "reply to an unknown request type");
        break;
    }
    if (rc != 0) return rc;
  }
  if (c.left != 0) return fail(-EBADMSG, why, "trailing bytes in reply");
  *out = std::move(r);
  return 0;
}

}  // namespace rbtrace::control
