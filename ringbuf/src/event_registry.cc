// event_registry.cc - event type ids and the kernel-style format texts.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "rbtrace/event.h"

namespace rbtrace {

namespace {
struct Registry {
  std::mutex mu;
  std::vector<EventType*> types;  // index = id - kFirstId
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
  return t->id;
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
    if (fd.is_string) {
      args += "__get_str(";
      args += fd.name;
      args += ')';
    } else {
      args += "REC->";
      args += fd.name;
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
    s += ";\toffset:" + std::to_string(fd.offset) + ";\tsize:" + std::to_string(fd.size) +
         ";\tsigned:" + (fd.is_signed ? "1" : "0") + ";\n";
  }
  s += "\nprint fmt: " + print_fmt() + "\n";
  return s;
}

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
    if (f.is_string) {
      uint32_t loc;
      std::memcpy(&loc, b + f.offset, 4);
      const uint32_t off = loc & 0xffff, n = loc >> 16;
      if (n == 0 || off + n > len) {
        s += "<bad __data_loc>";
        continue;
      }
      s.append(reinterpret_cast<const char*>(b + off), strnlen(reinterpret_cast<const char*>(b + off), n));
      continue;
    }
    uint64_t u = 0;
    std::memcpy(&u, b + f.offset, f.size);  // little endian
    if (f.is_signed && f.size < 8) {
      const unsigned shift = 64 - 8 * f.size;
      s += std::to_string(static_cast<int64_t>(u << shift) >> shift);
    } else if (f.is_signed) {
      s += std::to_string(static_cast<int64_t>(u));
    } else {
      s += std::to_string(u);
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
