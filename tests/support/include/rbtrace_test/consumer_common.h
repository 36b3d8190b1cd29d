// consumer_common.h - shared pieces of the consumer tests: a strict,
// independent trace.dat (v6) walker, self-checking payloads, directory
// helpers.
//
// The walker checks what a published file must be: the magic and version,
// every section length within the file, the flyrecord table inside the file
// and page aligned, every page well formed (PageWalker, commit flags). It
// extracts per CPU the data events (payload bytes), the MISSED counts, the
// CPUSTAT text and the cmdlines. It is written from the trace-cmd format
// description, independently of the library's writer.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "rbtrace/consumer.h"
#include "rbtrace/format.h"

namespace ctest {

// ---- payloads -------------------------------------------------------------
// 16 bytes: u32 cpu, u32 seq_lo, u32 seq_hi, u32 mix(cpu, seq). Bit-identical
// comparison: the reader regenerates the bytes from (cpu, seq).
inline constexpr uint32_t kPayload = 16;
inline uint32_t mix(uint32_t cpu, uint64_t seq) {
  uint64_t x = (seq + 1) * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(cpu) << 40);
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 32;
  return static_cast<uint32_t>(x);
}
inline void make_payload(unsigned char* p, uint32_t cpu, uint64_t seq) {
  uint32_t w[4] = {cpu, static_cast<uint32_t>(seq), static_cast<uint32_t>(seq >> 32), mix(cpu, seq)};
  std::memcpy(p, w, sizeof w);
}

// ---- trace.dat walker -----------------------------------------------------
struct CpuTrace {
  uint64_t nevents = 0;
  uint64_t pages = 0;
  uint64_t missed_pages = 0;   // pages with MISSED_EVENTS
  uint64_t missed_stored = 0;  // sum of stored lost counts
  std::string stats;           // CPUSTAT option text
  uint64_t last_ts = 0;
};

struct Trace {
  uint32_t page_size = 0;
  uint32_t ncpus = 0;
  std::string clock;
  std::string cmdlines;
  std::vector<CpuTrace> cpus;
};

