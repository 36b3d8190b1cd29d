// tracedat_reader.cc - the validating trace.dat reader (see
// rbtrace/tracedat_reader.h for the contract, tracedat_internal.h for the
// layout).
//
// Rule of the parser: every length, count and offset read from the file is
// compared with the bytes left in the file (and with a fixed cap) before it
// is used to allocate, read or index anything. Every failure names the
// section and the file offset.
#include "rbtrace/tracedat_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "rbtrace/format.h"
#include "tracedat_internal.h"

namespace rbtrace {

namespace td = tracedat;

namespace {

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// ---------------------------------------------------------------------------
// Byte sources: a file read with pread, or bytes in memory.
// ---------------------------------------------------------------------------
class Source {
 public:
  virtual ~Source() = default;
  uint64_t size() const { return size_; }
  // Exactly n bytes at off, or false with *err.
  virtual bool read(uint64_t off, void* dst, size_t n, std::string* err) = 0;

 protected:
  uint64_t size_ = 0;
};

class FdSource final : public Source {
 public:
  FdSource(int fd, uint64_t size) : fd_(fd) { size_ = size; }
  ~FdSource() override { ::close(fd_); }
  bool read(uint64_t off, void* dst, size_t n, std::string* err) override {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        *err = "read error at offset " + std::to_string(off) + ": " + std::strerror(errno);
        return false;
      }
      if (r == 0) {
        *err = "the file ended at offset " + std::to_string(off) + " (shrunk while reading?)";
        return false;
      }
      p += r;
      off += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    return true;
  }

 private:
  int fd_;
};

class MemSource final : public Source {
 public:
  MemSource(const void* data, size_t size) : data_(static_cast<const unsigned char*>(data)) {
    size_ = size;
  }
  bool read(uint64_t off, void* dst, size_t n, std::string* err) override {
    if (off > size_ || n > size_ - off) {
      *err = "read beyond the end at offset " + std::to_string(off);
      return false;
    }
    if (n) std::memcpy(dst, data_ + off, n);
    return true;
  }

 private:
  const unsigned char* data_;
};

// ---------------------------------------------------------------------------
// Sequential header parser with bounds checks.
// ---------------------------------------------------------------------------
class Parser {
 public:
  Parser(Source& s, std::string* err) : src_(s), err_(err) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return src_.size() - pos_; }

  bool fail(const std::string& what) {
    *err_ = what;
    return false;
  }
  bool need(uint64_t n, const std::string& what) {
    if (n > left())
      return fail("truncated file: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                  std::to_string(pos_) + ", " + std::to_string(left()) + " left");
    return true;
  }
  bool bytes(void* dst, size_t n, const std::string& what) {
    if (!need(n, what)) return false;
    std::string e;
    if (!src_.read(pos_, dst, n, &e)) return fail(what + ": " + e);
    pos_ += n;
    return true;
  }
  template <class T>
  bool num(T* v, const std::string& what) {
    return bytes(v, sizeof(T), what);  // little endian file on a little endian host
  }
  // `n` bytes of text; n was checked against what is left first.
  bool text(uint64_t n, uint64_t cap, std::string* out, const std::string& what) {
    if (n > cap)
      return fail(what + ": length " + std::to_string(n) + " at offset " +
                  std::to_string(pos_ - 8) + " exceeds the limit of " + std::to_string(cap));
    if (!need(n, what)) return false;
    out->resize(static_cast<size_t>(n));
    return bytes(out->data(), static_cast<size_t>(n), what);
  }
  bool skip(uint64_t n, const std::string& what) {
    if (!need(n, what)) return false;
    pos_ += n;
    return true;
  }
  // A NUL-terminated string of at most `max` characters.
  bool cstr(std::string* out, size_t max, const std::string& what) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(max + 1, left()));
    std::string buf(n, '\0');
    std::string e;
    if (n && !src_.read(pos_, buf.data(), n, &e)) return fail(what + ": " + e);
    const size_t z = buf.find('\0');
    if (z == std::string::npos) {
      if (n < max + 1) return need(n + 1, what + " (no terminating NUL)");
      return fail(what + " at offset " + std::to_string(pos_) + " is longer than " +
                  std::to_string(max) + " bytes or not NUL-terminated");
    }
    out->assign(buf, 0, z);
    pos_ += z + 1;
    return true;
  }
  bool expect(const char* lit, size_t n, const std::string& what) {
    char buf[16];
    const uint64_t at = pos_;
    if (!bytes(buf, n, what)) return false;
    if (std::memcmp(buf, lit, n) != 0)
      return fail("expected the " + what + " marker at offset " + std::to_string(at));
    return true;
  }

 private:
  Source& src_;
  std::string* err_;
  uint64_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// Small text helpers.
