// stress_common.h - shared pieces of the stress tests: payloads that check
// themselves, write-attempt tallies, the per-CPU verifier of what a reader
// gets back, and small helpers (duration from the environment, RNG).
//
// Payloads. Every event carries (cpu, stream, per-stream sequence number,
// length, checksum):
//   raw events (write / reserve+commit), 8..600 bytes:
//     u16 tag     kRawMarker | (level + 1) << 2 | pad   (level: the writer's
//                 nesting level when known, else -1; pad: 4-byte rounding, so
//                 the exact length is ev.length - pad)
//     u8  cpu, u8 stream, u32 seq
//     len >= 12: u32 checksum at [8,12) over [0,8) and [12,len); the rest is
//                 a fill derived from seq
//     len <  12: [8,len) is the fill, compared byte by byte
//   typed events (stress_rec::emit): the kernel common header, then seq, cpu,
//     stream, csum and a __data_loc string whose bytes derive from seq; csum
//     covers all of them.
// A stream is one sequential writer on a CPU: 0 the owner thread, 1.. its
// signal handlers (which never nest into themselves). Within a stream the
// sequence numbers appear strictly increasing in buffer order.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "rbtrace/rbtrace.h"

RBTRACE_EVENT(stress, rec,
              ((uint32_t, seq))((uint8_t, cpu))((uint8_t, stream))((uint32_t, csum))(
                  (rbtrace::str, blob)))

#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif

namespace stress {

using rbtrace::PageEvent;

// Seconds per test case: RBTRACE_STRESS_SECONDS, else `dflt`.
inline double case_seconds(double dflt = 1.5) {
  const char* s = std::getenv("RBTRACE_STRESS_SECONDS");
  if (s && *s) {
    double v = std::strtod(s, nullptr);
    if (v > 0 && v < 3600) return v;
  }
  return dflt;
}

// Installs `handler` for each of `sigs` with no signal blocked while it runs
// (SA_RESTART): handlers of different signals interrupt each other, so
// their writes nest. False if sigaction failed.
inline bool install_nesting_handler(void (*handler)(int), std::initializer_list<int> sigs) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : sigs)
    if (sigaction(sig, &sa, nullptr) != 0) return false;
  return true;
}

// Per-thread POSIX timers (SIGEV_THREAD_ID): each sends its signal to the
// thread that started it, every interval (< 1 s), so that thread's handler
// runs. stop() deletes them and blocks their signals: no handler runs on
// the thread after it.
class ThreadTimers {
 public:
  struct Spec {
    int sig;
    long interval_ns;
  };
  ~ThreadTimers() { stop(); }
  // False, with error() set, if a timer could not be made (those made run).
  bool start(std::initializer_list<Spec> specs) {
    for (const Spec& t : specs) {
      if (n_ == kMax) return fail("too many timers");
      sigevent sev{};
      sev.sigev_notify = SIGEV_THREAD_ID;
      sev.sigev_signo = t.sig;
#ifdef sigev_notify_thread_id
      sev.sigev_notify_thread_id = gettid();
#else
      sev._sigev_un._tid = gettid();
#endif
      if (timer_create(CLOCK_MONOTONIC, &sev, &ids_[n_]) != 0) return fail("timer_create");
      sigs_[n_++] = t.sig;
      itimerspec its{};
      its.it_interval.tv_nsec = t.interval_ns;
      its.it_value.tv_nsec = t.interval_ns;
      if (timer_settime(ids_[n_ - 1], 0, &its, nullptr) != 0) return fail("timer_settime");
    }
    return true;
  }
  void stop() {
    if (n_ == 0) return;
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < n_; i++) {
      timer_delete(ids_[i]);
      sigaddset(&set, sigs_[i]);
    }
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    n_ = 0;
  }
  const std::string& error() const { return error_; }

 private:
  bool fail(const char* what) {
    error_ = std::string(what) + ": " + std::strerror(errno);
    return false;
  }
  static constexpr int kMax = 4;
  timer_t ids_[kMax] = {};
  int sigs_[kMax] = {};
  int n_ = 0;
  std::string error_;
};

