// Integration: `rbtrace export --ctf` (write_ctf, rbtrace/trace_export.h)
// read back by Debian's babeltrace2. A trace recorded through a RingBuffer
// (integers of every width and signedness, strings with characters that
// need escaping, a char[N] and a u8[N] field in a hand-written format, three
// CPUs of which one is empty, overwritten pages with stored lost-event
// counts) is written as a trace.dat, exported with write_ctf and with the
// CLI, and `babeltrace2 --clock-seconds` must print, CPU by CPU and in
// order, exactly the events of `rbtrace report --json`: name (system:name),
// pid, comm, every field value, and the time in ns; its "discarded events"
// warnings must match the records with lost_before (count, CPU, and the
// time range from the record before to the record after). Also: an
// existing non-empty -o DIR is refused (and left as it was), an empty one
// is used, a corrupt trace.dat is an error with exit 1 and leaves nothing.
#include <gtest/gtest.h>

#include <array>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/ring_tracedat.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(ctfx, ints,
              ((uint8_t, u8))((int8_t, s8))((uint16_t, u16))((int16_t, s16))((uint32_t, u32))
              ((int32_t, s32))((uint64_t, u64))((int64_t, s64)))
RBTRACE_EVENT(ctfx, msg, ((uint64_t, seq))((rbtrace::str, text))((int32_t, code)))
namespace ctfx_types {
enum class Mood : int8_t { kSad = -1, kFine = 0, kGlad = 2 };
}
RBTRACE_ENUM(ctfx_types::Mood, (kSad)(kFine)(kGlad))
// The richer field types (event.h): floats, an enum, an integer array,
// a byte sequence and a pointer.
RBTRACE_EVENT(ctfx, rich,
              ((double, ms))((float, ratio))((ctfx_types::Mood, mood))
              ((std::array<int16_t, 3>, v))((rbtrace::bytes, blob))((const void*, ptr)))

using namespace rbtrace;
using rbtrace_test::Proc;
using rbtrace_test::run;
using rbtrace_test::TempDir;

