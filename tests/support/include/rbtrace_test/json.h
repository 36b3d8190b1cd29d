// json.h - a small strict JSON parser for the tests that check rbtrace's
// JSON outputs (report --json, the Chrome export): RFC 8259 grammar, no raw
// control byte in strings, only the defined escapes, no duplicate keys;
// strings decoded into UTF-8 (\uXXXX surrogates refused: rbtrace never
// writes them) so values can be compared; numbers kept as written too.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace rbtrace_test {

struct JVal {
  enum Kind { kNull, kBool, kNum, kStr, kArr, kObj } kind = kNull;
  bool b = false;
  double num = 0;
  std::string num_text;  // a number as written
  std::string str;
  std::vector<JVal> arr;
  std::vector<std::pair<std::string, JVal>> obj;
  const JVal* get(const std::string& k) const {
    for (const auto& [key, v] : obj)
      if (key == k) return &v;
    return nullptr;
  }
};

inline void put_utf8(std::string* o, uint32_t cp) {
  if (cp < 0x80) {
    *o += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *o += static_cast<char>(0xc0 | (cp >> 6));
    *o += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    *o += static_cast<char>(0xe0 | (cp >> 12));
    *o += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    *o += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// JParser p{text}; p.document(&v): true when `text` is one JSON value;
// else p.i is where it went wrong.
struct JParser {
  const std::string& s;
  size_t i = 0;

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) i++;
  }
  bool lit(const char* l) {
    const size_t n = std::strlen(l);
    if (s.compare(i, n, l) != 0) return false;
    i += n;
    return true;
  }
  bool str(std::string* out) {
    if (i >= s.size() || s[i] != '"') return false;
    i++;
    while (i < s.size() && s[i] != '"') {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c < 0x20) return false;
      if (c != '\\') {
        *out += s[i++];
        continue;
      }
      if (++i >= s.size()) return false;
      const char e = s[i++];
      switch (e) {
        case '"': *out += '"'; break;
        case '\\': *out += '\\'; break;
        case '/': *out += '/'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          if (i + 4 > s.size()) return false;
          uint32_t cp = 0;
          for (int k = 0; k < 4; k++) {
            const char h = s[i++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= static_cast<uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= static_cast<uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= static_cast<uint32_t>(h - 'A' + 10);
            else return false;
          }
          if (cp >= 0xd800 && cp <= 0xdfff) return false;
          put_utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
    if (i >= s.size()) return false;
    i++;
    return true;
  }
  bool num(JVal* v) {
    const size_t b = i;
    auto digits = [&] {
      const size_t d = i;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) i++;
      return i > d;
    };
    if (i < s.size() && s[i] == '-') i++;
    if (i < s.size() && s[i] == '0') i++;
    else if (!digits()) return false;
    if (i < s.size() && s[i] == '.') {
      i++;
      if (!digits()) return false;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      i++;
      if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
      if (!digits()) return false;
    }
    v->kind = JVal::kNum;
    v->num_text = s.substr(b, i - b);
    v->num = std::strtod(v->num_text.c_str(), nullptr);
    return true;
  }
  bool value(JVal* v) {
    ws();
    if (i >= s.size()) return false;
    if (s[i] == '{' || s[i] == '[') {
      const bool is_obj = s[i] == '{';
      v->kind = is_obj ? JVal::kObj : JVal::kArr;
      i++;
      ws();
      if (lit(is_obj ? "}" : "]")) return true;
      for (;;) {
        ws();
        std::string key;
        if (is_obj) {
          if (!str(&key)) return false;
          for (const auto& kv : v->obj)
            if (kv.first == key) return false;  // a duplicate key
          ws();
          if (!lit(":")) return false;
        }
        JVal x;
        if (!value(&x)) return false;
        if (is_obj) v->obj.emplace_back(std::move(key), std::move(x));
        else v->arr.push_back(std::move(x));
        ws();
        if (lit(",")) continue;
        return lit(is_obj ? "}" : "]");
      }
    }
    if (s[i] == '"') {
      v->kind = JVal::kStr;
      return str(&v->str);
    }
    if (lit("true")) return v->kind = JVal::kBool, v->b = true, true;
    if (lit("false")) return v->kind = JVal::kBool, true;
    if (lit("null")) return true;
    return num(v);
  }
  bool document(JVal* v) {
    if (!value(v)) return false;
    ws();
    return i == s.size();
  }
};

// Every string of `v`, keys and values, decoded.
inline void all_strings(const JVal& v, std::vector<std::string>* out) {
  if (v.kind == JVal::kStr) out->push_back(v.str);
  for (const JVal& x : v.arr) all_strings(x, out);
  for (const auto& [k, x] : v.obj) {
    out->push_back(k);
    all_strings(x, out);
  }
}

}  // namespace rbtrace_test