// ---------------------------------------------------------------------------
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}
bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
// c is one of the characters of `set` (never true for '\0', unlike strchr).
bool one_of(char c, std::string_view set) { return c != '\0' && set.find(c) != std::string_view::npos; }
bool parse_u64(std::string_view s, uint64_t max, uint64_t* out) {
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
bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_ident(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (char c : s) {
    if (!is_ident_char(c)) return false;
  }
  return true;
}
std::vector<std::string_view> split_lines(std::string_view s) {
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
// Strict signed integer as strtoll(s, 0) reads it (decimal, 0x hex, octal).
bool parse_i64_c(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 32) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

// ---------------------------------------------------------------------------
// Event formats.
// ---------------------------------------------------------------------------
struct FieldLine {
  std::string_view decl;
  uint64_t offset = 0, size = 0, is_signed = 0;
  bool has_signed = false;
};

// "field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;"
bool parse_field_line(std::string_view line, FieldLine* f, std::string* why) {
  line = trim(line);
  if (!starts_with(line, "field:")) {
    *why = "not a field line";
    return false;
  }
  bool have_off = false, have_size = false;
  size_t b = 0;
  int part = 0;
  while (b < line.size()) {
    size_t e = line.find(';', b);
    if (e == std::string_view::npos) e = line.size();
    const std::string_view p = trim(line.substr(b, e - b));
    b = e + 1;
    if (part++ == 0) {
      f->decl = trim(p.substr(6));
      continue;
    }
    if (p.empty()) continue;
    if (starts_with(p, "offset:")) {
      if (!parse_u64(p.substr(7), kMaxPageSize, &f->offset)) {
        *why = "bad offset";
        return false;
      }
      have_off = true;
    } else if (starts_with(p, "size:")) {
      if (!parse_u64(p.substr(5), kMaxPageSize, &f->size)) {
        *why = "bad size";
        return false;
      }
      have_size = true;
    } else if (starts_with(p, "signed:")) {
      if (!parse_u64(p.substr(7), 1, &f->is_signed)) {
        *why = "bad signed";
        return false;
      }
      f->has_signed = true;
    } else {
      *why = "unknown attribute '" + std::string(p.substr(0, 32)) + "'";
      return false;
    }
  }
  if (f->decl.empty() || !have_off || !have_size) {
    *why = "declaration, offset or size missing";
    return false;
  }
  return true;
}

// Splits "TYPE NAME" / "TYPE NAME[N]" into the field's type and name.
bool parse_decl(std::string_view decl, TraceField* f, bool* is_array) {
  *is_array = false;
  std::string suffix;
  if (!decl.empty() && decl.back() == ']') {
    const size_t open = decl.rfind('[');
    if (open == std::string_view::npos) return false;
    suffix = std::string(decl.substr(open));
    decl = trim(decl.substr(0, open));
    *is_array = true;
  }
  size_t n = decl.size();
  while (n > 0 && is_ident_char(decl[n - 1])) n--;
  const std::string_view name = decl.substr(n);
  if (!is_ident(name)) return false;
  std::string_view type = trim(decl.substr(0, n));
  if (type.empty()) return false;
  f->name = std::string(name);
  f->type = std::string(type) + suffix;
  return true;
}

// print fmt: "format", ARG, ARG... with ARG = REC->field or __get_str(field).
void parse_print_fmt(TraceEventFormat* ev) {
  ev->print_ok = false;
  ev->print_args.clear();
  ev->print_format.clear();
  std::string_view s = trim(ev->print_fmt);
  if (s.empty() || s[0] != '"') return;
  std::string fmt;
  size_t i = 1;
  for (;; i++) {
    if (i >= s.size()) return;  // unterminated
    const char c = s[i];
    if (c == '"') break;
    if (c == '\\') {
      if (++i >= s.size()) return;
      switch (s[i]) {
        case 'n': fmt += '\n'; break;
        case 't': fmt += '\t'; break;
        case 'r': fmt += '\r'; break;
        case '"': fmt += '"'; break;
        case '\\': fmt += '\\'; break;
        default: return;
      }
      continue;
    }
    fmt += c;
  }
  std::string_view rest = s.substr(i + 1);
  std::vector<int> args;
  int depth = 0;
  size_t b = 0;
  std::vector<std::string_view> parts;
  for (size_t k = 0; k <= rest.size(); k++) {
    if (k == rest.size() || (rest[k] == ',' && depth == 0)) {
      parts.push_back(trim(rest.substr(b, k - b)));
      b = k + 1;
      continue;
    }
    if (rest[k] == '(') depth++;
    if (rest[k] == ')') depth--;
    if (depth < 0) return;
  }
  if (parts.empty() || !parts[0].empty()) return;
  for (size_t k = 1; k < parts.size(); k++) {
    std::string_view a = parts[k];
    std::string_view name;
    bool want_string = false;
    if (starts_with(a, "REC->")) {
      name = a.substr(5);
    } else if (starts_with(a, "__get_str(") && a.back() == ')') {
      name = trim(a.substr(10, a.size() - 11));
      want_string = true;
    } else {
      return;
    }
    int idx = -1;
    for (size_t f = 0; f < ev->fields.size(); f++) {
      if (ev->fields[f].name == name) idx = static_cast<int>(f);
    }
    if (idx < 0) return;
    if (want_string && ev->fields[static_cast<size_t>(idx)].kind != TraceField::Kind::kDynString) return;
    args.push_back(idx);
  }
  // Count and check the conversions: %[-+ #0]*[0-9]*(.[0-9]*)?(hh|h|ll|l|z|j|t)?[diouxXcsp]
  size_t nconv = 0;
  for (size_t k = 0; k < fmt.size(); k++) {
    if (fmt[k] != '%') continue;
    if (++k >= fmt.size()) return;
    if (fmt[k] == '%') continue;
    while (k < fmt.size() && one_of(fmt[k], "-+ #0")) k++;
    size_t digits = 0;
    while (k < fmt.size() && fmt[k] >= '0' && fmt[k] <= '9') k++, digits++;
    if (digits > 3) return;
    if (k < fmt.size() && fmt[k] == '.') {
      k++;
      digits = 0;
      while (k < fmt.size() && fmt[k] >= '0' && fmt[k] <= '9') k++, digits++;
      if (digits > 3) return;
    }
    while (k < fmt.size() && one_of(fmt[k], "hlzjt")) k++;
    if (k >= fmt.size() || !one_of(fmt[k], "diouxXcsp")) return;
    nconv++;
  }
  if (nconv != args.size()) return;
  ev->print_format = std::move(fmt);
  ev->print_args = std::move(args);
  ev->print_ok = true;
}

bool parse_format(std::string_view text, const std::string& system, TraceEventFormat* ev,
                  std::string* err) {
  ev->system = system;
  bool have_name = false, have_id = false, in_format = false, have_print = false;
  bool common_done = false;
  const auto lines = split_lines(text);
  for (size_t ln = 0; ln < lines.size(); ln++) {
    const std::string_view raw = lines[ln];
    const std::string_view line = trim(raw);
    const std::string where = "line " + std::to_string(ln + 1);
    if (line.empty()) {
      if (in_format && !ev->fields.empty()) common_done = true;
      continue;
    }
    if (have_print) {
      *err = where + ": text after the print fmt";
      return false;
    }
    if (starts_with(line, "name:")) {
      if (have_name) {
        *err = where + ": a second name";
        return false;
      }
      ev->name = std::string(trim(line.substr(5)));
      if (!is_ident(ev->name)) {
        *err = where + ": bad event name";
        return false;
      }
      have_name = true;
    } else if (starts_with(line, "ID:")) {
      uint64_t id = 0;
      if (have_id || !parse_u64(trim(line.substr(3)), 65535, &id)) {
        *err = where + ": bad or repeated ID (0..65535)";
        return false;
      }
      ev->id = static_cast<uint16_t>(id);
      have_id = true;
    } else if (line == "format:") {
      in_format = true;
    } else if (starts_with(line, "field:")) {
      if (!in_format) {
        *err = where + ": field before 'format:'";
        return false;
      }
      if (ev->fields.size() >= td::kMaxFields) {
        *err = "more than " + std::to_string(td::kMaxFields) + " fields";
        return false;
      }
      FieldLine fl;
      std::string why;
      if (!parse_field_line(line, &fl, &why)) {
        *err = where + ": " + why;
        return false;
      }
      TraceField f;
      bool is_array = false;
      if (!parse_decl(fl.decl, &f, &is_array)) {
        *err = where + ": bad field declaration '" + std::string(fl.decl.substr(0, 64)) + "'";
        return false;
      }
      f.offset = static_cast<uint32_t>(fl.offset);
      f.size = static_cast<uint32_t>(fl.size);
      f.is_signed = fl.is_signed != 0;
      if (starts_with(f.type, "__data_loc")) {
        if (f.size != 4) {
          *err = where + ": __data_loc field '" + f.name + "' is not 4 bytes";
          return false;
        }
        f.kind = TraceField::Kind::kDynString;
      } else if (is_array && f.type.find("char") != std::string::npos && f.size > 0) {
        f.kind = TraceField::Kind::kCharArray;
      } else if (!is_array && (f.size == 1 || f.size == 2 || f.size == 4 || f.size == 8)) {
        f.kind = TraceField::Kind::kInt;
      } else {
        f.kind = TraceField::Kind::kBytes;
      }
      for (const TraceField& o : ev->fields) {
        if (o.name == f.name) {
          *err = where + ": field '" + f.name + "' declared twice";
          return false;
        }
      }
      const bool common = starts_with(f.name, "common_");
      if (!common_done && common) ev->first_field = ev->fields.size() + 1;
      ev->min_size = std::max(ev->min_size, f.offset + f.size);
      ev->fields.push_back(std::move(f));
    } else if (starts_with(line, "print fmt:")) {
      ev->print_fmt = std::string(trim(line.substr(10)));
      have_print = true;
    } else {
      *err = where + ": unexpected text '" + std::string(line.substr(0, 40)) + "'";
      return false;
    }
  }
  if (!have_name || !have_id || !in_format) {
    *err = "missing 'name:', 'ID:' or 'format:'";
    return false;
  }
  parse_print_fmt(ev);
  return true;
}

// header_page: timestamp at 0 (8 bytes), commit at 8 (8 bytes, the long
// size), data at 16.
bool check_header_page(std::string_view text, uint32_t page_size, std::string* err) {
  bool ts = false, commit = false, data = false;
  for (std::string_view line : split_lines(text)) {
    line = trim(line);
    if (line.empty()) continue;
    FieldLine fl;
    std::string why;
    if (!parse_field_line(line, &fl, &why)) {
      *err = "header_page: " + why;
      return false;
    }
    std::string_view d = fl.decl;
    size_t n = d.size();
    while (n > 0 && is_ident_char(d[n - 1])) n--;
    const std::string_view name = d.substr(n);
    if (name == "timestamp") ts = fl.offset == 0 && fl.size == 8;
    if (name == "commit") commit = fl.offset == 8 && fl.size == 8;
    if (name == "data") data = fl.offset == 16 && fl.size <= page_size - 16;
  }
  if (!ts || !commit || !data) {
    *err = "header_page: expected timestamp at 0 (8 bytes), commit at 8 (8 bytes) and data at 16";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Field values and text.
// ---------------------------------------------------------------------------
uint64_t load_le(const unsigned char* p, uint32_t n) {
  uint64_t v = 0;
  std::memcpy(&v, p, n);  // n <= 8; little endian
  return v;
}

void append_escaped(std::string* out, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = p[i];
    if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      *out += b;
    } else {
      *out += static_cast<char>(c);
    }
  }
}

std::string value_text(const TraceValue& v) {
  switch (v.kind) {
    case TraceValue::Kind::kSigned: return std::to_string(v.i);
    case TraceValue::Kind::kUnsigned: return std::to_string(v.u);
    case TraceValue::Kind::kString: {
      std::string s;
      append_escaped(&s, reinterpret_cast<const unsigned char*>(v.s.data()), v.s.size());
      return s;
    }
    case TraceValue::Kind::kBytes: {
      std::string s;
      char b[4];
      for (unsigned char c : v.s) {
        std::snprintf(b, sizeof b, "%02x", c);
        s += b;
      }
      return s;
    }
  }
  return {};
}

// Pads `body` to `width` (C printf rules: '-' left-justifies).
void pad_into(std::string* out, const std::string& body, std::string_view flags, int width) {
  const size_t w = width > 0 ? static_cast<size_t>(width) : 0;
  const bool left = flags.find('-') != std::string_view::npos;
  if (!left && body.size() < w) out->append(w - body.size(), ' ');
  *out += body;
  if (left && body.size() < w) out->append(w - body.size(), ' ');
}

// One printf conversion, done here (the file's format text never reaches
// printf): flags "-+ #0", width and precision up to 999, length modifiers
// hh h l ll z j t, conversions d i u o x X c s p.
void format_one(std::string* out, std::string_view flags, int width, int prec, std::string_view len,
                char conv, const TraceValue& v) {
  const bool is_num = v.kind == TraceValue::Kind::kSigned || v.kind == TraceValue::Kind::kUnsigned;
  if (conv == 's' || !is_num) {
    std::string s = value_text(v);
    if (conv == 's' && prec >= 0 && s.size() > static_cast<size_t>(prec)) s.resize(static_cast<size_t>(prec));
    pad_into(out, s, flags, width);
    return;
  }
  const uint64_t raw = v.kind == TraceValue::Kind::kSigned ? static_cast<uint64_t>(v.i) : v.u;
  if (conv == 'c') {
    std::string s;
    const unsigned char c = static_cast<unsigned char>(raw);
    append_escaped(&s, &c, 1);
    pad_into(out, s, flags, width);
    return;
  }
  if (conv == 'p') {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(raw));
    pad_into(out, b, flags, width);
    return;
  }
  // The C argument type follows the length modifier.
  const bool l64 = len == "l" || len == "ll" || len == "z" || len == "j" || len == "t";
  bool negative = false;
  uint64_t mag;
  if (conv == 'd' || conv == 'i') {
    int64_t x;
    if (l64) x = static_cast<int64_t>(raw);
    else if (len == "h") x = static_cast<int16_t>(raw);
    else if (len == "hh") x = static_cast<int8_t>(raw);
    else x = static_cast<int32_t>(raw);
    negative = x < 0;
    mag = negative ? 0 - static_cast<uint64_t>(x) : static_cast<uint64_t>(x);
  } else {
    if (l64) mag = raw;
    else if (len == "h") mag = static_cast<uint16_t>(raw);
    else if (len == "hh") mag = static_cast<uint8_t>(raw);
    else mag = static_cast<uint32_t>(raw);
  }
  const unsigned base = conv == 'o' ? 8 : (conv == 'x' || conv == 'X') ? 16 : 10;
  const char* digits = conv == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string num;
  for (uint64_t m = mag; m != 0; m /= base) num.insert(num.begin(), digits[m % base]);
  if (mag == 0 && prec != 0) num = "0";
  if (prec > 0 && num.size() < static_cast<size_t>(prec)) num.insert(0, static_cast<size_t>(prec) - num.size(), '0');
  const bool alt = flags.find('#') != std::string_view::npos;
  if (alt && conv == 'o' && (num.empty() || num[0] != '0')) num.insert(0, "0");
  std::string prefix;
  if (negative) prefix = "-";
  else if ((conv == 'd' || conv == 'i') && flags.find('+') != std::string_view::npos) prefix = "+";
  else if ((conv == 'd' || conv == 'i') && flags.find(' ') != std::string_view::npos) prefix = " ";
  if (alt && mag != 0 && conv == 'x') prefix += "0x";
  if (alt && mag != 0 && conv == 'X') prefix += "0X";
  const bool zero = flags.find('0') != std::string_view::npos && flags.find('-') == std::string_view::npos &&
                    prec < 0;
  if (zero && width > 0 && prefix.size() + num.size() < static_cast<size_t>(width))
    num.insert(0, static_cast<size_t>(width) - prefix.size() - num.size(), '0');
  pad_into(out, prefix + num, flags, width);
}

}  // namespace