// xorshift64*: cheap, async-signal-safe.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL) {
    if (s == 0) s = 1;
  }
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ULL;
  }
  // Uniform in [0, n).
  uint32_t below(uint32_t n) {
    return static_cast<uint32_t>(((next() >> 32) * static_cast<uint64_t>(n)) >> 32);
  }
};

// ---------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------
inline constexpr uint16_t kRawMarker = 0x100;  // < 1000: never an event type id
inline constexpr uint32_t kMinLen = 8;
inline constexpr uint32_t kMaxLen = 600;
inline constexpr uint32_t kMaxStreams = 4;
using TypedRec = rbtrace_events::stress_rec;
inline constexpr uint32_t kTypedFixed = sizeof(TypedRec::record);  // 24

inline uint32_t mix(uint32_t h, uint32_t w) {
  h ^= w;
  h *= 0x01000193u;
  h ^= h >> 15;
  return h;
}
// Word-wise hash of [p, p+n), the last partial word zero-padded.
inline uint32_t hash_bytes(uint32_t h, const unsigned char* p, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t w;
    std::memcpy(&w, p + i, 4);
    h = mix(h, w);
  }
  if (i < n) {
    uint32_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h = mix(h, w);
  }
  return mix(h, n);
}

// Fill bytes [from, len) derived from seq.
inline void make_fill(unsigned char* p, uint32_t from, uint32_t len, uint32_t seq) {
  uint32_t x = seq * 0x9E3779B1u + 0x7F4A7C15u;
  for (uint32_t i = from; i < len; i += 4) {
    x = x * 1664525u + 1013904223u;
    const uint32_t n = len - i < 4 ? len - i : 4;
    std::memcpy(p + i, &x, n);
  }
}

struct RawHead {
  uint16_t tag;
  uint8_t cpu;
  uint8_t stream;
  uint32_t seq;
};
static_assert(sizeof(RawHead) == 8);

inline uint32_t pad_of(uint32_t len) { return (4 - (len & 3u)) & 3u; }

// Builds a raw payload of `len` bytes (8..600) at p. level: -1 unknown.
inline void make_raw(unsigned char* p, uint32_t len, uint32_t cpu, uint32_t stream,
                     uint32_t seq, int level) {
  RawHead h;
  h.tag = static_cast<uint16_t>(kRawMarker | ((level + 1) << 2) | pad_of(len));
  h.cpu = static_cast<uint8_t>(cpu);
  h.stream = static_cast<uint8_t>(stream);
  h.seq = seq;
  std::memcpy(p, &h, sizeof h);
  if (len < 12) {
    make_fill(p, 8, len, seq);
    return;
  }
  make_fill(p, 12, len, seq);
  uint32_t c = hash_bytes(0x811C9DC5u, p, 8);
  c = hash_bytes(c, p + 12, len - 12);
  std::memcpy(p + 8, &c, 4);
}

// The typed event's string: n bytes derived from seq.
inline void make_blob(char* out, uint32_t n, uint32_t seq) {
  uint32_t x = seq * 7u;
  for (uint32_t i = 0; i < n; i++) {
    out[i] = static_cast<char>('a' + x % 26u);
    x += 7u;
  }
}
inline uint32_t typed_csum(uint32_t seq, uint32_t cpu, uint32_t stream, const char* blob,
                           uint32_t n) {
  uint32_t c = mix(mix(mix(0x12345678u, seq), cpu), stream);
  return hash_bytes(c, reinterpret_cast<const unsigned char*>(blob), n);
}
// Emits a typed event whose record is `len` bytes (>= 25) long.
inline int emit_typed(rbtrace::RingBuffer& rb, char* scratch, uint32_t len, uint32_t cpu,
                      uint32_t stream, uint32_t seq) {
  const uint32_t n = len > kTypedFixed + 1 ? len - kTypedFixed - 1 : 0;
  make_blob(scratch, n, seq);
  return TypedRec::emit(rb, seq, static_cast<uint8_t>(cpu), static_cast<uint8_t>(stream),
                        typed_csum(seq, cpu, stream, scratch, n), std::string_view(scratch, n));
}

