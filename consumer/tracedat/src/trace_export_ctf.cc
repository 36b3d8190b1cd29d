// trace_export_ctf.cc - write_ctf (rbtrace/trace_export.h): a trace.dat as
// a CTF 1.8 trace directory (babeltrace2, Trace Compass, LTTng tools).
//
// The directory holds `metadata` (plain-text TSDL) and one stream file per
// CPU that has records, `cpu<N>`, each a sequence of packets of at most
// kPacketTarget bytes plus one record. Everything is little endian and byte
// aligned (every type has align = 8), so an event is written as packed bytes:
//
//   packet.header   u32 magic (0xC1FC1FC1), u32 stream_id (0)
//   packet.context  u64 timestamp_begin, u64 timestamp_end (clock), u64
//                   content_size, u64 packet_size (bits; equal: no padding),
//                   u64 events_discarded, u32 cpu_id
//   event.header    u32 id (the trace.dat type; 65536: a type without a
//                   format), u64 timestamp (clock)
//   event.context   i32 _pid (common_pid), string _comm (cmdlines)
//   event fields    the non-common fields, in file order, each name with a
//                   leading '_' (which CTF readers strip), so a field named
//                   like a TSDL keyword is still an identifier
//
// Field types: an integer of its size and signedness; __data_loc char[] a
// NUL-terminated string; char name[N] an array of N UTF-8 bytes (printed as
// a string up to its NUL); any other field an array of `size` u8.
//
// Time: one clock `rbtrace` of 1 GHz with offset 0 whose value is the
// record's ts_ns (TraceDatReader::to_ns: TSC2NSEC, then OFFSET/DATE), so a
// reader's seconds are exactly ts_ns / 1e9.
//
// Lost events: `events_discarded` is the stream's running total. A record
// whose page reports lost events (rec.missed) starts a packet of its own
// whose total includes them (the stored count, or 1 — "at least one" — when
// the page did not store it), so babeltrace2 reports them between the
// previous record and this one; before a CPU's first record an empty packet
// holds the total 0.
//
// The directory is built under a temporary name beside DIR (".DIR.ctf-*",
// mode 0755 less the umask) with every file created O_EXCL|O_NOFOLLOW, and
// renamed to DIR once complete (rename(2) replaces only an empty directory,
// never a file or symbolic link); on an error it is removed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <string>
#include <vector>

#include "rbtrace/trace_export.h"
#include "rbtrace/tracedat.h"

namespace rbtrace {

namespace {

constexpr uint32_t kCtfMagic = 0xC1FC1FC1u;
constexpr uint32_t kUnknownId = 65536;       // records whose type has no format
constexpr size_t kPacketTarget = 256 * 1024;  // a packet ends once this big
constexpr size_t kPrefix = 52;                // packet header + context bytes

void put16(std::string* b, uint16_t v) {
  const char c[2] = {static_cast<char>(v), static_cast<char>(v >> 8)};
  b->append(c, 2);
}
void put32(std::string* b, uint32_t v) {
  char c[4];
  for (int i = 0; i < 4; i++) c[i] = static_cast<char>(v >> (8 * i));
  b->append(c, 4);
}
void put64(std::string* b, uint64_t v) {
  char c[8];
  for (int i = 0; i < 8; i++) c[i] = static_cast<char>(v >> (8 * i));
  b->append(c, 8);
}
void set64(std::string* b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; i++) (*b)[at + i] = static_cast<char>(v >> (8 * i));
}
void set32(std::string* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; i++) (*b)[at + i] = static_cast<char>(v >> (8 * i));
}

// A TSDL string literal's content: printable ASCII but '"' and '\'.
std::string tsdl_text(const std::string& s) {
  std::string o;
  for (unsigned char c : s) o += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? static_cast<char>(c) : '_';
  return o;
}

// A field name as a TSDL identifier: '_' + the name (identifier characters).
std::string tsdl_field(const std::string& s) {
  std::string o = "_";
  for (unsigned char c : s) o += (std::isalnum(c) || c == '_') ? static_cast<char>(c) : '_';
  return o;
}

bool is_int_kind(const TraceField& f) {
  return f.kind == TraceField::Kind::kInt &&
         (f.size == 1 || f.size == 2 || f.size == 4 || f.size == 8);
}