namespace {

// A hand-written format (the typed events have no fixed arrays): char[12]
// and u8[6] fields, written with RingBuffer::write.
constexpr uint16_t kArrsId = 30000;
const char* const kArrsFormat =
    "name: arrs\nID: 30000\nformat:\n"
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
    "\tfield:char label[12];\toffset:8;\tsize:12;\tsigned:0;\n"
    "\tfield:u8 raw[6];\toffset:20;\tsize:6;\tsigned:0;\n"
    "\tfield:u16 tail;\toffset:26;\tsize:2;\tsigned:0;\n\n"
    "print fmt: \"label=%s tail=%u\", REC->label, REC->tail\n";

// Strings that a careless printer or parser would get wrong.
std::string text_of(uint64_t s) {
  static const char* const kTexts[] = {"plain", "say \"hi\", {x} = [y]", "back\\slash",
                                       "", "tab\there", "caf\xc3\xa9 \xe2\x82\xac"};
  return std::string(kTexts[(s / 3) % 6]) + "#" + std::to_string(s);
}

std::string record(const std::string& dir) {
  const uint32_t ncpus = 3;
  const uint64_t written[ncpus] = {4000, 3000, 0};
  Options o;
  o.ncpus = ncpus;
  o.page_size = 4096;
  o.pages_per_cpu = 16;
  o.mode = Mode::kOverwrite;
  Error e;
  auto rb = RingBuffer::create(o, &e);
  EXPECT_TRUE(rb) << e.message;
  if (!rb) return "";
  std::vector<int32_t> tids(ncpus, 0);
  for (uint32_t c = 0; c < ncpus; c++) {
    std::thread([&, c] {
      EXPECT_EQ(rb->bind_thread(c), 0);
      tids[c] = static_cast<int32_t>(gettid());
      for (uint64_t s = 0; s < written[c]; s++) {
        if (c == 1 && s % 7 == 0) {
          static const ctfx_types::Mood kMoods[] = {ctfx_types::Mood::kSad,
                                                    ctfx_types::Mood::kFine,
                                                    ctfx_types::Mood::kGlad};
          const std::array<int16_t, 3> v = {static_cast<int16_t>(-static_cast<int64_t>(s)), 2,
                                            static_cast<int16_t>(s % 30000)};
          const unsigned char blob[4] = {1, static_cast<unsigned char>(s), 0, 255};
          rbtrace_events::ctfx_rich::emit(
              *rb, static_cast<double>(s) / 8.0 - 100.0, static_cast<float>(s) * 0.25f,
              kMoods[s % 3], v, rbtrace::bytes_view(blob, s % 5),
              reinterpret_cast<const void*>(static_cast<uintptr_t>(0x1000 + s)));
        } else if (c == 0 || s % 3 == 0) {
          const int64_t v = static_cast<int64_t>(s * 0x9e3779b97f4a7c15ull);
          rbtrace_events::ctfx_ints::emit(*rb, static_cast<uint8_t>(v), static_cast<int8_t>(v >> 8),
                                          static_cast<uint16_t>(v >> 16), static_cast<int16_t>(v >> 24),
                                          static_cast<uint32_t>(v >> 32), static_cast<int32_t>(v),
                                          static_cast<uint64_t>(v), -v);
        } else if (s % 3 == 1) {
          rbtrace_events::ctfx_msg::emit(*rb, s, text_of(s), -static_cast<int32_t>(s));
        } else {
          unsigned char r[28] = {};
          const uint16_t id = kArrsId;
          const int32_t pid = tids[c];
          std::memcpy(r, &id, 2);
          std::memcpy(r + 4, &pid, 4);
          const std::string label = "lbl" + std::to_string(s);  // < 12 bytes: NUL padded
          std::memcpy(r + 8, label.data(), label.size());
          for (int i = 0; i < 6; i++) r[20 + i] = static_cast<unsigned char>(s * 7 + i * 40);
          const uint16_t tail = static_cast<uint16_t>(s);
          std::memcpy(r + 26, &tail, 2);
          EXPECT_EQ(rb->write(r, sizeof r), 0);
        }
      }
      rb->unbind_thread();
    }).join();
  }
  TraceDatInput in = rbtrace_test::tracedat_input_for(*rb);
  in.events.push_back({"ctfx", kArrsFormat});
  for (uint32_t c = 0; c < 2; c++) in.cmdlines.push_back({tids[c], "writer" + std::to_string(c)});
  return rbtrace_test::ring_to_tracedat(*rb, dir, in);
}

// ---- one event, as both sides give it -----------------------------------------
// Values as text: integers in decimal, strings as their bytes, byte and
// integer arrays as "[a,b,...]".
struct Ev {
  uint32_t cpu = 0;
  uint64_t ts_ns = 0;
  std::string name;  // system:name
  std::map<std::string, std::string> fields;  // pid and comm included
  bool operator==(const Ev& o) const {
    return cpu == o.cpu && ts_ns == o.ts_ns && name == o.name && fields == o.fields;
  }
};
std::ostream& operator<<(std::ostream& os, const Ev& e) {
  os << "cpu " << e.cpu << " ts " << e.ts_ns << " " << e.name << " {";
  for (const auto& [k, v] : e.fields) os << " " << k << "=<" << v << ">";
  return os << " }";
}

void put_utf8(std::string* s, uint32_t cp) {
  if (cp < 0x80) {
    *s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *s += static_cast<char>(0xc0 | (cp >> 6));
    *s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    *s += static_cast<char>(0xe0 | (cp >> 12));
    *s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    *s += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A small parser for both texts: JSON (rbtrace report --json) and
// babeltrace2's pretty values ({ a = 1, s = "x" }, [ [0] = 1, ... ]).
struct P {
  const std::string& s;
  size_t i = 0;
  bool ok = true;
  void ws() {
    while (i < s.size() && s[i] == ' ') i++;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      i++;
      return true;
    }
    return false;
  }
  std::string str(bool json) {  // at the opening quote
    std::string o;
    if (!eat('"')) return ok = false, o;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c != '\\') {
        o += c;
        continue;
      }
      if (i >= s.size()) return ok = false, o;
      c = s[i++];
      switch (c) {
        case 'n': o += '\n'; break;
        case 't': o += '\t'; break;
        case 'r': o += '\r'; break;
        case 'a': o += '\a'; break;
        case 'b': o += '\b'; break;
        case 'f': o += '\f'; break;
        case 'v': o += '\v'; break;
        case 'u':
          if (json && i + 4 <= s.size()) {
            put_utf8(&o, static_cast<uint32_t>(std::stoul(s.substr(i, 4), nullptr, 16)));
            i += 4;
          } else {
            ok = false;
          }
          break;
        default: o += c;  // \" \\ and the rest as themselves
      }
    }
    if (!eat('"')) ok = false;
    return o;
  }
  std::string ident() {
    ws();
    const size_t b = i;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) i++;
    if (b == i) ok = false;
    return s.substr(b, i - b);
  }
  std::string number() {
    ws();
    const size_t b = i;
    if (i < s.size() && s[i] == '-') i++;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) i++;
    if (b == i) ok = false;
    return s.substr(b, i - b);
  }
  // An integer or a real (digits, '.', an exponent), as written.
  std::string number_or_real() {
    ws();
    const size_t b = i;
    if (i < s.size() && s[i] == '-') i++;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' ||
                            s[i] == 'e' || s[i] == 'E' || s[i] == '+' ||
                            (s[i] == '-' && (s[i - 1] == 'e' || s[i - 1] == 'E'))))
      i++;
    if (b == i) ok = false;
    return s.substr(b, i - b);
  }
  // A babeltrace2 value: number, string, array (as "[a,b]"), an enum's
  // ( "name" : container = N ) as its name, a real as its digits.
  std::string bt_value() {
    ws();
    if (i < s.size() && s[i] == '"') return str(false);
    if (i < s.size() && (s[i] == '-' || std::isdigit(static_cast<unsigned char>(s[i]))))
      return number_or_real();
    if (eat('(')) {
      const std::string n = str(false);
      const size_t close = s.find(')', i);
      if (close == std::string::npos) return ok = false, n;
      i = close + 1;
      return n;
    }
    if (eat('[')) {
      std::string o = "[";
      bool first = true;
      while (ok && !eat(']')) {
        if (!first && !eat(',')) return ok = false, o;
        if (!eat('[')) return ok = false, o;
        number();
        if (!eat(']') || !eat('=')) return ok = false, o;
        o += (first ? "" : ",") + bt_value();
        first = false;
      }
      return o + "]";
    }
    return number();
  }
  // "{ a = v, b = v }" into *m.
  void bt_struct(std::map<std::string, std::string>* m) {
    if (!eat('{')) return void(ok = false);
    bool first = true;
    while (ok && !eat('}')) {
      if (!first && !eat(',')) return void(ok = false);
      first = false;
      const std::string k = ident();
      if (!eat('=')) return void(ok = false);
      (*m)[k] = bt_value();
    }
  }
};

