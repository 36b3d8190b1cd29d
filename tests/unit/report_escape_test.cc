// report_escape_test.cc - what `rbtrace report` prints of bytes a trace's
// strings and comms hold (issue 12: "the text report prints raw bytes >=
// 0x80"). Records whose string field holds every byte 0x80..0xff, ESC
// sequences, newline, CR, tab, DEL, valid and invalid UTF-8, and a comm
// with ESC and bytes >= 0x80: the text report (default and -R) is
// printable ASCII and one line per record, every such byte as \xNN; the
// JSON lines and the Chrome export are valid JSON and valid UTF-8, with
// valid UTF-8 kept and every other byte >= 0x80 as \u00XX.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace_test/json.h"
#include "rbtrace_test/ring_tracedat.h"
#include "rbtrace/rbtrace.h"
#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat.h"
#include "rbtrace/tracedat_reader.h"
#include "rbtrace_test/test_files.h"

RBTRACE_EVENT(esc, line, ((uint64_t, seq))((rbtrace::str, text)))

using namespace rbtrace;

namespace {

using rbtrace_test::TempDir;

std::string high_bytes() {
  std::string s;
  for (int c = 0x80; c <= 0xff; c++) s += static_cast<char>(c);
  return s;
}

// The strings written, one record each, in order.
std::vector<std::string> texts() {
  return {
      high_bytes(),                       // every byte >= 0x80
      "red:\x1b[31mX\x1b[0m:\x1b]0;t\x07",  // ESC sequences (colour, window title), BEL
      "two\nlines\r\ttab",                // newline, CR, tab
      "del\x7f",                          // DEL
      "caf\xc3\xa9",                      // valid UTF-8 (é)
      "bad\xed\xa0\x80-\xc3",             // a surrogate and a cut sequence: not UTF-8
      "back\\slash",                      // printable: as itself
  };
}
const std::string kComm = "w\x1b[2J\xe9\xff\x01";  // ESC, Latin-1 é, 0xff, SOH

// A one-CPU trace.dat holding texts() (and a comm kComm for the writer).
std::string make_trace(const std::string& dir) {
  Options o;
  o.ncpus = 1;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  o.mode = Mode::kProducerConsumer;
  auto rb = RingBuffer::create(o);
  EXPECT_TRUE(rb);
  if (!rb) return "";
  int32_t tid = 0;
  std::thread([&] {
    EXPECT_EQ(rb->bind_thread(0), 0);
    tid = static_cast<int32_t>(gettid());
    const auto t = texts();
    for (size_t i = 0; i < t.size(); i++) EXPECT_EQ(rbtrace_events::esc_line::emit(*rb, i, t[i]), 0);
    rb->unbind_thread();
  }).join();
  TraceDatInput in = rbtrace_test::tracedat_input_for(*rb);
  in.clock = "mono";  // times are not what this test is about
  in.tsc2nsec = false;
  in.cmdlines.push_back({tid, kComm});
  return rbtrace_test::ring_to_tracedat(*rb, dir, in);
}

// Renders with `fn` into a string.
template <class Fn>
std::string render(const std::string& file, Fn fn) {
  std::string err;
  auto r = TraceDatReader::open(file, &err);
  EXPECT_TRUE(r) << err;
  if (!r) return "";
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  EXPECT_EQ(fn(*r, f, &err), 0) << err;
  std::fclose(f);
  std::string out(buf, len);
  free(buf);
  return out;
}

// The text's lines (each ended by '\n').
std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  size_t b = 0;
  for (size_t e; (e = s.find('\n', b)) != std::string::npos; b = e + 1) v.push_back(s.substr(b, e - b));
  EXPECT_EQ(b, s.size()) << "text after the last newline";
  return v;
}

// "" when every byte is printable ASCII (the lines' newlines aside).
std::string non_printable(const std::string& s) {
  for (size_t i = 0; i < s.size(); i++) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c != '\n' && (c < 0x20 || c > 0x7e)) {
      char b[80];
      std::snprintf(b, sizeof b, "byte 0x%02x at %zu", c, i);
      return b;
    }
  }
  return "";
}

// Strict UTF-8 (no overlong form, no surrogate, at most U+10FFFF).
bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0, n = s.size(); i < n;) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}


// What a string must look like in the text report.
std::string escaped(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      o += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      o += b;
    }
  }
  return o;
}
// A string after JSON decoding: valid UTF-8 kept, every other byte >= 0x80
// as its Latin-1 code point (U+0080..U+00FF) in UTF-8.
std::string json_decoded(const std::string& s) {
  std::string o;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size(); i++) {
    size_t l = 0;
    for (size_t k = 2; k <= 4 && i + k <= s.size() && !l; k++)
      if (valid_utf8(s.substr(i, k)) && p[i] >= 0xc2) l = k;
    if (p[i] >= 0x80 && l) {
      o += s.substr(i, l);
      i += l - 1;
    } else {
      rbtrace_test::put_utf8(&o, p[i]);
    }
  }
  return o;
}

