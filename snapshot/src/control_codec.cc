// control_codec.cc - the control protocol's message codec: pure functions
// over byte buffers, fuzzed by tests/fuzz/control_fuzz.cc. See
// rbtrace/control.h for the format.
#include <cerrno>
#include <cstring>
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

bool valid_event_name(const std::string& s) {
  const size_t colon = s.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  if (s.find(':', colon + 1) != std::string::npos) return false;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == ':' || ch == '*';
    if (!ok) return false;
  }
  return true;
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
      if (!valid_event_name(r.event)) return fail(-EBADMSG, why, "bad event name");
      r.enable = enable != 0;
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
      default: break;
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
      default: rc = fail(-EPROTO, why, "reply to an unknown request type"); break;
    }
    if (rc != 0) return rc;
  }
  if (c.left != 0) return fail(-EBADMSG, why, "trailing bytes in reply");
  *out = std::move(r);
  return 0;
}

}  // namespace rbtrace::control
