// event_registry.cc - event type ids and the kernel-style format texts.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "rbtrace/event.h"

namespace rbtrace {

namespace {
struct Registry {
  std::mutex mu;
  std::vector<EventType*> types;  // index = id - kFirstId
  std::atomic<uint32_t> count{0};  // types.size(), readable without mu
};
Registry& registry() {
  static Registry r;  // function-local: safe during static initialization
  return r;
}
constexpr uint16_t kFirstId = 1000;
}  // namespace

uint16_t register_event(EventType* t) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  for (EventType* e : r.types) {
    if (e == t) return e->id;
  }
  t->id = static_cast<uint16_t>(kFirstId + r.types.size());
  r.types.push_back(t);
  r.count.store(static_cast<uint32_t>(r.types.size()), std::memory_order_relaxed);
  return t->id;
}

uint32_t registered_event_count() {
  // relaxed: a hint to look again; registered_events() takes the lock.
  return registry().count.load(std::memory_order_relaxed);
}

std::vector<const EventType*> registered_events() {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  return {r.types.begin(), r.types.end()};
}

const EventType* find_event(uint16_t id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  if (id < kFirstId || id - kFirstId >= static_cast<int>(r.types.size())) return nullptr;
  return r.types[id - kFirstId];
}

const EventType* find_event(std::string_view system, std::string_view name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  for (EventType* e : r.types) {
    if (system == e->system && name == e->name) return e;
  }
  return nullptr;
}

namespace {
// ", { 0, \"Red\" }, { 1, \"Green\" }" (libtraceevent's __print_symbolic
// pairs). Each value as the field's bytes zero-extended, which is what
// libtraceevent compares: an s32 -1 is 4294967295.
std::string symbol_list(const EventField& fd) {
  std::string s;
  for (uint32_t i = 0; i < fd.nsymbols; i++) {
    uint64_t v = static_cast<uint64_t>(fd.symbols[i].value);
    if (fd.size < 8) v &= (uint64_t{1} << (8 * fd.size)) - 1;
    s += ", { " + std::to_string(v) + ", \"" + fd.symbols[i].name + "\" }";
  }
  return s;
}
}  // namespace

std::string EventType::print_fmt() const {
  std::string f = "\"";
  std::string args;
  for (size_t i = 0; i < fields.size(); i++) {
    const EventField& fd = fields[i];
    if (i) f += ' ';
    f += fd.name;
    f += '=';
    f += fd.fmt;
    args += ", ";
    const std::string fname = fd.name;
    switch (fd.kind) {
      case FieldKind::kString: args += "__get_str(" + fname + ")"; break;
      case FieldKind::kEnum:
        args += "__print_symbolic(REC->" + fname + symbol_list(fd) + ")";
        break;
      case FieldKind::kArray:
        if (fd.elem_size == 1)
          args += "__print_hex(REC->" + fname + ", " + std::to_string(fd.array_len) + ")";
        else
          args += "__print_array(REC->" + fname + ", " + std::to_string(fd.array_len) + ", " +
                  std::to_string(fd.elem_size) + ")";
        break;
      case FieldKind::kBytes:
        args += "__print_hex(__get_dynamic_array(" + fname + "), __get_dynamic_array_len(" +
                fname + "))";
        break;
      case FieldKind::kInt:
      case FieldKind::kFloat:
      case FieldKind::kPointer: args += "REC->" + fname; break;
    }
  }
  f += '"';
  return f + args;
}

std::string EventType::format() const {
  std::string s;
  s += "name: ";
  s += name;
  s += "\nID: " + std::to_string(id) + "\nformat:\n";
  s += "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n";
  s += "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n";
  s += "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n";
  s += "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n";
  for (const EventField& fd : fields) {
    s += "\tfield:";
    s += fd.c_type;
    s += ' ';
    s += fd.name;
    if (fd.kind == FieldKind::kArray) s += "[" + std::to_string(fd.array_len) + "]";
    s += ";\toffset:" + std::to_string(fd.offset) + ";\tsize:" + std::to_string(fd.size) +
         ";\tsigned:" + (fd.is_signed ? "1" : "0") + ";\n";
  }
  s += "\nprint fmt: " + print_fmt() + "\n";
  return s;
}

