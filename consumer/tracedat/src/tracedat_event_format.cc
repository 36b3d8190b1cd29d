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
    uint64_t n = 0;
    f->array_len = 0;
    if (parse_u64(decl.substr(open + 1, decl.size() - open - 2), kMaxPageSize, &n))
      f->array_len = static_cast<uint32_t>(n);
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

// The field named `name` (its index in ev.fields), or -1.
int field_index(std::string_view name, const TraceEventFormat& ev) {
  int idx = -1;
  for (size_t f = 0; f < ev.fields.size(); f++) {
    if (ev.fields[f].name == name) idx = static_cast<int>(f);
  }
  return idx;
}

// `s` = "HELPER(INSIDE)": true with *inside.
bool call_of(std::string_view s, std::string_view helper, std::string_view* inside) {
  if (!starts_with(s, helper) || s.size() < helper.size() + 2) return false;
  std::string_view rest = trim(s.substr(helper.size()));
  if (rest.size() < 2 || rest.front() != '(' || rest.back() != ')') return false;
  *inside = rest.substr(1, rest.size() - 2);
  return true;
}

// Splits `s` at the commas outside parentheses, braces and quotes.
bool split_args(std::string_view s, std::vector<std::string_view>* parts) {
  int depth = 0;
  bool quoted = false;
  size_t b = 0;
  for (size_t k = 0; k <= s.size(); k++) {
    if (k < s.size() && quoted) {
      if (s[k] == '\\') k++;
      else if (s[k] == '"') quoted = false;
      continue;
    }
    if (k == s.size() || (s[k] == ',' && depth == 0)) {
      parts->push_back(trim(s.substr(b, k < s.size() ? k - b : s.size() - b)));
      b = k + 1;
      continue;
    }
    if (s[k] == '"') quoted = true;
    if (s[k] == '(' || s[k] == '{') depth++;
    if (s[k] == ')' || s[k] == '}') depth--;
    if (depth < 0) return false;
  }
  return depth == 0 && !quoted;
}

// A decimal (optionally negative) or 0x hex number, as the bits of a
// `size`-byte field zero-extended.
bool parse_symbol_value(std::string_view t, uint32_t size, uint64_t* v) {
  bool neg = false;
  if (!t.empty() && t[0] == '-') {
    neg = true;
    t = trim(t.substr(1));
  }
  uint64_t x = 0;
  if (starts_with(t, "0x") || starts_with(t, "0X")) {
    if (t.size() == 2 || t.size() > 18) return false;
    for (char c : t.substr(2)) {
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) return false;
      x = x << 4 | static_cast<uint64_t>(d);
    }
  } else if (!parse_u64(t, UINT64_MAX, &x)) {
    return false;
  }
  if (neg) x = 0 - x;
  if (size < 8) x &= (uint64_t{1} << (8 * size)) - 1;
  *v = x;
  return true;
}

// "{ V, \"NAME\" }" pairs of a __print_symbolic into *symbols.
bool parse_symbols(const std::vector<std::string_view>& parts, uint32_t size,
                   std::vector<std::pair<uint64_t, std::string>>* symbols) {
  for (size_t k = 1; k < parts.size(); k++) {
    std::string_view p = parts[k];
    if (p.size() < 2 || p.front() != '{' || p.back() != '}') return false;
    std::vector<std::string_view> vn;
    if (!split_args(p.substr(1, p.size() - 2), &vn) || vn.size() != 2) return false;
    uint64_t v = 0;
    std::string name;
    std::string_view rest;
    if (!parse_symbol_value(vn[0], size, &v) || !unquote_format(vn[1], &name, &rest) ||
        !trim(rest).empty())
      return false;
    symbols->emplace_back(v, std::move(name));
  }
  return true;
}