// `babeltrace2 --clock-seconds --no-delta` lines:
//   [SEC.NANOSEC] PROCNAME:(VPID) SYS:NAME: { cpu_id = C }, { pid = P, comm = "..." }, { fields }
// (PROCNAME:(VPID) when the metadata's env names the process: into *proc).
bool parse_bt_line(const std::string& l, Ev* e, std::string* proc = nullptr) {
  P p{l};
  if (!p.eat('[')) return false;
  const std::string sec = p.number();
  if (!p.eat('.')) return false;
  const std::string ns = p.number();
  if (!p.ok || !p.eat(']') || ns.size() != 9) return false;
  e->ts_ns = std::stoull(sec) * 1000000000ull + std::stoull(ns);
  p.ws();
  const size_t sp = l.find(' ', p.i);
  if (sp != std::string::npos && sp > p.i && l[sp - 1] == ')') {
    const size_t lp = l.rfind(":(", sp);
    if (lp == std::string::npos || lp < p.i) return false;
    if (proc) *proc = l.substr(p.i, sp - p.i);
    p.i = sp + 1;
  }
  const size_t colon = l.find(": ", p.i);
  if (colon == std::string::npos) return false;
  e->name = l.substr(p.i, colon - p.i);
  p.i = colon + 1;
  std::map<std::string, std::string> pc;
  p.bt_struct(&pc);
  if (!p.ok || !pc.count("cpu_id")) return false;
  e->cpu = static_cast<uint32_t>(std::stoul(pc["cpu_id"]));
  if (!p.eat(',')) return false;
  p.bt_struct(&e->fields);
  if (p.eat(',')) p.bt_struct(&e->fields);  // an event without fields has none
  p.ws();
  return p.ok && p.i == l.size();
}

