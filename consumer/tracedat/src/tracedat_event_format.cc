// tracedat_event_format.cc - event formats and the header_page text (see
// tracedat_event_format.h).
#include "tracedat_event_format.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "rbtrace/format.h"
#include "tracedat_internal.h"
#include "tracedat_text.h"

namespace rbtrace::tracedat {

namespace {

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

// The identifier characters at the end of `decl` (the name of "TYPE NAME").
std::string_view trailing_ident(std::string_view decl) {
  size_t n = decl.size();
  while (n > 0 && is_ident_char(decl[n - 1])) n--;
  return decl.substr(n);
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
  const std::string_view name = trailing_ident(decl);
  if (!is_ident(name)) return false;
  std::string_view type = trim(decl.substr(0, decl.size() - name.size()));
  if (type.empty()) return false;
  f->name = std::string(name);
  f->type = std::string(type) + suffix;
  return true;
}


// ---- print fmt: "format", ARG, ARG... with ARG = REC->field or __get_str(field)

// The quoted format string at the start of `s`, unescaped into *fmt (\n \t
// \r \" \\ only); *rest is what follows its closing quote.
bool unquote_format(std::string_view s, std::string* fmt, std::string_view* rest) {
  if (s.empty() || s[0] != '"') return false;
  for (size_t i = 1; i < s.size(); i++) {
    const char c = s[i];
    if (c == '"') {
      *rest = s.substr(i + 1);
      return true;
    }
    if (c != '\\') {
      *fmt += c;
      continue;
    }
    if (++i >= s.size()) return false;
    switch (s[i]) {
      case 'n': *fmt += '\n'; break;
      case 't': *fmt += '\t'; break;
      case 'r': *fmt += '\r'; break;
      case '"': *fmt += '"'; break;
      case '\\': *fmt += '\\'; break;
      default: return false;
    }
  }
  return false;  // unterminated
}

// The field one argument prints (its index in ev.fields), or -1.
int print_arg_field(std::string_view a, const TraceEventFormat& ev) {
  std::string_view name;
  bool want_string = false;
  if (starts_with(a, "REC->")) {
    name = a.substr(5);
  } else if (starts_with(a, "__get_str(") && a.back() == ')') {
    name = trim(a.substr(10, a.size() - 11));
    want_string = true;
  } else {
    return -1;
  }
  int idx = -1;
  for (size_t f = 0; f < ev.fields.size(); f++) {
    if (ev.fields[f].name == name) idx = static_cast<int>(f);
  }
  if (idx < 0) return -1;
  if (want_string && ev.fields[static_cast<size_t>(idx)].kind != TraceField::Kind::kDynString)
    return -1;
  return idx;
}

// The arguments after the format string (", ARG, ARG...") into *args.
bool parse_print_args(std::string_view rest, const TraceEventFormat& ev, std::vector<int>* args) {
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
    if (depth < 0) return false;
  }
  if (parts.empty() || !parts[0].empty()) return false;
  for (size_t k = 1; k < parts.size(); k++) {
    const int idx = print_arg_field(parts[k], ev);
    if (idx < 0) return false;
    args->push_back(idx);
  }
  return true;
}

// The number of conversions in `fmt` ("%%" is none); false when one is not
// understood.
bool count_conversions(std::string_view fmt, size_t* n) {
  *n = 0;
  for (size_t k = 0; k < fmt.size(); k++) {
    if (fmt[k] != '%') continue;
    k++;
    Conversion c;
    if (!parse_conversion(fmt, &k, &c)) return false;
    if (c.conv != '%') ++*n;
  }
  return true;
}

// Understands ev->print_fmt when it is a format string whose conversions
// match its arguments: then print_ok, print_format and print_args are set.
void parse_print_fmt(TraceEventFormat* ev) {
  ev->print_ok = false;
  ev->print_args.clear();
  ev->print_format.clear();
  std::string fmt;
  std::string_view rest;
  std::vector<int> args;
  size_t nconv = 0;
  if (!unquote_format(trim(ev->print_fmt), &fmt, &rest) || !parse_print_args(rest, *ev, &args) ||
      !count_conversions(fmt, &nconv) || nconv != args.size())
    return;
  ev->print_format = std::move(fmt);
  ev->print_args = std::move(args);
  ev->print_ok = true;
}

// ---- the format text

TraceField::Kind field_kind(const TraceField& f, bool is_array) {
  if (starts_with(f.type, "__data_loc")) return TraceField::Kind::kDynString;
  if (is_array && f.type.find("char") != std::string::npos && f.size > 0)
    return TraceField::Kind::kCharArray;
  if (!is_array && (f.size == 1 || f.size == 2 || f.size == 4 || f.size == 8))
    return TraceField::Kind::kInt;
  return TraceField::Kind::kBytes;
}

// One "field:" line (at `where`) appended to ev->fields. `common_done`: a
// blank line has ended the common_* fields.
bool add_field(std::string_view line, const std::string& where, bool common_done,
               TraceEventFormat* ev, std::string* err) {
  if (ev->fields.size() >= kMaxFields) {
    *err = "more than " + std::to_string(kMaxFields) + " fields";
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
  f.kind = field_kind(f, is_array);
  if (f.kind == TraceField::Kind::kDynString && f.size != 4) {
    *err = where + ": __data_loc field '" + f.name + "' is not 4 bytes";
    return false;
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
  return true;
}

}  // namespace

bool parse_format(std::string_view text, const std::string& system, TraceEventFormat* ev,
                  std::string* err) {
  ev->system = system;
  bool have_name = false, have_id = false, in_format = false, have_print = false;
  bool common_done = false;
  const auto lines = split_lines(text);
  for (size_t ln = 0; ln < lines.size(); ln++) {
    const std::string_view line = trim(lines[ln]);
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
      if (!add_field(line, where, common_done, ev, err)) return false;
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
    const std::string_view name = trailing_ident(fl.decl);
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

namespace {

// Digits at fmt[*k] (at most 3) into *v, -1 when there are none.
bool read_digits(std::string_view fmt, size_t* k, int* v) {
  size_t digits = 0;
  int x = 0;
  while (*k < fmt.size() && fmt[*k] >= '0' && fmt[*k] <= '9') {
    if (++digits > 3) return false;
    x = x * 10 + (fmt[(*k)++] - '0');
  }
  *v = digits ? x : -1;
  return true;
}

}  // namespace

bool parse_conversion(std::string_view fmt, size_t* k, Conversion* c) {
  size_t i = *k;
  if (i >= fmt.size()) return false;
  if (fmt[i] == '%') {
    c->conv = '%';
    return true;
  }
  const size_t flags_at = i;
  while (i < fmt.size() && one_of(fmt[i], "-+ #0")) i++;
  c->flags = fmt.substr(flags_at, i - flags_at);
  if (!read_digits(fmt, &i, &c->width)) return false;
  if (i < fmt.size() && fmt[i] == '.') {
    i++;
    if (!read_digits(fmt, &i, &c->prec)) return false;
    if (c->prec < 0) c->prec = 0;
  }
  const size_t len_at = i;
  while (i < fmt.size() && one_of(fmt[i], "hlzjt")) i++;
  c->len = fmt.substr(len_at, i - len_at);
  if (i >= fmt.size() || !one_of(fmt[i], "diouxXcsp")) return false;
  c->conv = fmt[i];
  *k = i;
  return true;
}

}  // namespace rbtrace::tracedat