// An enum's mapping: { "name" = value, ... } with each value as the field
// holds it (the symbols are the field's bytes zero-extended: sign-extended
// back for a signed field).
std::string enum_mappings(const TraceField& f) {
  std::string o;
  for (const auto& [v, n] : f.symbols) {
    int64_t sv = static_cast<int64_t>(v);
    if (f.is_signed && f.size < 8) {
      const unsigned shift = 64 - 8 * f.size;
      sv = static_cast<int64_t>(v << shift) >> shift;
    }
    o += (o.empty() ? "" : ", ") + ("\"" + tsdl_text(n) + "\" = ") +
         (f.is_signed ? std::to_string(sv) : std::to_string(v));
  }
  return o;
}

// The field's TSDL declaration, built as a string (names are up to 256
// bytes). Real fields are "_" + name; a byte sequence's length is
// "len_" + that, which no real field's name can be (they all begin with
// "_").
std::string field_decl(const TraceField& f) {
  const std::string name = tsdl_field(f.name);
  const std::string bits = std::to_string(f.size * 8);
  const std::string sign = f.is_signed ? "true" : "false";
  if (is_int_kind(f) && !f.symbols.empty())
    return "enum : integer { size = " + bits + "; align = 8; signed = " + sign + "; } { " +
           enum_mappings(f) + " } " + name + ";";
  if (is_int_kind(f))
    return "integer { size = " + bits + "; align = 8; signed = " + sign + "; } " + name + ";";
  if (f.kind == TraceField::Kind::kFloat && (f.size == 4 || f.size == 8))
    return std::string("floating_point { exp_dig = ") + (f.size == 4 ? "8" : "11") +
           "; mant_dig = " + (f.size == 4 ? "24" : "53") + "; align = 8; } " + name + ";";
  if (f.kind == TraceField::Kind::kIntArray && f.array_len && f.size % f.array_len == 0)
    return "integer { size = " + std::to_string(f.size / f.array_len * 8) +
           "; align = 8; signed = " + sign + "; } " + name + "[" + std::to_string(f.array_len) +
           "];";
  if (f.kind == TraceField::Kind::kDynArray)  // a sequence after its length (bytes)
    return "uint32_t len" + name + "; uint8_t " + name + "[len" + name + "];";
  if (f.kind == TraceField::Kind::kDynString) return "string " + name + ";";
  if (f.kind == TraceField::Kind::kCharArray)
    return "integer { size = 8; align = 8; signed = false; encoding = UTF8; } " + name + "[" +
           std::to_string(f.size) + "];";
  return "uint8_t " + name + "[" + std::to_string(f.size) + "];";
}