// ---------------------------------------------------------------------------
// The reader.
// ---------------------------------------------------------------------------
struct TraceDatReader::Impl {
  std::unique_ptr<Source> src;
  uint32_t page_size = 0;
  std::string clock = "local";
  bool tsc2nsec = false;
  uint32_t mult = 0, shift = 0;
  int64_t ts_offset = 0;
  std::vector<TraceEventFormat> events;
  std::unordered_map<uint16_t, size_t> by_id;
  std::map<int32_t, std::string> cmdlines;
  std::vector<TraceCpuData> cpus;
  uint64_t header_end = 0;

  struct Cursor {
    uint64_t npages = 0;
    uint64_t next_page = 0;
    std::vector<unsigned char> page;
    bool loaded = false;
    uint64_t page_off = 0;  // file offset of the loaded page
    PageWalker walker{nullptr, 0, 0};
    bool missed = false, missed_known = true;
    uint64_t missed_count = 0;
    bool have_peek = false;
    TraceRecord peek;
  };
  std::vector<Cursor> cursors;
  std::vector<TraceCpuCounts> counts;
  std::string error;
  bool failed = false;

  bool parse(std::string* err);
  bool parse_options(Parser& p, bool* trace_clock);
  int peek(uint32_t cpu);
  int fail(const std::string& e) {
    error = e;
    failed = true;
    return -1;
  }
  uint64_t to_ns(uint64_t ts) const {
    uint64_t v = ts;
    if (tsc2nsec) v = static_cast<uint64_t>((static_cast<unsigned __int128>(ts) * mult) >> shift);
    return v + static_cast<uint64_t>(ts_offset);
  }
  void reset() {
    cursors.assign(cpus.size(), Cursor{});
    for (size_t c = 0; c < cpus.size(); c++) cursors[c].npages = cpus[c].size / page_size;
    counts.assign(cpus.size(), TraceCpuCounts{});
    error.clear();
    failed = false;
  }
};