// A `rbtrace report --json` line; *lost = lost_before (-1: none, -2: null).
bool parse_json_line(const std::string& l, Ev* e, int64_t* lost) {
  P p{l};
  *lost = -1;
  std::string sys, name;
  if (!p.eat('{')) return false;
  bool first = true;
  while (p.ok && !p.eat('}')) {
    if (!first && !p.eat(',')) return false;
    first = false;
    const std::string k = p.str(true);
    if (!p.eat(':')) return false;
    p.ws();
    if (k == "fields") {
      if (!p.eat('{')) return false;
      bool f1 = true;
      while (p.ok && !p.eat('}')) {
        if (!f1 && !p.eat(',')) return false;
        f1 = false;
        const std::string fk = p.str(true);
        if (!p.eat(':')) return false;
        p.ws();
        if (p.i < l.size() && l[p.i] == '"') {
          e->fields[fk] = p.str(true);
        } else if (p.eat('[')) {  // an integer array
          std::string o = "[";
          bool a1 = true;
          while (p.ok && !p.eat(']')) {
            if (!a1 && !p.eat(',')) return false;
            o += (a1 ? "" : ",") + p.number();
            a1 = false;
          }
          e->fields[fk] = o + "]";
        } else {
          e->fields[fk] = p.number_or_real();
        }
      }
    } else if (p.i < l.size() && l[p.i] == '"') {
      const std::string v = p.str(true);
      if (k == "system") sys = v;
      if (k == "name") name = v;
      if (k == "comm") e->fields["comm"] = v;
    } else if (l.compare(p.i, 4, "null") == 0) {
      p.i += 4;
      if (k == "lost_before") *lost = -2;
    } else {
      const std::string v = p.number();
      if (k == "cpu") e->cpu = static_cast<uint32_t>(std::stoul(v));
      if (k == "ts_ns") e->ts_ns = std::stoull(v);
      if (k == "pid") e->fields["pid"] = v;
      if (k == "lost_before") *lost = std::stoll(v);
    }
  }
  e->name = sys + ":" + name;
  return p.ok;
}

// A JSON hex string (a byte field) as the array babeltrace2 prints.
// A real number's text, normalised: the same value prints the same.
std::string real(const std::string& t) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", std::strtod(t.c_str(), nullptr));
  return b;
}

std::string hex_to_array(const std::string& h) {
  std::string o = "[";
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    o += (i ? "," : "") + std::to_string(std::stoul(h.substr(i, 2), nullptr, 16));
  return o + "]";
}

void remove_tree(const std::string& d) {
  if (DIR* x = opendir(d.c_str())) {
    while (dirent* e = readdir(x))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        unlink((d + "/" + e->d_name).c_str());
    closedir(x);
  }
  rmdir(d.c_str());
}

std::vector<std::string> entries(const std::string& d) {
  std::vector<std::string> v;
  if (DIR* x = opendir(d.c_str())) {
    while (dirent* e = readdir(x))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) v.push_back(e->d_name);
    closedir(x);
  }
  std::sort(v.begin(), v.end());
  return v;
}

class CtfExport : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir.path.empty());
    ASSERT_EQ(access(RBTRACE_BABELTRACE2, X_OK), 0)
        << RBTRACE_BABELTRACE2 << " is needed (apt-get install babeltrace2)";
    ASSERT_EQ(access(RBTRACE_CLI, X_OK), 0) << RBTRACE_CLI;
  }
  void TearDown() override {
    for (const std::string& n : entries(dir.path)) remove_tree(dir.path + "/" + n);
  }
  TempDir dir;
};

struct Lost {
  uint64_t count;
  uint64_t from, to;  // ns
  bool operator==(const Lost& o) const { return count == o.count && from == o.from && to == o.to; }
};