std::string metadata_text(TraceDatReader& r) {
  std::string m;
  m += "/* CTF 1.8 */\n\n";
  m += "/* Written by rbtrace export --ctf from a trace-cmd trace.dat. */\n\n";
  m += "typealias integer { size = 8; align = 8; signed = false; } := uint8_t;\n";
  m += "typealias integer { size = 16; align = 8; signed = false; } := uint16_t;\n";
  m += "typealias integer { size = 32; align = 8; signed = false; } := uint32_t;\n";
  m += "typealias integer { size = 64; align = 8; signed = false; } := uint64_t;\n";
  m += "typealias integer { size = 32; align = 8; signed = true; } := int32_t;\n\n";
  m += "trace {\n\tmajor = 1;\n\tminor = 8;\n\tbyte_order = le;\n";
  m += "\tpacket.header := struct {\n\t\tuint32_t magic;\n\t\tuint32_t stream_id;\n\t} align(8);\n};\n\n";
  const uint64_t no_slot = r.cpus().empty() ? 0 : no_slot_dropped_in(r.cpus()[0].stats);
  m += "env {\n\ttracer_name = \"rbtrace\";\n";
  m += "\ttrace_clock = \"" + tsdl_text(r.clock()) + "\";\n";
  m += "\tncpus = " + std::to_string(r.ncpus()) + ";\n";
  // The traced process, as LTTng-UST names it (vpid, procname), when the
  // file says (TraceDatReader::process_pid).
  if (r.process_pid() > 0) {
    m += "\tvpid = " + std::to_string(r.process_pid()) + ";\n";
    m += "\tprocname = \"" + tsdl_text(r.process_name()) + "\";\n";
  }
  m += "\tno_free_cpu_slot_dropped = " + std::to_string(no_slot) + ";\n};\n\n";
  m += "clock {\n\tname = rbtrace;\n";
  m += "\tdescription = \"trace.dat time stamps in ns (trace clock " + tsdl_text(r.clock()) +
       "; TSC2NSEC and OFFSET applied)\";\n";
  m += "\tfreq = 1000000000;\n\tprecision = 1;\n\toffset_s = 0;\n\toffset = 0;\n\tabsolute = false;\n};\n\n";
  m += "typealias integer { size = 64; align = 8; signed = false; map = clock.rbtrace.value; } "
       ":= uint64_clock_t;\n\n";
  m += "stream {\n\tid = 0;\n";
  m += "\tpacket.context := struct {\n\t\tuint64_clock_t timestamp_begin;\n"
       "\t\tuint64_clock_t timestamp_end;\n\t\tuint64_t content_size;\n\t\tuint64_t packet_size;\n"
       "\t\tuint64_t events_discarded;\n\t\tuint32_t cpu_id;\n\t} align(8);\n";
  m += "\tevent.header := struct {\n\t\tuint32_t id;\n\t\tuint64_clock_t timestamp;\n\t} align(8);\n";
  m += "\tevent.context := struct {\n\t\tint32_t _pid;\n\t\tstring _comm;\n\t} align(8);\n};\n\n";
  for (const TraceEventFormat& ev : r.events()) {
    m += "event {\n\tname = \"" + tsdl_text(ev.system) + ":" + tsdl_text(ev.name) + "\";\n";
    m += "\tid = " + std::to_string(ev.id) + ";\n\tstream_id = 0;\n";
    if (ev.fields.size() > ev.first_field) {
      m += "\tfields := struct {\n";
      for (size_t i = ev.first_field; i < ev.fields.size(); i++)
        m += "\t\t" + field_decl(ev.fields[i]) + "\n";
      m += "\t} align(8);\n";
    }
    m += "};\n\n";
  }
  m += "event {\n\tname = \"rbtrace:unknown_type\";\n\tid = " + std::to_string(kUnknownId) +
       ";\n\tstream_id = 0;\n\tfields := struct {\n\t\tuint16_t _type;\n\t} align(8);\n};\n";
  return m;
}

std::string sys_error(const std::string& what, int e) { return what + ": " + std::strerror(e); }

bool write_all(int fd, const char* p, size_t n, std::string* err, const std::string& name) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      *err = sys_error("write error on " + name, errno);
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// The temporary directory and the files created in it.
class OutDir {
 public:
  ~OutDir() { abandon(); }
  int parent = -1, fd = -1;
  std::string tmp;
  std::vector<std::string> files;
  // Creates a file in the directory: O_EXCL, never through a symbolic link.
  int create(const std::string& name, std::string* err) {
    const int f = ::openat(fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (f < 0) {
      *err = sys_error("cannot create " + name, errno);
      return -1;
    }
    files.push_back(name);
    return f;
  }
  void abandon() {
    if (fd >= 0) {
      for (const std::string& n : files) ::unlinkat(fd, n.c_str(), 0);
      ::close(fd);
      fd = -1;
      ::unlinkat(parent, tmp.c_str(), AT_REMOVEDIR);
    }
    if (parent >= 0) ::close(parent);
    parent = -1;
  }
};

// One CPU's records as a stream file; 0, or -1 with *err.
class StreamWriter {
 public:
  StreamWriter(TraceDatReader& r, OutDir& out, uint32_t cpu) : r_(r), out_(out), cpu_(cpu) {
    buf_.reserve(kPacketTarget + 2 * r.page_size() + 4096);
    idx_.assign(65536, -1);
    for (size_t i = 0; i < r.events().size(); i++) idx_[r.events()[i].id] = static_cast<int32_t>(i);
  }
  ~StreamWriter() {
    if (fd_ >= 0) ::close(fd_);
  }