bool TraceDatReader::Impl::parse_options(Parser& p, bool* trace_clock) {
  std::vector<std::string> stats(cpus.size());
  size_t next_stat = 0;
  for (;;) {
    const uint64_t at = p.pos();
    uint16_t id = 0;
    if (!p.num(&id, "option id")) return false;
    if (id == td::kOptDone) break;
    uint32_t size = 0;
    if (!p.num(&size, "option size")) return false;
    const std::string what = "option " + std::to_string(id) + " at offset " + std::to_string(at);
    if (!p.need(size, what)) return false;
    switch (id) {
      case td::kOptCpuStat: {
        std::string t;
        if (!p.text(size, size, &t, what)) return false;
        const size_t z = t.find('\0');
        if (z != std::string::npos) t.resize(z);
        // "CPU: N\n..." (leading blank lines allowed); else the next CPU.
        size_t b = t.find_first_not_of("\n ");
        size_t cpu = next_stat;
        if (b != std::string::npos && t.compare(b, 5, "CPU: ") == 0) {
          const size_t e = t.find('\n', b);
          uint64_t n = 0;
          if (!parse_u64(trim(std::string_view(t).substr(b + 5, e == std::string::npos ? std::string::npos : e - b - 5)),
                         UINT32_MAX, &n))
            return p.fail("CPUSTAT " + what + ": bad CPU number");
          cpu = static_cast<size_t>(n);
        }
        if (cpu >= cpus.size())
          return p.fail("CPUSTAT " + what + ": CPU " + std::to_string(cpu) + " but the file has " +
                        std::to_string(cpus.size()) + " CPUs");
        cpus[cpu].stats = std::move(t);
        next_stat = cpu + 1;
        break;
      }
      case td::kOptTraceClock:
        *trace_clock = true;
        if (!p.skip(size, what)) return false;
        break;
      case td::kOptTsc2Nsec: {
        if (size < 16) return p.fail("TSC2NSEC " + what + ": " + std::to_string(size) + " bytes, needs 16");
        uint64_t ignored_offset = 0;
        if (!p.num(&mult, what) || !p.num(&shift, what) || !p.num(&ignored_offset, what) ||
            !p.skip(size - 16, what))
          return false;
        if (mult == 0 || shift > 32)
          return p.fail("TSC2NSEC " + what + ": multiplier 0 or shift " + std::to_string(shift) +
                        " > 32");
        tsc2nsec = true;
        break;
      }
      case td::kOptOffset:
      case td::kOptDate: {
        std::string t;
        if (!p.text(size, 64, &t, what)) return false;
        const size_t z = t.find('\0');
        if (z == std::string::npos) return p.fail(what + ": number is not NUL-terminated");
        t.resize(z);
        int64_t v = 0;
        if (!parse_i64_c(t, &v)) return p.fail(what + ": bad number '" + t.substr(0, 32) + "'");
        if (id == td::kOptDate) {
          if (v > INT64_MAX / 1000 || v < INT64_MIN / 1000) return p.fail(what + ": DATE out of range");
          v *= 1000;  // microseconds to ns
        }
        if ((v > 0 && ts_offset > INT64_MAX - v) || (v < 0 && ts_offset < INT64_MIN - v))
          return p.fail(what + ": time offsets overflow");
        ts_offset += v;
        break;
      }
      case td::kOptBuffer:
        return p.fail(what + ": buffer instances (option BUFFER) are not supported");
      default:
        if (!p.skip(size, what)) return false;  // unknown to us: skip, as trace-cmd does
        break;
    }
  }
  return true;
}