struct Decoded {
  uint32_t cpu = 0;
  uint32_t stream = 0;
  uint32_t seq = 0;
  int level = -1;  // -1 unknown
  int32_t pid = 0;  // typed events only
  bool typed = false;
};

// Decodes and checks one event payload (`evlen` = PageEvent::length). Returns
// false with a reason on a torn or foreign payload.
inline bool decode(const unsigned char* p, uint32_t evlen, Decoded* d, std::string* why) {
  auto bad = [&](const char* what) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s (event length %u)", what, evlen);
    *why = buf;
    return false;
  };
  if (evlen < 8 || (evlen & 3u) != 0) return bad("event length not a multiple of 4 >= 8");
  uint16_t tag;
  std::memcpy(&tag, p, 2);
  if (tag == TypedRec::id()) {
    TypedRec::record r;
    if (evlen < kTypedFixed + 4) return bad("typed record too short");
    std::memcpy(&r, p, kTypedFixed);
    const uint32_t off = r.blob & 0xffffu, n1 = r.blob >> 16;
    if (off != kTypedFixed || n1 == 0 || kTypedFixed + n1 > evlen ||
        ((kTypedFixed + n1 + 3u) & ~3u) != evlen)
      return bad("typed record: bad __data_loc");
    const char* blob = reinterpret_cast<const char*>(p + off);
    if (blob[n1 - 1] != 0) return bad("typed record: string not terminated");
    char expect[kMaxLen];
    make_blob(expect, n1 - 1, r.seq);
    if (std::memcmp(expect, blob, n1 - 1) != 0) return bad("typed record: string corrupt");
    if (typed_csum(r.seq, r.cpu, r.stream, blob, n1 - 1) != r.csum)
      return bad("typed record: checksum mismatch");
    const uint8_t lvl = r.common.common_preempt_count;
    if (r.common.common_flags != (lvl ? rbtrace::kFlagSignal : 0))
      return bad("typed record: common_flags disagree with the nesting level");
    d->cpu = r.cpu;
    d->stream = r.stream;
    d->seq = r.seq;
    d->level = lvl;
    d->pid = r.common.common_pid;
    d->typed = true;
    return true;
  }
  if ((tag & 0xff00u) != kRawMarker) return bad("unknown payload tag");
  const uint32_t pad = tag & 3u;
  const int level = static_cast<int>((tag >> 2) & 0x3fu) - 1;
  const uint32_t len = evlen - pad;
  if (len < kMinLen || len > kMaxLen) return bad("raw payload length out of range");
  RawHead h;
  std::memcpy(&h, p, sizeof h);
  if (len < 12) {
    unsigned char expect[12];
    make_fill(expect, 8, len, h.seq);
    if (std::memcmp(expect + 8, p + 8, len - 8) != 0) return bad("raw payload: fill corrupt");
  } else {
    uint32_t c = hash_bytes(0x811C9DC5u, p, 8);
    c = hash_bytes(c, p + 12, len - 12);
    uint32_t stored;
    std::memcpy(&stored, p + 8, 4);
    if (c != stored) return bad("raw payload: checksum mismatch");
  }
  d->cpu = h.cpu;
  d->stream = h.stream;
  d->seq = h.seq;
  d->level = level;
  d->pid = 0;
  d->typed = false;
  return true;
}

// ---------------------------------------------------------------------------
// Sequence ranges: [begin, end)
// ---------------------------------------------------------------------------
struct Range {
  uint64_t begin, end;
  bool operator==(const Range&) const = default;
};