  int run(std::string* err) {
    TraceRecord rec;
    int rc;
    while ((rc = r_.next_on_cpu(cpu_, &rec)) > 0) {
      if (fd_ < 0) {
        name_ = "cpu" + std::to_string(cpu_);
        if ((fd_ = out_.create(name_, err)) < 0) return -1;
      }
      if (rec.missed) {
        if (open_)
          if (!flush(err)) return -1;
        if (packets_ == 0) {  // the total before the first record: 0
          begin(rec.ts_ns);
          if (!flush(err)) return -1;
        }
        discarded_ += rec.missed_known ? rec.missed_count : 1;
      }
      if (!open_) begin(rec.ts_ns);
      if (!event(rec, err)) {
        *err = "CPU " + std::to_string(rec.cpu) + ", record at file offset " +
               std::to_string(rec.file_offset) + ": " + *err;
        return -1;
      }
      end_ = std::max(end_, rec.ts_ns);
      if (rec.missed || buf_.size() >= kPacketTarget)
        if (!flush(err)) return -1;
    }
    if (rc < 0) {
      *err = r_.error();
      return -1;
    }
    if (open_ && !flush(err)) return -1;
    if (fd_ >= 0) {
      if (::fsync(fd_) != 0) {
        *err = sys_error("fsync " + name_, errno);
        return -1;
      }
      const int f = fd_;
      fd_ = -1;
      if (::close(f) != 0) {
        *err = sys_error("write error on " + name_, errno);
        return -1;
      }
    }
    return 0;
  }

 private:
  void begin(uint64_t ts) {
    buf_.assign(kPrefix, '\0');
    begin_ = end_ = ts;
    open_ = true;
  }

  bool flush(std::string* err) {
    set32(&buf_, 0, kCtfMagic);
    set32(&buf_, 4, 0);  // stream_id
    set64(&buf_, 8, begin_);
    set64(&buf_, 16, end_);
    set64(&buf_, 24, static_cast<uint64_t>(buf_.size()) * 8);
    set64(&buf_, 32, static_cast<uint64_t>(buf_.size()) * 8);
    set64(&buf_, 40, discarded_);
    set32(&buf_, 48, cpu_);
    open_ = false;
    packets_++;
    return write_all(fd_, buf_.data(), buf_.size(), err, name_);
  }

  bool event(const TraceRecord& rec, std::string* err) {
    const int32_t ei = idx_[rec.type];
    const TraceEventFormat* ev = rec.event;
    put32(&buf_, ev && ei >= 0 ? rec.type : kUnknownId);
    put64(&buf_, rec.ts_ns);
    put32(&buf_, static_cast<uint32_t>(rec.pid));
    if (rec.pid != comm_pid_ || !comm_valid_) {
      comm_ = r_.comm(rec.pid);
      comm_.resize(std::strlen(comm_.c_str()));  // a CTF string ends at its NUL
      comm_pid_ = rec.pid;
      comm_valid_ = true;
    }
    buf_.append(comm_.c_str(), comm_.size() + 1);
    if (!ev || ei < 0) {
      put16(&buf_, rec.type);
      return true;
    }
    for (size_t i = ev->first_field; i < ev->fields.size(); i++) {
      const TraceField& f = ev->fields[i];
      if (!TraceDatReader::field_value(rec, f, &v_, err)) return false;
      if (is_int_kind(f)) {
        // The field's own bytes: a value decoded through enum symbols is
        // not a number (field_value), the bytes are.
        if (static_cast<uint64_t>(f.offset) + f.size > rec.size) {
          *err = "field '" + f.name + "' outside the record";
          return false;
        }
        buf_.append(reinterpret_cast<const char*>(rec.data) + f.offset, f.size);
      } else if (f.kind == TraceField::Kind::kFloat && (f.size == 4 || f.size == 8)) {
        // The field's own bytes: through a double a float's signalling
        // NaN would come out quieted.
        if (static_cast<uint64_t>(f.offset) + f.size > rec.size) {
          *err = "field '" + f.name + "' outside the record";
          return false;
        }
        buf_.append(reinterpret_cast<const char*>(rec.data) + f.offset, f.size);
      } else if (f.kind == TraceField::Kind::kDynArray) {
        put32(&buf_, static_cast<uint32_t>(v_.s.size()));
        buf_.append(v_.s.data(), v_.s.size());
      } else if (f.kind == TraceField::Kind::kDynString) {
        buf_.append(v_.s.c_str(), std::strlen(v_.s.c_str()) + 1);
      } else if (f.kind == TraceField::Kind::kCharArray || f.kind == TraceField::Kind::kBytes) {
        const size_t n = std::min<size_t>(v_.s.size(), f.size);
        buf_.append(v_.s.data(), n);
        buf_.append(f.size - n, '\0');
      } else {  // a kind this exporter does not know: the field's bytes
        if (static_cast<uint64_t>(f.offset) + f.size > rec.size) {
          *err = "field '" + f.name + "' outside the record";
          return false;
        }
        buf_.append(reinterpret_cast<const char*>(rec.data) + f.offset, f.size);
      }
    }
    return true;
  }