bool TraceDatReader::Impl::parse(std::string* err) {
  Parser p(*src, err);
  // Initial format.
  char magic[td::kMagicLen];
  if (!p.bytes(magic, td::kMagicLen, "the trace.dat magic")) return false;
  if (std::memcmp(magic, td::kMagic, td::kMagicLen) != 0)
    return p.fail("not a trace.dat file (bad magic)");
  std::string version;
  if (!p.cstr(&version, td::kMaxVersionString, "version string")) return false;
  if (version != "6")
    return p.fail("unsupported trace.dat version '" + version.substr(0, 16) +
                  "' (rbtrace reads version 6)");
  uint8_t endian = 0, long_size = 0;
  if (!p.num(&endian, "endianness") || !p.num(&long_size, "long size") ||
      !p.num(&page_size, "page size"))
    return false;
  if (endian == 1) return p.fail("big-endian trace.dat files are not supported");
  if (endian != 0) return p.fail("bad endianness byte " + std::to_string(endian));
  if (long_size != 8) return p.fail("long size " + std::to_string(long_size) + " is not supported (8 only)");
  if (page_size < kMinPageSize || page_size > kMaxPageSize || (page_size & (page_size - 1)) != 0)
    return p.fail("page size " + std::to_string(page_size) +
                  " is not a power of two between 4096 and 1048576");

  // Header info.
  uint64_t n = 0;
  std::string text;
  if (!p.expect(td::kHeaderPage, sizeof td::kHeaderPage, "header_page") ||
      !p.num(&n, "header_page size") || !p.text(n, td::kMaxHeaderText, &text, "header_page"))
    return false;
  if (!check_header_page(text, page_size, err)) return false;
  if (!p.expect(td::kHeaderEvent, sizeof td::kHeaderEvent, "header_event") ||
      !p.num(&n, "header_event size") || !p.text(n, td::kMaxHeaderText, &text, "header_event"))
    return false;
  if (text.find("type_len") == std::string::npos || text.find("time_delta") == std::string::npos)
    return p.fail("header_event: not the ring buffer event header (no type_len/time_delta)");

  auto add_event = [&](const std::string& system, uint64_t at) -> bool {
    uint64_t len = 0;
    std::string fmt;
    if (!p.num(&len, "event format size") || !p.text(len, td::kMaxFormatText, &fmt, "event format"))
      return false;
    if (events.size() >= td::kMaxEvents) return p.fail("more than 65536 event formats");
    TraceEventFormat ev;
    std::string why;
    if (!parse_format(fmt, system, &ev, &why))
      return p.fail("event format at offset " + std::to_string(at) + " (system " + system +
                    "): " + why);
    if (by_id.count(ev.id))
      return p.fail("event format at offset " + std::to_string(at) + ": ID " +
                    std::to_string(ev.id) + " used twice");
    by_id[ev.id] = events.size();
    events.push_back(std::move(ev));
    return true;
  };

  // ftrace formats.
  uint32_t count = 0;
  if (!p.num(&count, "ftrace format count")) return false;
  if (count > td::kMaxFtraceFormats || count > p.left() / 8)
    return p.fail("ftrace format count " + std::to_string(count) + " exceeds " +
                  std::to_string(td::kMaxFtraceFormats) + " or the " + std::to_string(p.left()) +
                  " bytes left");
  for (uint32_t i = 0; i < count; i++) {
    if (!add_event("ftrace", p.pos())) return false;
  }
  // Event formats by system.
  uint32_t systems = 0;
  if (!p.num(&systems, "event system count")) return false;
  if (systems > td::kMaxSystems)
    return p.fail("event system count " + std::to_string(systems) + " exceeds " +
                  std::to_string(td::kMaxSystems));
  if (systems > p.left() / 6)
    return p.fail("truncated file: event system count " + std::to_string(systems) + " needs at least " +
                  std::to_string(uint64_t{systems} * 6) + " bytes, " + std::to_string(p.left()) + " left");
  for (uint32_t s = 0; s < systems; s++) {
    std::string sys;
    if (!p.cstr(&sys, td::kMaxSystemName, "event system name")) return false;
    if (!is_ident(sys)) return p.fail("bad event system name at offset " + std::to_string(p.pos()));
    if (!p.num(&count, "event count of system " + sys)) return false;
    if (count > td::kMaxEvents || count > p.left() / 8)
      return p.fail("event count " + std::to_string(count) + " of system " + sys +
                    " exceeds 65536 or the " + std::to_string(p.left()) + " bytes left");
    for (uint32_t i = 0; i < count; i++) {
      if (!add_event(sys, p.pos())) return false;
    }
  }
  // kallsyms and printk formats: not used, skipped.
  uint32_t len32 = 0;
  if (!p.num(&len32, "kallsyms size") || !p.skip(len32, "kallsyms")) return false;
  if (!p.num(&len32, "printk size") || !p.skip(len32, "printk formats")) return false;
  // cmdlines.
  if (!p.num(&n, "cmdlines size") || !p.text(n, td::kMaxCmdlines, &text, "cmdlines")) return false;
  {
    const auto lines = split_lines(text);
    for (size_t i = 0; i < lines.size(); i++) {
      const std::string_view l = lines[i];
      if (l.empty()) continue;
      const size_t sp = l.find(' ');
      std::string_view num = l.substr(0, sp);
      bool neg = false;
      if (!num.empty() && num[0] == '-') {
        neg = true;
        num.remove_prefix(1);
      }
      uint64_t pid = 0;
      if (sp == std::string_view::npos || sp + 1 >= l.size() || !parse_u64(num, INT32_MAX, &pid))
        return p.fail("cmdlines: line " + std::to_string(i + 1) + " is not 'pid comm'");
      cmdlines[neg ? -static_cast<int32_t>(pid) : static_cast<int32_t>(pid)] =
          std::string(l.substr(sp + 1, 256));
    }
  }
  // CPU count.
  uint32_t ncpus = 0;
  if (!p.num(&ncpus, "CPU count")) return false;
  if (ncpus > td::kMaxCpus)
    return p.fail("CPU count " + std::to_string(ncpus) + " exceeds " + std::to_string(td::kMaxCpus));
  if (uint64_t{ncpus} * 16 > p.left())
    return p.fail("truncated file: CPU count " + std::to_string(ncpus) + " needs a " +
                  std::to_string(uint64_t{ncpus} * 16) + "-byte flyrecord table, " +
                  std::to_string(p.left()) + " bytes left");
  cpus.resize(ncpus);

  // Options, then flyrecord.
  char kind[10];
  const uint64_t kind_at = p.pos();
  if (!p.bytes(kind, 10, "options/flyrecord marker")) return false;
  bool trace_clock = false;
  if (std::memcmp(kind, td::kOptions, 10) == 0) {
    if (!parse_options(p, &trace_clock)) return false;
    if (!p.bytes(kind, 10, "flyrecord marker")) return false;
  }
  if (std::memcmp(kind, td::kLatency, 10) == 0)
    return p.fail("latency traces (\"latency\" section) are not supported");
  if (std::memcmp(kind, td::kFlyrecord, 10) != 0)
    return p.fail("expected \"options\" or \"flyrecord\" at offset " + std::to_string(kind_at));
  for (uint32_t c = 0; c < ncpus; c++) {
    if (!p.num(&cpus[c].offset, "CPU data offset") || !p.num(&cpus[c].size, "CPU data size"))
      return false;
  }
  if (trace_clock) {
    if (!p.num(&n, "trace clock size") || !p.text(n, td::kMaxClockText, &text, "trace clock"))
      return false;
    // "local [x86-tsc] ..." - the bracketed word is the clock in use.
    const size_t b = text.find('[');
    const size_t e = b == std::string::npos ? b : text.find(']', b);
    if (e == std::string::npos || e == b + 1)
      return p.fail("trace clock text has no [current] clock");
    clock = text.substr(b + 1, e - b - 1);
  }
  header_end = p.pos();

  // CPU data: page aligned, whole pages, inside the file, after the header,
  // no overlap.
  std::vector<uint32_t> order;
  for (uint32_t c = 0; c < ncpus; c++) {
    const TraceCpuData& d = cpus[c];
    const std::string who = "CPU " + std::to_string(c) + " data (offset " + std::to_string(d.offset) +
                            ", size " + std::to_string(d.size) + ")";
    if (d.size == 0) continue;
    if (d.offset % page_size != 0) return p.fail(who + " is not page aligned");
    if (d.size % page_size != 0) return p.fail(who + " is not a whole number of pages");
    if (d.offset < header_end) return p.fail(who + " overlaps the header");
    if (d.offset > src->size() || d.size > src->size() - d.offset)
      return p.fail(who + " extends beyond the end of the file (" + std::to_string(src->size()) +
                    " bytes): truncated?");
    order.push_back(c);
  }
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return cpus[a].offset < cpus[b].offset; });
  for (size_t i = 1; i < order.size(); i++) {
    const TraceCpuData& a = cpus[order[i - 1]];
    if (a.offset + a.size > cpus[order[i]].offset)
      return p.fail("CPU " + std::to_string(order[i - 1]) + " and CPU " + std::to_string(order[i]) +
                    " data overlap");
  }
  reset();
  return true;
}

