// tracedat_text.h - small text helpers of the trace.dat reader, shared by
// its event-format parser, its section parser and its value printing
// (internal to rbtrace::tracedat).
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace rbtrace::tracedat {

// The shortest text that reads back as the same value: "1.5", "0.1",
// "-2.99999995e+38"; "nan", "-nan", "inf", "-inf". `single`: the value
// came from a float (it reads back as that float).
inline std::string float_text(double d, bool single) {
  if (std::isnan(d)) return std::signbit(d) ? "-nan" : "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char b[40];
  for (int prec = 1; prec <= 17; prec++) {
    std::snprintf(b, sizeof b, "%.*g", prec, d);
    if (single ? std::strtof(b, nullptr) == static_cast<float>(d) : std::strtod(b, nullptr) == d) break;
  }
  return b;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// c is one of the characters of `set` (never true for '\0', unlike strchr).
inline bool one_of(char c, std::string_view set) {
  return c != '\0' && set.find(c) != std::string_view::npos;
}

// Strict decimal: digits only, at most `max`.
inline bool parse_u64(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  if (v > max) return false;
  *out = v;
  return true;
}

// Strict hexadecimal (no 0x): 1..16 digits.
inline bool parse_hex(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

// Strict signed integer as strtoll(s, 0) reads it (decimal, 0x hex, octal).
inline bool parse_i64_c(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 32) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

inline bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

inline bool is_ident(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (char c : s) {
    if (!is_ident_char(c)) return false;
  }
  return true;
}

// Appends the bytes [p, p + n) as text safe for a terminal: printable
// ASCII (0x20..0x7e) as itself, every other byte — control bytes, DEL, and
// every byte >= 0x80 (so UTF-8 too: no byte of a record reaches a terminal
// as anything but printable ASCII) — as \xNN (two lower-case hex digits).
// A backslash stays itself (trace-cmd's text for ASCII strings is kept),
// so the text is not reversible; `rbtrace report --json` is. Used for every
// string of a record, a comm and a print fmt's literal text.
inline void append_escaped(std::string* out, const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f) {
      *out += static_cast<char>(c);
    } else {
      const char b[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
      out->append(b, 4);
    }
  }
}
inline void append_escaped(std::string* out, std::string_view s) {
  append_escaped(out, reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

// The lines of `s` (split at '\n'; a last line without '\n' counts).
inline std::vector<std::string_view> split_lines(std::string_view s) {
  std::vector<std::string_view> v;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find('\n', b);
    if (e == std::string_view::npos) e = s.size();
    v.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return v;
}

}  // namespace rbtrace::tracedat