namespace {
int64_t load_int(const unsigned char* p, uint32_t size, bool is_signed, uint64_t* u_out) {
  uint64_t u = 0;
  std::memcpy(&u, p, size);  // little endian, size <= 8
  *u_out = u;
  if (is_signed && size < 8) {
    const unsigned shift = 64 - 8 * size;
    return static_cast<int64_t>(u << shift) >> shift;
  }
  return static_cast<int64_t>(u);
}
void append_int(std::string* s, const unsigned char* p, uint32_t size, bool is_signed) {
  uint64_t u;
  const int64_t i = load_int(p, size, is_signed, &u);
  *s += is_signed ? std::to_string(i) : std::to_string(u);
}
void append_hex(std::string* s, const unsigned char* p, uint32_t n) {
  static const char kHex[] = "0123456789abcdef";
  for (uint32_t i = 0; i < n; i++) {
    *s += kHex[p[i] >> 4];
    *s += kHex[p[i] & 15];
  }
}
}  // namespace

std::string describe_record(const void* data, uint32_t len) {
  const auto* b = static_cast<const unsigned char*>(data);
  if (len < sizeof(CommonHeader)) return "<short record: " + std::to_string(len) + " bytes>";
  CommonHeader h;
  std::memcpy(&h, b, sizeof h);
  const EventType* t = find_event(h.common_type);
  if (!t) return "<unknown event type " + std::to_string(h.common_type) + ">";
  std::string s = std::string(t->system) + ":" + t->name;
  if (len < t->fixed_size) return s + " <truncated record>";
  for (const EventField& f : t->fields) {
    s += ' ';
    s += f.name;
    s += '=';
    if (f.kind == FieldKind::kString || f.kind == FieldKind::kBytes) {
      uint32_t loc;
      std::memcpy(&loc, b + f.offset, 4);
      const uint32_t off = loc & 0xffff, n = loc >> 16;
      if ((f.kind == FieldKind::kString && n == 0) || off + n > len) {
        s += "<bad __data_loc>";
        continue;
      }
      if (f.kind == FieldKind::kBytes) {
        append_hex(&s, b + off, n);
        continue;
      }
      s.append(reinterpret_cast<const char*>(b + off), strnlen(reinterpret_cast<const char*>(b + off), n));
      continue;
    }
    switch (f.kind) {
      case FieldKind::kFloat: {
        char buf[32];
        if (f.size == 4) {
          float v;
          std::memcpy(&v, b + f.offset, 4);
          std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
        } else {
          double v;
          std::memcpy(&v, b + f.offset, 8);
          std::snprintf(buf, sizeof buf, "%.17g", v);
        }
        s += buf;
        break;
      }
      case FieldKind::kPointer: {
        uint64_t u;
        std::memcpy(&u, b + f.offset, 8);
        char buf[24];
        std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(u));
        s += buf;
        break;
      }
      case FieldKind::kEnum: {
        uint64_t u;
        const int64_t v = load_int(b + f.offset, f.size, f.is_signed, &u);
        const char* name = nullptr;
        for (uint32_t k = 0; k < f.nsymbols && !name; k++) {
          if (f.symbols[k].value == v) name = f.symbols[k].name;
        }
        if (name) s += name;
        else append_int(&s, b + f.offset, f.size, f.is_signed);
        break;
      }
      case FieldKind::kArray:
        s += '{';
        for (uint32_t k = 0; k < f.array_len; k++) {
          if (k) s += ',';
          append_int(&s, b + f.offset + k * f.elem_size, f.elem_size, f.is_signed);
        }
        s += '}';
        break;
      default: append_int(&s, b + f.offset, f.size, f.is_signed); break;
    }
  }
  return s;
}

std::string header_page_format() {
  // The data size is written for 4 KiB pages as the kernel does; readers
  // take the real page size from the file header.
  return "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
         "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
         "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
         "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n";
}

std::string header_event_format() {
  return "# compressed entry header\n"
         "\ttype_len    :    5 bits\n"
         "\ttime_delta  :   27 bits\n"
         "\tarray       :   32 bits\n"
         "\n"
         "\tpadding     : type == 29\n"
         "\ttime_extend : type == 30\n"
         "\ttime_stamp : type == 31\n"
         "\tdata max type_len  == 28\n";
}

}  // namespace rbtrace