int TraceDatReader::Impl::peek(uint32_t cpu) {
  Cursor& c = cursors[cpu];
  if (c.have_peek) return 1;
  for (;;) {
    if (!c.loaded) {
      if (c.next_page >= c.npages) return 0;
      const uint64_t off = cpus[cpu].offset + c.next_page * page_size;
      const std::string where = "CPU " + std::to_string(cpu) + ", page " +
                                std::to_string(c.next_page) + " (file offset " + std::to_string(off) + ")";
      if (c.page.size() != page_size) c.page.assign(page_size, 0);
      std::string e;
      if (!src->read(off, c.page.data(), page_size, &e)) return fail(where + ": " + e);
      const uint64_t ts = load_u64(c.page.data());
      const uint64_t commit = load_u64(c.page.data() + 8);
      const uint64_t len = commit & kCommitMask;
      const uint32_t cap = page_size - kPageHeaderSize;
      if (commit >> 32)
        return fail(where + ": commit word " + hex(commit) + " has unknown bits set");
      if (len > cap)
        return fail(where + ": commit length " + std::to_string(len) + " exceeds the page's " +
                    std::to_string(cap) + " data bytes");
      const bool missed = commit & kMissedEvents;
      const bool stored = commit & kMissedStored;
      if (stored && !missed) return fail(where + ": MISSED_STORED without MISSED_EVENTS");
      counts[cpu].pages++;
      if (missed) {
        counts[cpu].missed_pages++;
        uint64_t lost = 0;
        if (stored) {
          if (len + 8 > cap)
            return fail(where + ": no room after " + std::to_string(len) +
                        " data bytes for the stored lost-event count");
          lost = load_u64(c.page.data() + kPageHeaderSize + len);
          counts[cpu].missed_events += lost;
        } else {
          counts[cpu].missed_unknown++;
        }
        // Carried to the next record (a page without records passes it on).
        if (!c.missed) c.missed_known = true;
        c.missed = true;
        c.missed_known = c.missed_known && stored;
        c.missed_count += lost;
      }
      c.walker = PageWalker(c.page.data() + kPageHeaderSize, static_cast<uint32_t>(len), ts);
      c.page_off = off;
      c.loaded = true;
      c.next_page++;
    }
    PageEvent ev;
    if (!c.walker.next(&ev)) {
      if (c.walker.error())
        return fail("CPU " + std::to_string(cpu) + ", page " + std::to_string(c.next_page - 1) +
                    " (file offset " + std::to_string(c.page_off) + "): corrupt event at data offset " +
                    std::to_string(c.walker.offset()));
      c.loaded = false;
      continue;
    }
    const uint64_t at = c.page_off + kPageHeaderSize + ev.offset;
    if (ev.length < sizeof(CommonHeader))
      return fail("CPU " + std::to_string(cpu) + ": record at file offset " + std::to_string(at) +
                  " is " + std::to_string(ev.length) + " bytes, shorter than the 8-byte common header");
    TraceRecord& r = c.peek;
    r = TraceRecord{};
    r.cpu = cpu;
    r.ts = ev.ts;
    r.ts_ns = to_ns(ev.ts);
    CommonHeader h;
    std::memcpy(&h, ev.data, sizeof h);
    r.type = h.common_type;
    r.flags = h.common_flags;
    r.preempt_count = h.common_preempt_count;
    r.pid = h.common_pid;
    const auto it = by_id.find(h.common_type);
    r.event = it == by_id.end() ? nullptr : &events[it->second];
    r.data = ev.data;
    r.size = ev.length;
    r.file_offset = at;
    if (r.event && r.size < r.event->min_size)
      return fail("CPU " + std::to_string(cpu) + ": record of " + r.event->system + ":" +
                  r.event->name + " at file offset " + std::to_string(at) + " is " +
                  std::to_string(r.size) + " bytes, its format needs " +
                  std::to_string(r.event->min_size));
    if (c.missed) {
      r.missed = true;
      r.missed_known = c.missed_known;
      r.missed_count = c.missed_count;
      c.missed = false;
      c.missed_known = true;
      c.missed_count = 0;
    }
    c.have_peek = true;
    return 1;
  }
}