// Exports `file` to `out` (the CLI or write_ctf) and compares babeltrace2's
// reading of it with rbtrace report --json.
void check_export(const std::string& dir, const std::string& file, const std::string& out,
                  bool cli, uint64_t* nevents, uint64_t* nlost) {
  if (cli) {
    const Proc c = run(dir, {RBTRACE_CLI, "export", "--ctf", file, "-o", out});
    ASSERT_EQ(c.status, 0) << c.err;
    EXPECT_EQ(c.err, "");
  } else {
    std::string err;
    auto r = TraceDatReader::open(file, &err);
    ASSERT_TRUE(r) << err;
    ASSERT_EQ(write_ctf(*r, out, &err), 0) << err;
  }
  // The directory: metadata and the CPUs with records (CPU 2 has none).
  EXPECT_EQ(entries(out), (std::vector<std::string>{"cpu0", "cpu1", "metadata"}));
  struct stat st;
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  const mode_t um = umask(022);
  umask(um);
  EXPECT_EQ(st.st_mode & 07777, 0755 & ~um);

  // The traced process in the metadata's env, as LTTng-UST names it.
  {
    std::string err;
    auto r = TraceDatReader::open(file, &err);
    ASSERT_TRUE(r) << err;
    if (r->process_pid() > 0) {
      const std::string meta = rbtrace_test::read_file(out + "/metadata");
      EXPECT_NE(meta.find("\tvpid = " + std::to_string(r->process_pid()) + ";\n\tprocname = \"" +
                          r->process_name() + "\";"),
                std::string::npos);
    }
  }
  const Proc j = run(dir, {RBTRACE_CLI, "report", "--json", file});
  ASSERT_EQ(j.status, 0) << j.err;
  const Proc b = run(dir, {RBTRACE_BABELTRACE2, "--clock-seconds", "--no-delta", out});
  ASSERT_EQ(b.status, 0) << b.err;

  // Per CPU, in order.
  std::map<uint32_t, std::vector<Ev>> want, got;
  std::map<uint32_t, std::vector<Lost>> want_lost, got_lost;
  std::istringstream jl(j.out);
  uint64_t n = 0, rich = 0;
  for (std::string l; std::getline(jl, l);) {
    Ev e;
    int64_t lost;
    ASSERT_TRUE(parse_json_line(l, &e, &lost)) << l;
    // u8 raw[6]: a hex string (a byte field) or an integer array, by the
    // reader's version; babeltrace2 prints an array of u8 either way.
    if (e.name == "ctfx:arrs" && e.fields["raw"].rfind("[", 0) != 0)
      e.fields["raw"] = hex_to_array(e.fields["raw"]);
    if (e.name == "ctfx:rich") {
      // A byte sequence is a hex string in JSON, a sequence of u8 after
      // its length in CTF; reals compare as numbers.
      e.fields["len_blob"] = std::to_string(e.fields["blob"].size() / 2);
      e.fields["blob"] = hex_to_array(e.fields["blob"]);
      for (const char* k : {"ms", "ratio"}) e.fields[k] = real(e.fields[k]);
      rich++;
    }
    std::vector<Ev>& v = want[e.cpu];
    if (lost != -1)
      want_lost[e.cpu].push_back({lost == -2 ? 1 : static_cast<uint64_t>(lost),
                                  v.empty() ? e.ts_ns : v.back().ts_ns, e.ts_ns});
    v.push_back(e);
    n++;
  }
  // Every line names the process the trace.dat names (its PROCMAPS).
  std::string want_proc;
  {
    std::string err;
    auto r = TraceDatReader::open(file, &err);
    ASSERT_TRUE(r) << err;
    if (r->process_pid() > 0)
      want_proc = r->process_name() + ":(" + std::to_string(r->process_pid()) + ")";
  }
  std::istringstream bl(b.out);
  uint64_t m = 0;
  for (std::string l; std::getline(bl, l);) {
    Ev e;
    std::string proc;
    ASSERT_TRUE(parse_bt_line(l, &e, &proc)) << "babeltrace2 printed: " << l;
    ASSERT_EQ(proc, want_proc) << l;
    if (e.name == "ctfx:rich")
      for (const char* k : {"ms", "ratio"}) e.fields[k] = real(e.fields[k]);
    got[e.cpu].push_back(e);
    m++;
  }
  // "WARNING: Tracer discarded N events between [A] and [B] in trace ...
  //  within stream "OUT/cpuC" (...)."
  std::istringstream wl(b.err);
  for (std::string l; std::getline(wl, l);) {
    if (l.find("discarded") == std::string::npos) continue;
    unsigned long long cnt = 0, as = 0, an = 0, bs = 0, bn = 0;
    ASSERT_EQ(std::sscanf(l.c_str(), "WARNING: Tracer discarded %llu events between [%llu.%llu] and [%llu.%llu]",
                          &cnt, &as, &an, &bs, &bn), 5) << l;
    const size_t sp = l.find("within stream \"" + out + "/cpu");
    ASSERT_NE(sp, std::string::npos) << l;
    const uint32_t cpu = static_cast<uint32_t>(std::stoul(l.substr(sp + 15 + out.size() + 4)));
    got_lost[cpu].push_back({cnt, as * 1000000000ull + an, bs * 1000000000ull + bn});
  }
  EXPECT_EQ(m, n);
  EXPECT_GT(n, 1000u);
  EXPECT_GT(rich, 50u) << "the richer field types reached the export";
  EXPECT_EQ(want.size(), 2u);
  for (const auto& [cpu, v] : want) {
    SCOPED_TRACE("CPU " + std::to_string(cpu));
    ASSERT_EQ(got[cpu].size(), v.size());
    for (size_t i = 0; i < v.size(); i++) ASSERT_EQ(got[cpu][i], v[i]) << "event " << i;
  }
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got_lost, want_lost);
  EXPECT_FALSE(want_lost[0].empty());  // the recording overwrote pages
  EXPECT_FALSE(want_lost[1].empty());
  *nevents = n;
  *nlost = 0;
  for (const auto& [cpu, v] : want_lost)
    for (const Lost& x : v) *nlost += x.count;
}