// Appends ranges, merging adjacent ones. With grow == false it never
// allocates (for signal handlers): it sets `overflow` instead.
class RangeLog {
 public:
  explicit RangeLog(size_t reserve = 0, bool grow = true) : grow_(grow) { r_.reserve(reserve); }
  void add(uint64_t begin, uint64_t end) {
    if (begin >= end) return;
    if (!r_.empty() && r_.back().end == begin) {
      r_.back().end = end;
      return;
    }
    if (!grow_ && r_.size() == r_.capacity()) {
      overflow_ = true;
      return;
    }
    r_.push_back({begin, end});
  }
  void add(uint64_t seq) { add(seq, seq + 1); }
  const std::vector<Range>& ranges() const { return r_; }
  uint64_t total() const {
    uint64_t t = 0;
    for (const Range& x : r_) t += x.end - x.begin;
    return t;
  }
  bool overflow() const { return overflow_; }
  // True if every range of `inner` lies inside a range of this.
  bool covers(const RangeLog& inner) const {
    size_t j = 0;
    for (const Range& x : inner.r_) {
      while (j < r_.size() && r_[j].end <= x.begin) j++;
      if (j == r_.size() || r_[j].begin > x.begin || r_[j].end < x.end) return false;
    }
    return true;
  }

 private:
  std::vector<Range> r_;
  bool grow_;
  bool overflow_ = false;
};

inline std::string ranges_str(const RangeLog& l, size_t max = 8) {
  std::string s;
  size_t i = 0;
  for (const Range& x : l.ranges()) {
    if (i++ == max) {
      s += " ...";
      break;
    }
    s += " [" + std::to_string(x.begin) + "," + std::to_string(x.end) + ")";
  }
  return s.empty() ? " (none)" : s;
}

// ---------------------------------------------------------------------------
// Write attempts by return code
// ---------------------------------------------------------------------------
struct Tally {
  uint64_t attempts = 0;
  uint64_t ok = 0;
  uint64_t enospc = 0;    // dropped / commit_overrun / nested_dropped (page crossing)
  uint64_t eloop = 0;     // nested_dropped (too deep)
  uint64_t eperm = 0;     // disabled
  uint64_t eagain = 0;    // disabled (swapped away)
  uint64_t other = 0;     // anything else: a test failure
  uint64_t discards = 0;  // successful reservations given back (not an entry)
  int last_other = 0;

  void add(int rc) {
    attempts++;
    switch (rc) {
      case 0: ok++; break;
      case -ENOSPC: enospc++; break;
      case -ELOOP: eloop++; break;
      case -EPERM: eperm++; break;
      case -EAGAIN: eagain++; break;
      default:
        other++;
        last_other = rc;
        break;
    }
  }
  // Does this refusal consume a sequence number (i.e. is it a loss the
  // reader is told about)? Disabled attempts are not losses.
  static bool is_loss(int rc) { return rc == -ENOSPC || rc == -ELOOP; }
  void merge(const Tally& o) {
    attempts += o.attempts;
    ok += o.ok;
    enospc += o.enospc;
    eloop += o.eloop;
    eperm += o.eperm;
    eagain += o.eagain;
    other += o.other;
    discards += o.discards;
    if (o.other) last_other = o.last_other;
  }
};

// ---------------------------------------------------------------------------
// Per-CPU verifier of what the reader gets back
// ---------------------------------------------------------------------------
class CpuVerifier {
 public:
  // locate_losses: every gap in stream 0's sequence must sit exactly where a
  // loss report (page flags / consume's `lost`) says it does, with the
  // reported count (overwrite mode, one stream, no refusals).
  CpuVerifier(uint32_t cpu, uint32_t nstreams, bool locate_losses)
      : cpu_(cpu), nstreams_(nstreams), locate_(locate_losses) {
    for (auto& l : last_) l = -1;
  }
  void set_pid(int32_t pid) { pid_ = pid; }
  void set_ts_bounds(uint64_t lo) { ts_lo_ = lo; }