class Cursor {
 public:
  Cursor(const std::string& d, size_t pos = 0) : d_(d), pos_(pos) {}
  bool take(size_t n, std::string* out = nullptr) {
    if (d_.size() - pos_ < n) return false;
    if (out) *out = d_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  template <class T>
  bool num(T* v) {
    if (d_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, d_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool cstr(std::string* s) {
    size_t z = d_.find('\0', pos_);
    if (z == std::string::npos) return false;
    *s = d_.substr(pos_, z - pos_);
    pos_ = z + 1;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& d_;
  size_t pos_;
};

inline bool read_file(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  std::fclose(f);
  return true;
}

// Checks one payload: make_payload(cpu, seq) with seq > *last_seq.
inline std::string check_payload(const rbtrace::PageEvent& e, uint32_t cpu, int64_t* last_seq) {
  if (e.length != kPayload) return "payload of " + std::to_string(e.length) + " bytes";
  uint32_t w[4];
  std::memcpy(w, e.data, sizeof w);
  const uint64_t seq = w[1] | static_cast<uint64_t>(w[2]) << 32;
  unsigned char want[kPayload];
  make_payload(want, cpu, seq);
  if (std::memcmp(want, e.data, kPayload) != 0)
    return "payload of cpu " + std::to_string(cpu) + " seq " + std::to_string(seq) + " differs";
  if (static_cast<int64_t>(seq) <= *last_seq)
    return "cpu " + std::to_string(cpu) + ": seq " + std::to_string(seq) + " after " +
           std::to_string(*last_seq);
  *last_seq = static_cast<int64_t>(seq);
  return "";
}

// Parses and validates a trace.dat. With `seqs` (one per CPU, carried
// across the files of a recording), every event must be a ctest payload,
// bit-identical, in increasing seq order. Returns "" or the first problem.
inline std::string walk_trace(const std::string& path, Trace* t,
                              std::vector<int64_t>* seqs = nullptr) {
  std::string d;
  if (!read_file(path, &d)) return "cannot read " + path;
  Cursor c(d);
  std::string s;
  if (!c.take(10, &s) || s != std::string("\x17\x08\x44tracing", 10)) return "bad magic";
  if (!c.cstr(&s) || s != "6") return "not version 6";
  uint8_t endian, lsize;
  if (!c.num(&endian) || !c.num(&lsize) || endian != 0 || lsize != 8) return "bad endian/long";
  if (!c.num(&t->page_size) || t->page_size < 4096 || (t->page_size & (t->page_size - 1)))
    return "bad page size";
  for (const char* sec : {"header_page", "header_event"}) {
    uint64_t len;
    if (!c.cstr(&s) || s != sec || !c.num(&len) || !c.take(len)) return std::string("bad ") + sec;
  }
  uint32_t n;
  if (!c.num(&n) || n > 4096) return "bad ftrace count";
  for (uint32_t i = 0; i < n; i++) {
    uint64_t len;
    if (!c.num(&len) || !c.take(len)) return "bad ftrace format";
  }
  uint32_t nsys;
  if (!c.num(&nsys) || nsys > 65536) return "bad system count";
  for (uint32_t i = 0; i < nsys; i++) {
    uint32_t ne;
    if (!c.cstr(&s) || !c.num(&ne) || ne > 65536) return "bad system";
    for (uint32_t k = 0; k < ne; k++) {
      uint64_t len;
      if (!c.num(&len) || !c.take(len)) return "bad event format";
    }
  }
  uint32_t l32;
  if (!c.num(&l32) || !c.take(l32)) return "bad kallsyms";
  if (!c.num(&l32) || !c.take(l32)) return "bad printk";
  uint64_t l64;
  if (!c.num(&l64) || !c.take(l64, &t->cmdlines)) return "bad cmdlines";
  if (!c.num(&t->ncpus) || t->ncpus == 0 || t->ncpus > 65536) return "bad cpu count";
  t->cpus.assign(t->ncpus, {});
  bool have_clock = false;
  for (;;) {
    if (!c.cstr(&s)) return "no data section";
    if (s == "options  ") {
      for (;;) {
        uint16_t id;
        if (!c.num(&id)) return "bad option";
        if (id == 0) break;
        uint32_t len;
        std::string data;
        if (!c.num(&len) || !c.take(len, &data)) return "bad option length";
        if (id == 4) have_clock = true;
        if (id == 2) {
          // "CPU: N\n..." (trace-cmd's CPUSTAT)
          unsigned cpu = 0;
          if (std::sscanf(data.c_str(), "CPU: %u", &cpu) == 1 && cpu < t->ncpus)
            t->cpus[cpu].stats = data;
        }
      }
      continue;
    }
    if (s != "flyrecord") return "unexpected section '" + s + "'";
    break;
  }
  std::vector<std::pair<uint64_t, uint64_t>> runs(t->ncpus);
  for (auto& r : runs)
    if (!c.num(&r.first) || !c.num(&r.second)) return "bad flyrecord table";
  if (have_clock) {
    uint64_t len;
    if (!c.num(&len) || !c.take(len, &t->clock)) return "bad clock text";
  }
  const uint32_t ps = t->page_size;
  for (uint32_t cpu = 0; cpu < t->ncpus; cpu++) {
    const uint64_t off = runs[cpu].first, size = runs[cpu].second;
    if (size == 0) continue;
    if (off % ps || size % ps || off > d.size() || size > d.size() - off)
      return "CPU " + std::to_string(cpu) + ": run outside the file or unaligned";
    CpuTrace& ct = t->cpus[cpu];
    for (uint64_t p = off; p < off + size; p += ps) {
      const unsigned char* page = reinterpret_cast<const unsigned char*>(d.data()) + p;
      uint64_t ts, commit;
      std::memcpy(&ts, page, 8);
      std::memcpy(&commit, page + 8, 8);
      if (commit & ~(rbtrace::kCommitMask | rbtrace::kMissedEvents | rbtrace::kMissedStored))
        return "CPU " + std::to_string(cpu) + ": bad commit word";
      const uint64_t len = commit & rbtrace::kCommitMask;
      if (len == 0 || len > ps - 16) return "CPU " + std::to_string(cpu) + ": bad page length";
      if (ts < ct.last_ts) return "CPU " + std::to_string(cpu) + ": time goes backwards";
      ct.pages++;
      if (commit & rbtrace::kMissedEvents) ct.missed_pages++;
      if (commit & rbtrace::kMissedStored) {
        if (len + 8 > ps - 16) return "bad MISSED_STORED";
        uint64_t lost;
        std::memcpy(&lost, page + 16 + len, 8);
        ct.missed_stored += lost;
      }
      rbtrace::PageWalker w(page + 16, static_cast<uint32_t>(len), ts);
      rbtrace::PageEvent e;
      while (w.next(&e)) {
        ct.nevents++;
        if (e.ts < ct.last_ts) return "CPU " + std::to_string(cpu) + ": event time goes backwards";
        ct.last_ts = e.ts;
        if (seqs && cpu < seqs->size()) {
          std::string bad = check_payload(e, cpu, &(*seqs)[cpu]);
          if (!bad.empty()) return path + ": " + bad;
        }
      }
      if (w.error()) return "CPU " + std::to_string(cpu) + ": corrupt events in a page";
    }
  }
  return "";
}

// Value of "key: N" in a stats text, or -1.
inline int64_t stat_value(const std::string& text, const std::string& key) {
  size_t p = text.find(key + ": ");
  while (p != std::string::npos && p != 0 && text[p - 1] != '\n') p = text.find(key + ": ", p + 1);
  if (p == std::string::npos) return -1;
  return std::strtoll(text.c_str() + p + key.size() + 2, nullptr, 10);
}

// ---- directories ------------------------------------------------------------
inline std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> v;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") v.push_back(n);
    }
    closedir(d);
  }
  std::sort(v.begin(), v.end());
  return v;
}
inline std::vector<std::string> traces(const std::string& dir) {
  std::vector<std::string> v;
  for (const std::string& n : list(dir))
    if (n.size() > 4 && n.find(".dat") != std::string::npos) v.push_back(dir + "/" + n);
  return v;
}
inline void remove_tree(const std::string& p) {
  struct stat st;
  if (lstat(p.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const std::string& n : list(p)) remove_tree(p + "/" + n);
    rmdir(p.c_str());
  } else {
    unlink(p.c_str());
  }
}
inline std::string make_temp_dir(const char* base, const char* tag) {
  std::string t = std::string(base) + "/rbtrace-" + tag + "-XXXXXX";
  std::vector<char> b(t.begin(), t.end());
  b.push_back('\0');
  if (!mkdtemp(b.data())) return {};
  return b.data();
}

inline const char* backend_name(rbtrace::IoBackendKind k) {
  return k == rbtrace::IoBackendKind::kIoUring ? "io_uring" : "pwritev";
}

}  // namespace ctest