class ReportEscape : public ::testing::Test {
 protected:
  void SetUp() override {
    file = make_trace(dir.path);
    ASSERT_FALSE(file.empty());
  }
  TempDir dir;
  std::string file;
};

TEST_F(ReportEscape, TextIsPrintableAsciiWithEveryOtherByteAsHex) {
  for (const bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "-R" : "print fmt");
    ReportOptions ro;
    ro.raw = raw;
    const std::string out = render(file, [&](TraceDatReader& r, FILE* f, std::string* e) {
      return write_report_text(r, f, ro, e);
    });
    EXPECT_EQ(non_printable(out), "") << out;
    const auto ls = lines(out);
    const auto t = texts();
    ASSERT_EQ(ls.size(), 1 + t.size()) << "a record took more or less than one line:\n" << out;
    for (size_t i = 0; i < t.size(); i++) {
      const std::string& l = ls[1 + i];
      EXPECT_NE(l.find(escaped(kComm) + "-"), std::string::npos) << l;
      EXPECT_NE(l.find(escaped(t[i])), std::string::npos) << "record " << i << ": " << l;
    }
    // A few spelled out.
    EXPECT_NE(out.find("\\x80\\x81\\x82"), std::string::npos);
    EXPECT_NE(out.find("\\xfe\\xff"), std::string::npos);
    EXPECT_NE(out.find("red:\\x1b[31mX\\x1b[0m:\\x1b]0;t\\x07"), std::string::npos);
    EXPECT_NE(out.find("two\\x0alines\\x0d\\x09tab"), std::string::npos);
    EXPECT_NE(out.find("del\\x7f"), std::string::npos);
    EXPECT_NE(out.find("caf\\xc3\\xa9"), std::string::npos);
    EXPECT_NE(out.find("back\\slash"), std::string::npos);
    EXPECT_NE(out.find("w\\x1b[2J\\xe9\\xff\\x01-"), std::string::npos);
  }
}

TEST_F(ReportEscape, JsonIsValidJsonAndUtf8AndCarriesTheBytes) {
  const std::string out = render(file, [](TraceDatReader& r, FILE* f, std::string* e) {
    return write_report_json(r, f, e);
  });
  EXPECT_TRUE(valid_utf8(out));
  const auto ls = lines(out);
  const auto t = texts();
  ASSERT_EQ(ls.size(), t.size());
  for (size_t i = 0; i < t.size(); i++) {
    rbtrace_test::JVal v;
    rbtrace_test::JParser j{ls[i]};
    ASSERT_TRUE(j.document(&v)) << "invalid JSON near byte " << j.i << ": " << ls[i];
    std::vector<std::string> strings;
    rbtrace_test::all_strings(v, &strings);
    // Decoded: the comm, and the text field's value, as json_decoded says.
    bool comm = false, text = false;
    for (const std::string& s : strings) {
      comm = comm || s == json_decoded(kComm);
      text = text || s == json_decoded(t[i]);
    }
    EXPECT_TRUE(comm) << ls[i];
    EXPECT_TRUE(text) << "record " << i << ": " << ls[i];
  }
  // Valid UTF-8 kept as is; other high bytes as \u00XX; controls escaped.
  EXPECT_NE(out.find("caf\xc3\xa9"), std::string::npos);
  EXPECT_NE(out.find("bad\\u00ed\\u00a0\\u0080-\\u00c3"), std::string::npos) << out;
  EXPECT_NE(out.find("\\u0080\\u0081"), std::string::npos);
  EXPECT_NE(out.find("red:\\u001b[31mX"), std::string::npos);
  EXPECT_NE(out.find("two\\nlines\\r\\ttab"), std::string::npos);
  EXPECT_NE(out.find("del\\u007f"), std::string::npos);
  EXPECT_NE(out.find("\"comm\":\"w\\u001b[2J\\u00e9\\u00ff\\u0001\""), std::string::npos) << out;
}

TEST_F(ReportEscape, ChromeExportIsValidJsonAndUtf8) {
  const std::string out = render(file, [](TraceDatReader& r, FILE* f, std::string* e) {
    return write_chrome_json(r, f, 1, e);
  });
  EXPECT_TRUE(valid_utf8(out));
  rbtrace_test::JVal v;
  rbtrace_test::JParser j{out};
  ASSERT_TRUE(j.document(&v)) << "invalid JSON near byte " << j.i;
  std::vector<std::string> strings;
  rbtrace_test::all_strings(v, &strings);
  bool comm = false;
  for (const std::string& s : strings) comm = comm || s == json_decoded(kComm);
  EXPECT_TRUE(comm) << "thread_name";
}

}  // namespace