  void fail(const std::string& msg) {
    errors_++;
    if (messages_.size() < 8) messages_.push_back("cpu " + std::to_string(cpu_) + ": " + msg);
  }

  // A loss report that precedes the next event (a page's commit flags, or
  // consume's `lost`).
  // A new chunk (page or consume batch) begins.
  void begin_chunk() { chunk_events_ = 0; }

  void loss(bool flagged, bool stored, uint64_t count) {
    if (!flagged) {
      if (stored) fail("kMissedStored without kMissedEvents");
      return;
    }
    flags_++;
    if (stored) {
      if (count == 0) fail("kMissedEvents with a stored count of 0");
      stored_lost_ += count;
      pending_ += count;
    } else {
      unknown_flags_++;
      pending_unknown_ = true;
    }
  }

  // Decoded page-level chunk: commit word, returned length, page.
  void page(const rbtrace::DataPage* pg, int rc, uint32_t capacity) {
    const uint64_t commit = pg->commit;
    const uint32_t len = static_cast<uint32_t>(commit & rbtrace::kCommitMask);
    if (rc <= 0 || static_cast<uint32_t>(rc) != len || len > capacity) {
      fail("read_page returned " + std::to_string(rc) + " but commit length is " +
           std::to_string(len));
      return;
    }
    if (commit & ~(rbtrace::kCommitMask | rbtrace::kMissedEvents | rbtrace::kMissedStored))
      fail("stray bits in the page commit word");
    const bool stored = commit & rbtrace::kMissedStored;
    uint64_t count = 0;
    if (stored) {
      if (len + 8 > capacity) fail("kMissedStored but no room for the count");
      else count = rbtrace::load_u64(pg->data + len);
    }
    loss(commit & rbtrace::kMissedEvents, stored, count);
    begin_chunk();
    pages_++;
    rbtrace::PageWalker w(pg->data, len, pg->time_stamp);
    PageEvent e;
    while (w.next(&e)) event(e);
    if (w.error()) fail("page walker: corrupt page at offset " + std::to_string(w.offset()));
  }

  void event(const PageEvent& e) {
    Decoded d;
    std::string why;
    if (!decode(e.data, e.length, &d, &why)) {
      fail("torn event #" + std::to_string(decoded_) + ": " + why);
      decoded_++;
      return;
    }
    decoded_++;
    if (d.typed) typed_++;
    if (d.cpu != cpu_) fail("event of cpu " + std::to_string(d.cpu) + " read on this cpu");
    if (d.stream >= nstreams_) {
      fail("bad stream " + std::to_string(d.stream));
      return;
    }
    if (d.typed && pid_ != 0 && d.pid != pid_)
      fail("common_pid " + std::to_string(d.pid) + " != owner tid " + std::to_string(pid_));
    if (d.level >= 0) {
      // The owner thread is always the outermost writer; a handler is at
      // level 0 too when it interrupted no write.
      if (d.stream == 0 && d.level != 0)
        fail("the owner thread wrote at nesting level " + std::to_string(d.level));
      if (d.level < 16) levels_[d.level]++;
    }
    per_stream_[d.stream]++;
    char what[96];
    std::snprintf(what, sizeof what, "stream %u seq %u level %d at offset %u", d.stream, d.seq,
                  d.level, e.offset);
    if (e.ts < last_ts_)
      fail("time went backwards: " + std::to_string(e.ts) + " (" + what + ") after " +
           std::to_string(last_ts_) + " (" + last_what_ + ")" +
           (chunk_events_ == 0 ? ", first event of a chunk" : ""));
    last_ts_ = e.ts;
    last_what_ = what;
    chunk_events_++;
    if (e.ts < ts_lo_)
      fail("time stamp " + std::to_string(e.ts) + " before the test began (" +
           std::to_string(ts_lo_) + "), event at offset " + std::to_string(e.offset));
    max_ts_ = std::max(max_ts_, e.ts);
    int64_t& last = last_[d.stream];
    if (static_cast<int64_t>(d.seq) <= last) {
      fail("stream " + std::to_string(d.stream) + ": seq " + std::to_string(d.seq) +
           " after " + std::to_string(last) + " (duplicate or reordered)");
      return;
    }
    const uint64_t gap = static_cast<uint64_t>(static_cast<int64_t>(d.seq) - last - 1);
    gaps_[d.stream].add(static_cast<uint64_t>(last + 1), d.seq);
    if (locate_ && d.stream == 0) {
      if (pending_unknown_) {
        if (gap < pending_ + 1)
          fail("lost events flagged (count not stored) but gap " + std::to_string(gap));
        else
          unknown_gap_ += gap - pending_;
      } else if (gap != pending_) {
        fail("seq " + std::to_string(d.seq) + ": gap of " + std::to_string(gap) +
             " events, the reader was told " + std::to_string(pending_));
      }
    }
    pending_ = 0;
    pending_unknown_ = false;
    last = d.seq;
  }

