// tracedat_source.h - where the trace.dat reader's bytes come from (a file
// read with pread, or bytes in memory), and the sequential parser of the
// file's header sections that checks every length against the bytes left
// before it reads (internal to rbtrace::tracedat).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rbtrace::tracedat {

class Source {
 public:
  virtual ~Source() = default;
  uint64_t size() const { return size_; }
  // Exactly n bytes at off, or false with *err.
  virtual bool read(uint64_t off, void* dst, size_t n, std::string* err) = 0;

 protected:
  uint64_t size_ = 0;
};

// A regular file of `size` bytes; owns `fd` (closed with the source).
class FdSource final : public Source {
 public:
  FdSource(int fd, uint64_t size) : fd_(fd) { size_ = size; }
  ~FdSource() override;
  bool read(uint64_t off, void* dst, size_t n, std::string* err) override;

 private:
  int fd_;
};

// Bytes in memory, not copied.
class MemSource final : public Source {
 public:
  MemSource(const void* data, size_t size) : data_(static_cast<const unsigned char*>(data)) {
    size_ = size;
  }
  bool read(uint64_t off, void* dst, size_t n, std::string* err) override;

 private:
  const unsigned char* data_;
};

// Reads a Source front to back. Every method returns false with a sentence
// in *err (naming `what` and the offset) on a short or bad read; `need`
// compares a length with the bytes left before anything is allocated.
class Parser {
 public:
  Parser(Source& s, std::string* err) : src_(s), err_(err) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return src_.size() - pos_; }

  bool fail(const std::string& what) {
    *err_ = what;
    return false;
  }
  bool need(uint64_t n, const std::string& what);
  bool bytes(void* dst, size_t n, const std::string& what);
  template <class T>
  bool num(T* v, const std::string& what) {
    return bytes(v, sizeof(T), what);  // little endian file on a little endian host
  }
  // `n` bytes of text, n at most `cap` (n was just read as a u64 length).
  bool text(uint64_t n, uint64_t cap, std::string* out, const std::string& what);
  bool skip(uint64_t n, const std::string& what) {
    if (!need(n, what)) return false;
    pos_ += n;
    return true;
  }
  // A NUL-terminated string of at most `max` characters.
  bool cstr(std::string* out, size_t max, const std::string& what);
  // The n bytes of `lit` (a section marker, n <= 16).
  bool expect(const char* lit, size_t n, const std::string& what);

 private:
  Source& src_;
  std::string* err_;
  uint64_t pos_ = 0;
};

}  // namespace rbtrace::tracedat
