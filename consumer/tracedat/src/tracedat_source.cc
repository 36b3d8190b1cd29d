// tracedat_source.cc - byte sources and the bounds-checked header parser
// (see tracedat_source.h).
#include "tracedat_source.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rbtrace::tracedat {

FdSource::~FdSource() { ::close(fd_); }

bool FdSource::read(uint64_t off, void* dst, size_t n, std::string* err) {
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

bool MemSource::read(uint64_t off, void* dst, size_t n, std::string* err) {
  if (off > size_ || n > size_ - off) {
    *err = "read beyond the end at offset " + std::to_string(off);
    return false;
  }
  if (n) std::memcpy(dst, data_ + off, n);
  return true;
}

bool Parser::need(uint64_t n, const std::string& what) {
  if (n > left())
    return fail("truncated file: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                std::to_string(pos_) + ", " + std::to_string(left()) + " left");
  return true;
}

bool Parser::bytes(void* dst, size_t n, const std::string& what) {
  if (!need(n, what)) return false;
  std::string e;
  if (!src_.read(pos_, dst, n, &e)) return fail(what + ": " + e);
  pos_ += n;
  return true;
}

bool Parser::text(uint64_t n, uint64_t cap, std::string* out, const std::string& what) {
  if (n > cap)
    return fail(what + ": length " + std::to_string(n) + " at offset " + std::to_string(pos_ - 8) +
                " exceeds the limit of " + std::to_string(cap));
  if (!need(n, what)) return false;
  out->resize(static_cast<size_t>(n));
  return bytes(out->data(), static_cast<size_t>(n), what);
}

bool Parser::cstr(std::string* out, size_t max, const std::string& what) {
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

bool Parser::expect(const char* lit, size_t n, const std::string& what) {
  char buf[16];
  const uint64_t at = pos_;
  if (!bytes(buf, n, what)) return false;
  if (std::memcmp(buf, lit, n) != 0)
    return fail("expected the " + what + " marker at offset " + std::to_string(at));
  return true;
}

}  // namespace rbtrace::tracedat