  // After the final drain: the sequences written after the last one read.
  void finish_stream(uint32_t stream, uint64_t next_seq) {
    int64_t& last = last_[stream];
    if (static_cast<int64_t>(next_seq) <= last)
      fail("read seq " + std::to_string(last) + " but the writer stopped at " +
           std::to_string(next_seq));
    else
      gaps_[stream].add(static_cast<uint64_t>(last + 1), next_seq);
  }

  uint64_t errors() const { return errors_; }
  std::string messages() const {
    std::string s;
    for (const auto& m : messages_) s += "\n  " + m;
    return s;
  }
  uint64_t decoded() const { return decoded_; }
  uint64_t typed() const { return typed_; }
  uint64_t pages() const { return pages_; }
  uint64_t stream_count(uint32_t s) const { return per_stream_[s]; }
  uint64_t level_count(uint32_t l) const { return levels_[l]; }
  const RangeLog& gaps(uint32_t s) const { return gaps_[s]; }
  uint64_t gap_total() const {
    uint64_t t = 0;
    for (uint32_t s = 0; s < nstreams_; s++) t += gaps_[s].total();
    return t;
  }
  uint64_t stored_lost() const { return stored_lost_; }
  uint64_t unknown_flags() const { return unknown_flags_; }
  uint64_t unknown_gap() const { return unknown_gap_; }
  uint64_t loss_flags() const { return flags_; }
  uint64_t max_ts() const { return max_ts_; }

 private:
  uint32_t cpu_;
  uint32_t nstreams_;
  bool locate_;
  int32_t pid_ = 0;
  uint64_t ts_lo_ = 0;
  uint64_t errors_ = 0;
  std::vector<std::string> messages_;
  uint64_t decoded_ = 0, typed_ = 0, pages_ = 0;
  uint64_t per_stream_[kMaxStreams] = {};
  uint64_t levels_[16] = {};
  int64_t last_[kMaxStreams];
  RangeLog gaps_[kMaxStreams];
  uint64_t last_ts_ = 0, max_ts_ = 0;
  std::string last_what_;
  uint64_t chunk_events_ = 0;
  uint64_t pending_ = 0;
  bool pending_unknown_ = false;
  uint64_t stored_lost_ = 0, unknown_flags_ = 0, unknown_gap_ = 0, flags_ = 0;
};

// Which reader API a case drains with.
enum class ReadStyle { kPages, kConsume };