  TraceDatReader& r_;
  OutDir& out_;
  const uint32_t cpu_;
  int fd_ = -1;
  std::string name_;
  std::string buf_;
  std::vector<int32_t> idx_;  // trace.dat type -> index in r.events()
  bool open_ = false;
  uint64_t begin_ = 0, end_ = 0, discarded_ = 0, packets_ = 0;
  int32_t comm_pid_ = 0;
  bool comm_valid_ = false;
  std::string comm_;
  TraceValue v_;
};

// Whether the directory open as `fd` has no entry but . and ..; closes fd.
int dir_is_empty(int fd, bool* empty) {
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return -1;
  }
  *empty = true;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      *empty = false;
      break;
    }
  }
  const int e = errno;
  ::closedir(d);
  errno = e;
  return e ? -1 : 0;
}

}  // namespace

int write_ctf(TraceDatReader& r, const std::string& dir_in, std::string* err) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) {
    *err = "no output directory";
    return -1;
  }
  const size_t slash = dir.rfind('/');
  const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
  const std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    *err = dir_in + ": not a usable directory name";
    return -1;
  }
  OutDir out;
  out.parent = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (out.parent < 0) {
    *err = sys_error(parent, errno);
    return -1;
  }
  // DIR: absent, or an empty directory (not a symbolic link to one).
  struct stat st;
  if (::fstatat(out.parent, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      *err = dir_in + ": exists and is not a directory (never replaced)";
      return -1;
    }
    const int dfd = ::openat(out.parent, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    bool empty = false;
    if (dfd < 0 || dir_is_empty(dfd, &empty) != 0) {
      *err = sys_error(dir_in, errno);
      return -1;
    }
    if (!empty) {
      *err = dir_in + ": exists and is not empty (never replaced)";
      return -1;
    }
  } else if (errno != ENOENT) {
    *err = sys_error(dir_in, errno);
    return -1;
  }
  // The temporary directory beside it.
  for (int attempt = 0;; attempt++) {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    char sfx[48];
    std::snprintf(sfx, sizeof sfx, ".ctf-%d-%lx", static_cast<int>(::getpid()),
                  static_cast<unsigned long>(ts.tv_nsec) ^ (static_cast<unsigned long>(attempt) << 20));
    out.tmp = "." + base.substr(0, 200) + sfx;
    if (::mkdirat(out.parent, out.tmp.c_str(), 0755) == 0) break;
    if (errno != EEXIST || attempt >= 100) {
      *err = sys_error("cannot create a directory in " + parent, errno);
      return -1;
    }
  }
  out.fd = ::openat(out.parent, out.tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (out.fd < 0) {
    *err = sys_error(parent + "/" + out.tmp, errno);
    ::unlinkat(out.parent, out.tmp.c_str(), AT_REMOVEDIR);
    return -1;
  }
  // The metadata, then each CPU's stream.
  {
    const std::string m = metadata_text(r);
    const int fd = out.create("metadata", err);
    if (fd < 0) return -1;
    const bool ok = write_all(fd, m.data(), m.size(), err, "metadata");
    const int fs = ok ? ::fsync(fd) : 0;
    const int e = errno;
    if (::close(fd) != 0 && ok && fs == 0) {
      *err = sys_error("write error on metadata", errno);
      return -1;
    }
    if (!ok) return -1;
    if (fs != 0) {
      *err = sys_error("fsync metadata", e);
      return -1;
    }
  }
  r.rewind();
  for (uint32_t c = 0; c < r.ncpus(); c++) {
    StreamWriter w(r, out, c);
    if (w.run(err) != 0) return -1;
  }
  if (::fsync(out.fd) != 0) {
    *err = sys_error("fsync " + dir_in, errno);
    return -1;
  }
  // Named once complete: rename(2) of a directory replaces nothing but an
  // empty directory (ENOTEMPTY, ENOTDIR, EEXIST otherwise).
  if (::renameat(out.parent, out.tmp.c_str(), out.parent, base.c_str()) != 0) {
    const int e = errno;
    *err = (e == ENOTEMPTY || e == EEXIST || e == ENOTDIR)
               ? dir_in + ": exists and is not an empty directory (never replaced)"
               : sys_error("cannot rename " + out.tmp + " to " + dir_in, e);
    return -1;
  }
  ::fsync(out.parent);
  ::close(out.fd);
  out.fd = -1;
  out.files.clear();
  return 0;
}

}  // namespace rbtrace