// The field one argument prints (its index in ev.fields), or -1; *helper
// says how. A __print_symbolic's names go to the field's `symbols`.
int print_arg_field(std::string_view a, TraceEventFormat& ev, TraceEventFormat::PrintHelper* helper) {
  using H = TraceEventFormat::PrintHelper;
  *helper = H::kPlain;
  std::string_view inside;
  if (starts_with(a, "REC->")) return field_index(a.substr(5), ev);
  if (call_of(a, "__get_str", &inside)) {
    const int idx = field_index(trim(inside), ev);
    if (idx < 0 || ev.fields[static_cast<size_t>(idx)].kind != TraceField::Kind::kDynString) return -1;
    return idx;
  }
  std::vector<std::string_view> parts;
  if (call_of(a, "__print_symbolic", &inside)) {
    if (!split_args(inside, &parts) || parts.size() < 2 || !starts_with(parts[0], "REC->")) return -1;
    const int idx = field_index(parts[0].substr(5), ev);
    if (idx < 0) return -1;
    TraceField& f = ev.fields[static_cast<size_t>(idx)];
    // One list per field (a second __print_symbolic of the same field with
    // another list is refused: the printer keeps one list per field).
    if (f.kind != TraceField::Kind::kInt || !f.symbols.empty()) return -1;
    std::vector<std::pair<uint64_t, std::string>> symbols;
    if (!parse_symbols(parts, f.size, &symbols)) return -1;
    // Sorted by value, the first name of a value kept (libtraceevent takes
    // the first match): lookups are a binary search (find_symbol).
    std::stable_sort(symbols.begin(), symbols.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    symbols.erase(std::unique(symbols.begin(), symbols.end(),
                              [](const auto& x, const auto& y) { return x.first == y.first; }),
                  symbols.end());
    f.symbols = std::move(symbols);
    *helper = H::kSymbolic;
    return idx;
  }
  if (call_of(a, "__print_hex", &inside)) {
    if (!split_args(inside, &parts) || parts.size() != 2) return -1;
    std::string_view dyn, dyn_len;
    if (call_of(parts[0], "__get_dynamic_array", &dyn)) {
      // __print_hex(__get_dynamic_array(f), __get_dynamic_array_len(f))
      if (!call_of(parts[1], "__get_dynamic_array_len", &dyn_len) || trim(dyn) != trim(dyn_len))
        return -1;
      const int idx = field_index(trim(dyn), ev);
      if (idx < 0 || ev.fields[static_cast<size_t>(idx)].kind != TraceField::Kind::kDynArray) return -1;
      *helper = H::kHex;
      return idx;
    }
    if (!starts_with(parts[0], "REC->")) return -1;
    const int idx = field_index(parts[0].substr(5), ev);
    uint64_t n = 0;
    if (idx < 0 || !parse_u64(parts[1], kMaxPageSize, &n)) return -1;
    const TraceField& f = ev.fields[static_cast<size_t>(idx)];
    if (f.kind != TraceField::Kind::kIntArray || f.size != f.array_len || n != f.array_len) return -1;
    *helper = H::kHex;
    return idx;
  }
  if (call_of(a, "__print_array", &inside)) {
    if (!split_args(inside, &parts) || parts.size() != 3 || !starts_with(parts[0], "REC->")) return -1;
    const int idx = field_index(parts[0].substr(5), ev);
    uint64_t n = 0, el = 0;
    if (idx < 0 || !parse_u64(parts[1], kMaxPageSize, &n) || !parse_u64(parts[2], 8, &el)) return -1;
    const TraceField& f = ev.fields[static_cast<size_t>(idx)];
    if (f.kind != TraceField::Kind::kIntArray || n != f.array_len || n * el != f.size) return -1;
    *helper = H::kArray;
    return idx;
  }
  return -1;
}

// The arguments after the format string (", ARG, ARG...") into *args.
bool parse_print_args(std::string_view rest, TraceEventFormat& ev, std::vector<int>* args,
                      std::vector<TraceEventFormat::PrintHelper>* helpers) {
  std::vector<std::string_view> parts;
  if (!split_args(rest, &parts)) return false;
  if (parts.empty() || !parts[0].empty()) return false;
  for (size_t k = 1; k < parts.size(); k++) {
    TraceEventFormat::PrintHelper h;
    const int idx = print_arg_field(parts[k], ev, &h);
    if (idx < 0) return false;
    args->push_back(idx);
    helpers->push_back(h);
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
  ev->print_helpers.clear();
  ev->print_format.clear();
  std::string fmt;
  std::string_view rest;
  std::vector<int> args;
  std::vector<TraceEventFormat::PrintHelper> helpers;
  size_t nconv = 0;
  if (!unquote_format(trim(ev->print_fmt), &fmt, &rest) ||
      !parse_print_args(rest, *ev, &args, &helpers) || !count_conversions(fmt, &nconv) ||
      nconv != args.size()) {
    for (TraceField& f : ev->fields) f.symbols.clear();
    return;
  }
  ev->print_format = std::move(fmt);
  ev->print_args = std::move(args);
  ev->print_helpers = std::move(helpers);
  ev->print_ok = true;
}

// ---- the format text

TraceField::Kind field_kind(const TraceField& f, bool is_array) {
  const bool has_char = f.type.find("char") != std::string::npos;
  if (starts_with(f.type, "__data_loc"))
    return has_char ? TraceField::Kind::kDynString : TraceField::Kind::kDynArray;
  if (is_array && has_char && f.size > 0) return TraceField::Kind::kCharArray;
  if (is_array && f.array_len > 0 && f.size % f.array_len == 0) {
    const uint32_t el = f.size / f.array_len;
    if (el == 1 || el == 2 || el == 4 || el == 8) return TraceField::Kind::kIntArray;
  }
  if (!is_array && ((f.type == "float" && f.size == 4) || (f.type == "double" && f.size == 8)))
    return TraceField::Kind::kFloat;
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
  if (f.kind != TraceField::Kind::kIntArray) f.array_len = 0;
  if ((f.kind == TraceField::Kind::kDynString || f.kind == TraceField::Kind::kDynArray) && f.size != 4) {
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

namespace rbtrace {

const std::string* find_symbol(const TraceField& f, uint64_t value) {
  const auto it = std::lower_bound(f.symbols.begin(), f.symbols.end(), value,
                                   [](const auto& p, uint64_t v) { return p.first < v; });
  return it != f.symbols.end() && it->first == value ? &it->second : nullptr;
}

}  // namespace rbtrace