TraceDatReader::TraceDatReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TraceDatReader::~TraceDatReader() = default;

namespace {
std::unique_ptr<TraceDatReader::Impl> make_impl(std::unique_ptr<Source> src, std::string* err) {
  auto impl = std::make_unique<TraceDatReader::Impl>();
  impl->src = std::move(src);
  std::string e;
  if (!impl->parse(&e)) {
    if (err) *err = e;
    return nullptr;
  }
  return impl;
}
}  // namespace

std::unique_ptr<TraceDatReader> TraceDatReader::open_fd(int fd, std::string* err) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    if (err) *err = std::string("cannot stat the file: ") + std::strerror(errno);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode)) {
    if (err) *err = "not a regular file";
    return nullptr;
  }
  const int dfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dfd < 0) {
    if (err) *err = std::string("cannot dup the file descriptor: ") + std::strerror(errno);
    return nullptr;
  }
  auto impl = make_impl(std::make_unique<FdSource>(dfd, static_cast<uint64_t>(st.st_size)), err);
  if (!impl) return nullptr;
  return std::unique_ptr<TraceDatReader>(new TraceDatReader(std::move(impl)));
}

std::unique_ptr<TraceDatReader> TraceDatReader::open(const std::string& path, std::string* err) {
  // O_NONBLOCK: a FIFO or device must not block the open; open_fd then
  // refuses anything but a regular file (where O_NONBLOCK does nothing).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (err) *err = path + ": " + std::strerror(errno);
    return nullptr;
  }
  std::string e;
  auto r = open_fd(fd, &e);
  ::close(fd);
  if (!r && err) *err = path + ": " + e;
  return r;
}

std::unique_ptr<TraceDatReader> TraceDatReader::open_memory(const void* data, size_t size,
                                                            std::string* err) {
  auto impl = make_impl(std::make_unique<MemSource>(data, size), err);
  if (!impl) return nullptr;
  return std::unique_ptr<TraceDatReader>(new TraceDatReader(std::move(impl)));
}

uint64_t TraceDatReader::file_size() const { return impl_->src->size(); }
uint32_t TraceDatReader::page_size() const { return impl_->page_size; }
uint32_t TraceDatReader::ncpus() const { return static_cast<uint32_t>(impl_->cpus.size()); }
const std::string& TraceDatReader::clock() const { return impl_->clock; }
bool TraceDatReader::has_tsc2nsec() const { return impl_->tsc2nsec; }
uint32_t TraceDatReader::tsc2nsec_mult() const { return impl_->mult; }
uint32_t TraceDatReader::tsc2nsec_shift() const { return impl_->shift; }
int64_t TraceDatReader::ts_offset_ns() const { return impl_->ts_offset; }
uint64_t TraceDatReader::to_ns(uint64_t ts) const { return impl_->to_ns(ts); }
const std::vector<TraceEventFormat>& TraceDatReader::events() const { return impl_->events; }
const TraceEventFormat* TraceDatReader::find_event(uint16_t id) const {
  const auto it = impl_->by_id.find(id);
  return it == impl_->by_id.end() ? nullptr : &impl_->events[it->second];
}
const std::map<int32_t, std::string>& TraceDatReader::cmdlines() const { return impl_->cmdlines; }
std::string TraceDatReader::comm(int32_t pid) const {
  const auto it = impl_->cmdlines.find(pid);
  return it == impl_->cmdlines.end() ? "<...>" : it->second;
}
const std::vector<TraceCpuData>& TraceDatReader::cpus() const { return impl_->cpus; }
const std::string& TraceDatReader::error() const { return impl_->error; }
const std::vector<TraceCpuCounts>& TraceDatReader::counts() const { return impl_->counts; }
void TraceDatReader::rewind() { impl_->reset(); }

int TraceDatReader::next_on_cpu(uint32_t cpu, TraceRecord* rec) {
  Impl& m = *impl_;
  if (m.failed) return -1;
  if (cpu >= m.cpus.size()) {
    m.error = "no CPU " + std::to_string(cpu) + " in this file";
    return -1;
  }
  const int rc = m.peek(cpu);
  if (rc <= 0) return rc;
  *rec = m.cursors[cpu].peek;
  m.cursors[cpu].have_peek = false;
  m.counts[cpu].events++;
  return 1;
}