TEST_F(CtfExport, BabeltraceReadsWhatReportPrints) {
  const std::string file = record(dir.path);
  ASSERT_FALSE(file.empty());
  uint64_t n1 = 0, l1 = 0, n2 = 0, l2 = 0;
  check_export(dir.path, file, dir.path + "/api", false, &n1, &l1);
  // The CLI, into an existing empty directory.
  ASSERT_EQ(mkdir((dir.path + "/cli").c_str(), 0700), 0);
  check_export(dir.path, file, dir.path + "/cli", true, &n2, &l2);
  EXPECT_EQ(n1, n2);
  EXPECT_EQ(l1, l2);
  EXPECT_GT(l1, 0u);
  // Deterministic: the same bytes both ways.
  for (const char* f : {"metadata", "cpu0", "cpu1"})
    EXPECT_EQ(rbtrace_test::read_file(dir.path + "/api/" + f),
              rbtrace_test::read_file(dir.path + "/cli/" + f)) << f;
}

TEST_F(CtfExport, RefusesANonEmptyDirectoryAndLeavesNothingOnErrors) {
  const std::string valid = std::string(RBTRACE_CORPUS_DIR) + "/valid_two_cpus.dat";
  const std::string out = dir.path + "/out";
  ASSERT_EQ(mkdir(out.c_str(), 0755), 0);
  {
    const int fd = ::open((out + "/keep").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "x", 1), 1);
    ::close(fd);
  }
  Proc r = run(dir.path, {RBTRACE_CLI, "export", "--ctf", valid, "-o", out});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "rbtrace export: " + valid + ": " + out + ": exists and is not empty (never replaced)\n");
  EXPECT_EQ(entries(out), std::vector<std::string>{"keep"});
  // A file or a symbolic link: refused, not followed.
  const std::string link = dir.path + "/link";
  ASSERT_EQ(symlink(out.c_str(), link.c_str()), 0);
  r = run(dir.path, {RBTRACE_CLI, "export", "--ctf", valid, "-o", link});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("exists and is not a directory (never replaced)"), std::string::npos) << r.err;
  EXPECT_EQ(entries(out), std::vector<std::string>{"keep"});
  // Usage: one format; -o needed.
  EXPECT_EQ(run(dir.path, {RBTRACE_CLI, "export", "--ctf", valid}).status, 2);
  EXPECT_EQ(run(dir.path, {RBTRACE_CLI, "export", "--ctf", "--chrome", valid, "-o", dir.path + "/x"}).status, 2);
  const Proc h = run(dir.path, {RBTRACE_CLI, "export", "--help"});
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("--ctf FILE -o DIR"), std::string::npos) << h.out;

  // The corrupt corpus: exit 1, one line naming the file, nothing left
  // (neither DIR nor a temporary directory beside it).
  const std::string corpus = RBTRACE_CORPUS_DIR;
  const std::string work = dir.path + "/corrupt";
  ASSERT_EQ(mkdir(work.c_str(), 0700), 0);
  int n = 0, late = 0;
  for (const std::string& name : entries(corpus)) {
    if (name.size() < 4 || name.substr(name.size() - 4) != ".dat" || name.rfind("valid", 0) == 0) continue;
    SCOPED_TRACE(name);
    r = run(dir.path, {RBTRACE_CLI, "export", "--ctf", corpus + "/" + name, "-o", work + "/ctf"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("rbtrace export: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
    EXPECT_EQ(entries(work), std::vector<std::string>{}) << "something was left";
    // The files the reader opens but whose records are bad fail inside write_ctf.
    std::string err;
    if (auto rd = TraceDatReader::open(corpus + "/" + name, &err)) {
      late++;
      EXPECT_EQ(write_ctf(*rd, work + "/ctf", &err), -1);
      EXPECT_NE(err, "");
      EXPECT_EQ(entries(work), std::vector<std::string>{}) << "something was left";
    }
    n++;
  }
  EXPECT_GE(n, 13);
  EXPECT_GE(late, 2);  // errors found while streaming, not only at open
}

}  // namespace
