// tracedat_print.cc - field values and their text: TraceDatReader's
// field_value, raw_fields and format_fields (see rbtrace/tracedat_reader.h),
// with the one printf conversion done here (the file's format text never
// reaches printf).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "rbtrace/tracedat_reader.h"
#include "tracedat_event_format.h"
#include "tracedat_text.h"

namespace rbtrace {

namespace td = tracedat;
using td::append_escaped;

namespace {

uint64_t load_le(const unsigned char* p, uint32_t n) {
  uint64_t v = 0;
  std::memcpy(&v, p, n);  // n <= 8; little endian
  return v;
}

std::string value_text(const TraceValue& v) {
  switch (v.kind) {
    case TraceValue::Kind::kFloat: return td::float_text(v.d, v.single);
    case TraceValue::Kind::kArray: {
      std::string s = "{";
      for (size_t k = 0; k < v.a.size(); k++) {
        if (k) s += ',';
        s += v.array_signed ? std::to_string(static_cast<int64_t>(v.a[k])) : std::to_string(v.a[k]);
      }
      return s + "}";
    }
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

// d i o u x X: the C argument type follows the length modifier; then sign,
// precision, '#', '+', ' ' and '0' as C printf does. Without the padding.
std::string integer_text(const td::Conversion& c, uint64_t raw) {
  const std::string_view len = c.len, flags = c.flags;
  const char conv = c.conv;
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
  if (mag == 0 && c.prec != 0) num = "0";
  if (c.prec > 0 && num.size() < static_cast<size_t>(c.prec)) num.insert(0, static_cast<size_t>(c.prec) - num.size(), '0');
  const bool alt = flags.find('#') != std::string_view::npos;
  if (alt && conv == 'o' && (num.empty() || num[0] != '0')) num.insert(0, "0");
  std::string prefix;
  if (negative) prefix = "-";
  else if ((conv == 'd' || conv == 'i') && flags.find('+') != std::string_view::npos) prefix = "+";
  else if ((conv == 'd' || conv == 'i') && flags.find(' ') != std::string_view::npos) prefix = " ";
  if (alt && mag != 0 && conv == 'x') prefix += "0x";
  if (alt && mag != 0 && conv == 'X') prefix += "0X";
  const bool zero = flags.find('0') != std::string_view::npos && flags.find('-') == std::string_view::npos &&
                    c.prec < 0;
  if (zero && c.width > 0 && prefix.size() + num.size() < static_cast<size_t>(c.width))
    num.insert(0, static_cast<size_t>(c.width) - prefix.size() - num.size(), '0');
  return prefix + num;
}

// One printf conversion of `v`: flags "-+ #0", width and precision up to
// 999, length modifiers hh h l ll z j t, conversions d i u o x X c s p.
void format_one(std::string* out, const td::Conversion& c, const TraceValue& v) {
  const bool is_num = v.kind == TraceValue::Kind::kSigned || v.kind == TraceValue::Kind::kUnsigned;
  if (v.kind == TraceValue::Kind::kFloat) {
    // trace-cmd cannot print a float: the print fmt shows its bits (0x%llx);
    // here the number, whatever the conversion.
    pad_into(out, td::float_text(v.d, v.single), c.flags, c.width);
    return;
  }
  if (c.conv == 's' || !is_num) {
    // The precision cuts the string's bytes, before they are escaped (an
    // escape is never cut in half).
    const bool cut = c.conv == 's' && c.prec >= 0 && v.kind == TraceValue::Kind::kString &&
                     v.s.size() > static_cast<size_t>(c.prec);
    std::string s;
    if (cut) {
      append_escaped(&s, reinterpret_cast<const unsigned char*>(v.s.data()), static_cast<size_t>(c.prec));
    } else {
      s = value_text(v);
      if (c.conv == 's' && c.prec >= 0 && s.size() > static_cast<size_t>(c.prec)) s.resize(static_cast<size_t>(c.prec));
    }
    pad_into(out, s, c.flags, c.width);
    return;
  }
  const uint64_t raw = v.kind == TraceValue::Kind::kSigned ? static_cast<uint64_t>(v.i) : v.u;
  if (c.conv == 'c') {
    std::string s;
    const unsigned char ch = static_cast<unsigned char>(raw);
    append_escaped(&s, &ch, 1);
    pad_into(out, s, c.flags, c.width);
    return;
  }
  if (c.conv == 'p') {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(raw));
    pad_into(out, b, c.flags, c.width);
    return;
  }
  pad_into(out, integer_text(c, raw), c.flags, c.width);
}

// A signed field of fewer than `below` bytes as its bytes zero-extended
// (what libtraceevent, and so trace-cmd, prints; see the callers).
void zero_extend_small(TraceValue* v, uint32_t size, uint32_t below) {
  if (v->kind != TraceValue::Kind::kSigned || size >= below) return;
  v->kind = TraceValue::Kind::kUnsigned;
  v->u = static_cast<uint64_t>(v->i) & ((uint64_t{1} << (8 * size)) - 1);
}

// What libtraceevent prints for a __print_symbolic / __print_hex /
// __print_array argument: the name (else 0x%llx of the value), the bytes
// as "de ad 0b ef", the elements zero-extended in decimal, space
// separated.
std::string helper_text(TraceEventFormat::PrintHelper h, const TraceField& f, const TraceValue& v) {
  std::string s;
  char b[24];
  switch (h) {
    case TraceEventFormat::PrintHelper::kSymbolic: {
      const uint64_t raw = v.kind == TraceValue::Kind::kSigned ? static_cast<uint64_t>(v.i) : v.u;
      const uint64_t z = f.size < 8 ? raw & ((uint64_t{1} << (8 * f.size)) - 1) : raw;
      if (const std::string* name = find_symbol(f, z)) {
        append_escaped(&s, reinterpret_cast<const unsigned char*>(name->data()), name->size());
        return s;
      }
      std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(z));
      return b;
    }
    case TraceEventFormat::PrintHelper::kHex: {
      std::string bytes = v.s;
      if (v.kind == TraceValue::Kind::kArray) {
        bytes.clear();
        for (uint64_t e : v.a) bytes += static_cast<char>(e);
      }
      for (size_t k = 0; k < bytes.size(); k++) {
        std::snprintf(b, sizeof b, k ? " %02x" : "%02x", static_cast<unsigned char>(bytes[k]));
        s += b;
      }
      return s;
    }
    case TraceEventFormat::PrintHelper::kArray: {
      const uint32_t el = f.array_len ? f.size / f.array_len : 8;
      for (size_t k = 0; k < v.a.size(); k++) {
        const uint64_t z = el < 8 ? v.a[k] & ((uint64_t{1} << (8 * el)) - 1) : v.a[k];
        if (k) s += ' ';
        s += std::to_string(z);
      }
      return s;
    }
    case TraceEventFormat::PrintHelper::kPlain: break;
  }
  return value_text(v);
}

}  // namespace

bool TraceDatReader::field_value(const TraceRecord& rec, const TraceField& f, TraceValue* out,
                                 std::string* err) {
  uint32_t off = 0, len = 0;  // a __data_loc string's
  if (!td::field_in_record(rec.data, rec.size, f, &off, &len, err)) return false;
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
    case TraceField::Kind::kDynArray:
      out->kind = TraceValue::Kind::kBytes;
      out->s.assign(reinterpret_cast<const char*>(rec.data + off), len);
      return true;
    case TraceField::Kind::kFloat:
      out->kind = TraceValue::Kind::kFloat;
      out->single = false;
      if (f.size == 4) {
        float x;
        std::memcpy(&x, p, 4);
        out->d = x;
        out->single = true;
      } else {
        std::memcpy(&out->d, p, 8);
      }
      return true;
    case TraceField::Kind::kIntArray: {
      out->kind = TraceValue::Kind::kArray;
      out->array_signed = f.is_signed;
      const uint32_t el = f.size / f.array_len;
      const unsigned sh = 64 - 8 * el;
      out->a.clear();
      for (uint32_t k = 0; k < f.array_len; k++) {
        const uint64_t u = load_le(p + k * el, el);
        out->a.push_back(f.is_signed ? static_cast<uint64_t>(static_cast<int64_t>(u << sh) >> sh) : u);
      }
      return true;
    }
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
    // As libtraceevent 1.7 prints them: 1- and 2-byte signed fields
    // zero-extended (trace-cmd report -R shows an s8 -69 as 187).
    zero_extend_small(&v, ev.fields[i].size, 4);
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
    if (f[k] != '%') {  // the format's own text: escaped like the values
      append_escaped(out, reinterpret_cast<const unsigned char*>(&f[k]), 1);
      continue;
    }
    k++;
    td::Conversion c;
    td::parse_conversion(f, &k, &c);  // parse_print_fmt checked every conversion
    if (c.conv == '%') {
      *out += '%';
      continue;
    }
    const TraceEventFormat::PrintHelper helper =
        arg < ev.print_helpers.size() ? ev.print_helpers[arg] : TraceEventFormat::PrintHelper::kPlain;
    const TraceField& field = ev.fields[static_cast<size_t>(ev.print_args[arg++])];
    TraceValue v;
    if (!field_value(rec, field, &v, err)) return false;
    if (helper != TraceEventFormat::PrintHelper::kPlain) {
      pad_into(out, helper_text(helper, field, v), c.flags, c.width);
      continue;
    }
    // libtraceevent reads a print-fmt argument's bytes zero-extended and
    // then casts to the conversion's type: an s8 -69 printed with %d
    // shows 187 in trace-cmd. Do the same so the texts agree.
    zero_extend_small(&v, field.size, 8);
    format_one(out, c, v);
  }
  return true;
}

}  // namespace rbtrace