// One reader step on `cpu`: read_page(full) or up to `batch` consumes (with
// `full`, some of them checked against a peek first). Returns events/pages
// handed out (0: nothing there).
inline int read_step(rbtrace::RingBuffer& rb, uint32_t cpu, ReadStyle style, bool full,
                     rbtrace::DataPage** spare, CpuVerifier& v, int batch = 64) {
  if (style == ReadStyle::kPages) {
    const int rc = rb.read_page(spare, cpu, full);
    if (rc == -EAGAIN) return 0;
    v.page(*spare, rc, rb.page_size() - rbtrace::kPageHeaderSize);
    return 1;
  }
  int n = 0;
  v.begin_chunk();
  for (; n < batch; n++) {
    PageEvent e;
    uint64_t lost = 0;
    // Now and then, peek first: consume must then hand out the same event.
    unsigned char peeked[kMaxLen + 16];
    PageEvent pe{};
    uint64_t plost = 0;
    const bool peek = (n & 7) == 0 && full;
    if (peek) {
      const int prc = rb.peek(cpu, &pe, &plost);
      if (prc == -EAGAIN) break;
      if (prc != 0 || pe.length > sizeof peeked) {
        v.fail("peek returned " + std::to_string(prc));
        break;
      }
      std::memcpy(peeked, pe.data, pe.length);
    }
    const int rc = rb.consume(cpu, &e, &lost);
    if (peek && (rc != 0 || e.length != pe.length || e.ts != pe.ts || e.offset != pe.offset ||
                 lost != plost || std::memcmp(peeked, e.data, e.length) != 0))
      v.fail("consume after peek returned a different event");
    if (rc == -EAGAIN) break;
    if (rc != 0) {
      v.fail("consume returned " + std::to_string(rc));
      break;
    }
    v.loss(lost != 0, lost != 0, lost);
    v.event(e);
  }
  return n;
}

// Reads everything left on `cpu` (writers stopped).
inline void drain(rbtrace::RingBuffer& rb, uint32_t cpu, ReadStyle style,
                  rbtrace::DataPage** spare, CpuVerifier& v) {
  for (int guard = 0; guard < 100000000; guard++) {
    if (read_step(rb, cpu, style, false, spare, v, 1 << 20) == 0) return;
  }
  v.fail("drain did not end");
}

inline std::string stats_str(const rbtrace::CpuStats& s) {
  char b[320];
  std::snprintf(b, sizeof b,
                "entries=%llu overrun=%llu commit_overrun=%llu dropped=%llu "
                "nested_dropped=%llu disabled=%llu read=%llu",
                static_cast<unsigned long long>(s.entries),
                static_cast<unsigned long long>(s.overrun),
                static_cast<unsigned long long>(s.commit_overrun),
                static_cast<unsigned long long>(s.dropped),
                static_cast<unsigned long long>(s.nested_dropped),
                static_cast<unsigned long long>(s.disabled),
                static_cast<unsigned long long>(s.read));
  return b;
}
inline std::string tally_str(const Tally& t) {
  char b[320];
  std::snprintf(b, sizeof b,
                "attempts=%llu ok=%llu enospc=%llu eloop=%llu eperm=%llu eagain=%llu "
                "other=%llu discards=%llu",
                static_cast<unsigned long long>(t.attempts),
                static_cast<unsigned long long>(t.ok),
                static_cast<unsigned long long>(t.enospc),
                static_cast<unsigned long long>(t.eloop),
                static_cast<unsigned long long>(t.eperm),
                static_cast<unsigned long long>(t.eagain),
                static_cast<unsigned long long>(t.other),
                static_cast<unsigned long long>(t.discards));
  return b;
}

// Refusals (dropped, commit_overrun, nested_dropped) counted after the tail
// last entered a page. A reader is told about a refusal with the first page
// the tail entered after it (docs/DESIGN.md section 5); these have no such
// page yet, so no reader has been told. Only with no writer running.
inline uint64_t trailing_refusals(const rbtrace::RingBuffer& rb, uint32_t cpu) {
  const rbtrace::detail::CpuBuffer* cb = rb.cpu_buffer(cpu);
  return cb->refused_total() - cb->tail_page.load()->refused_mark.load();
}

// Losses the reader took with a page (R2) but has not told yet: consume()
// tells them with the next event, and the pages after them held only
// discarded events (padding), so no event came. Read once the readers and
// writers have stopped.
inline uint64_t untold_losses(const rbtrace::RingBuffer& rb, uint32_t cpu) {
  return rb.cpu_buffer(cpu)->lost_events;
}

}  // namespace stress