int TraceDatReader::next(TraceRecord* rec) {
  Impl& m = *impl_;
  if (m.failed) return -1;
  int best = -1;
  for (uint32_t c = 0; c < m.cpus.size(); c++) {
    const int rc = m.peek(c);
    if (rc < 0) return -1;
    if (rc == 0) continue;
    if (best < 0 || m.cursors[c].peek.ts_ns < m.cursors[static_cast<uint32_t>(best)].peek.ts_ns)
      best = static_cast<int>(c);
  }
  if (best < 0) return 0;
  Impl::Cursor& c = m.cursors[static_cast<uint32_t>(best)];
  *rec = c.peek;
  c.have_peek = false;
  m.counts[static_cast<uint32_t>(best)].events++;
  return 1;
}

bool TraceDatReader::field_value(const TraceRecord& rec, const TraceField& f, TraceValue* out,
                                 std::string* err) {
  if (f.offset > rec.size || f.size > rec.size - f.offset) {
    *err = "field '" + f.name + "' (offset " + std::to_string(f.offset) + ", size " +
           std::to_string(f.size) + ") is outside the " + std::to_string(rec.size) + "-byte record";
    return false;
  }
  const unsigned char* p = rec.data + f.offset;
  switch (f.kind) {
    case TraceField::Kind::kInt: {
      const uint64_t u = load_le(p, f.size);
      if (f.is_signed) {
        const unsigned sh = 64 - 8 * f.size;
        out->kind = TraceValue::Kind::kSigned;
        out->i = static_cast<int64_t>(u << sh) >> sh;
      } else {
        out->kind = TraceValue::Kind::kUnsigned;
        out->u = u;
      }
      return true;
    }
    case TraceField::Kind::kDynString: {
      const uint32_t loc = static_cast<uint32_t>(load_le(p, 4));
      const uint32_t off = loc & 0xffff, len = loc >> 16;
      if (off > rec.size || len > rec.size - off) {
        *err = "__data_loc of '" + f.name + "' (offset " + std::to_string(off) + ", length " +
               std::to_string(len) + ") is outside the " + std::to_string(rec.size) + "-byte record";
        return false;
      }
      const char* s = reinterpret_cast<const char*>(rec.data + off);
      out->kind = TraceValue::Kind::kString;
      out->s.assign(s, strnlen(s, len));
      return true;
    }
    case TraceField::Kind::kCharArray: {
      const char* s = reinterpret_cast<const char*>(p);
      out->kind = TraceValue::Kind::kString;
      out->s.assign(s, strnlen(s, f.size));
      return true;
    }
    case TraceField::Kind::kBytes:
      out->kind = TraceValue::Kind::kBytes;
      out->s.assign(reinterpret_cast<const char*>(p), f.size);
      return true;
  }
  return false;
}

bool TraceDatReader::raw_fields(const TraceRecord& rec, std::string* out, std::string* err) {
  out->clear();
  if (!rec.event) {
    *err = "record of unknown event type " + std::to_string(rec.type);
    return false;
  }
  const TraceEventFormat& ev = *rec.event;
  for (size_t i = ev.first_field; i < ev.fields.size(); i++) {
    TraceValue v;
    if (!field_value(rec, ev.fields[i], &v, err)) return false;
    if (v.kind == TraceValue::Kind::kSigned && ev.fields[i].size < 4) {
      // As libtraceevent 1.7 prints them: 1- and 2-byte signed fields
      // zero-extended (trace-cmd report -R shows an s8 -69 as 187).
      v.kind = TraceValue::Kind::kUnsigned;
      v.u = static_cast<uint64_t>(v.i) & ((uint64_t{1} << (8 * ev.fields[i].size)) - 1);
    }
    if (!out->empty()) *out += ' ';
    *out += ev.fields[i].name;
    *out += '=';
    *out += value_text(v);
  }
  return true;
}

bool TraceDatReader::format_fields(const TraceRecord& rec, std::string* out, std::string* err) {
  if (!rec.event) {
    out->clear();
    *err = "record of unknown event type " + std::to_string(rec.type);
    return false;
  }
  const TraceEventFormat& ev = *rec.event;
  if (!ev.print_ok) return raw_fields(rec, out, err);
  out->clear();
  const std::string& f = ev.print_format;
  size_t arg = 0;
  for (size_t k = 0; k < f.size(); k++) {
    if (f[k] != '%') {
      *out += f[k];
      continue;
    }
    k++;  // parse_print_fmt checked the syntax: no bounds surprises below
    if (f[k] == '%') {
      *out += '%';
      continue;
    }
    const size_t fb = k;
    while (one_of(f[k], "-+ #0")) k++;
    const std::string_view flags(f.data() + fb, k - fb);
    int width = -1, prec = -1;
    if (f[k] >= '0' && f[k] <= '9') {
      width = 0;
      while (f[k] >= '0' && f[k] <= '9') width = width * 10 + (f[k++] - '0');
    }
    if (f[k] == '.') {
      k++;
      prec = 0;
      while (f[k] >= '0' && f[k] <= '9') prec = prec * 10 + (f[k++] - '0');
    }
    const size_t lb = k;
    while (one_of(f[k], "hlzjt")) k++;
    const std::string_view len(f.data() + lb, k - lb);
    const char conv = f[k];
    const TraceField& field = ev.fields[static_cast<size_t>(ev.print_args[arg++])];
    TraceValue v;
    if (!field_value(rec, field, &v, err)) return false;
    if (v.kind == TraceValue::Kind::kSigned && field.size < 8) {
      // libtraceevent reads a print-fmt argument's bytes zero-extended and
      // then casts to the conversion's type: an s8 -69 printed with %d
      // shows 187 in trace-cmd. Do the same so the texts agree.
      v.kind = TraceValue::Kind::kUnsigned;
      v.u = static_cast<uint64_t>(v.i) & ((uint64_t{1} << (8 * field.size)) - 1);
    }
    format_one(out, flags, width, prec, len, conv, v);
  }
  return true;
}

}  // namespace rbtrace
