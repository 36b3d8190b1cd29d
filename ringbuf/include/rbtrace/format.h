// rbtrace/format.h - the on-page formats, exactly the kernel's.
//
// A page (sub-buffer) is the kernel's `buffer_data_page`; an event header is
// the kernel's `ring_buffer_event`; a record starts with the kernel's 8-byte
// `trace_entry` common header. Because the layout is the kernel's, a page
// goes into a trace-cmd trace.dat file verbatim.
//
// Who may call: everything here is plain data and pure functions; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace rbtrace {

// ---------------------------------------------------------------------------
// Page: buffer_data_page
//
//   offset 0   u64 time_stamp   time of the page's first event (clock ticks)
//   offset 8   u64 commit       bytes of committed data in data[]
//                               bit 31: MISSED_EVENTS  (events were lost
//                                       since the previous page handed
//                                       out: overwritten pages before this
//                                       one, or newer events dropped while
//                                       the ring was full)
//                               bit 30: MISSED_STORED  (the lost count is a
//                                       u64 stored at data[commit & mask])
//                               bits 0..29: the length (kCommitMask)
//   offset 16  data[]           events, 4-byte aligned
//
// The flag bits are only ever set on pages handed to readers (read_page);
// inside the ring `commit` holds the plain committed index.
// ---------------------------------------------------------------------------
//
// data[] is a flexible array member, as in the kernel: ISO C++ has none, GCC
// and Clang accept it as an extension and warn under -Wpedantic. It stays
// (readers of read_page write page->data, and sizeof(DataPage) is the
// 16-byte header), with the warning off for this one declaration so that
// users' -Wpedantic -Werror builds of the public headers pass (the pragma is
// GCC's; Clang takes it and -Wpedantic covers its -Wc99-extensions).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
struct DataPage {
  uint64_t time_stamp;
  uint64_t commit;
  unsigned char data[];  // NOLINT: flexible array, as in the kernel
};
#pragma GCC diagnostic pop
static_assert(offsetof(DataPage, time_stamp) == 0);
static_assert(offsetof(DataPage, commit) == 8);
static_assert(offsetof(DataPage, data) == 16);
static_assert(sizeof(DataPage) == 16);

inline constexpr uint32_t kPageHeaderSize = 16;
inline constexpr uint64_t kMissedEvents = 1ULL << 31;
inline constexpr uint64_t kMissedStored = 1ULL << 30;
inline constexpr uint64_t kCommitMask = (1ULL << 30) - 1;

inline constexpr uint32_t kMinPageSize = 4096;
inline constexpr uint32_t kMaxPageSize = 1u << 20;

// ---------------------------------------------------------------------------
// Event header: ring_buffer_event
//
//   u32 type_len:5      bits 0..4 (little endian)
//   u32 time_delta:27   bits 5..31
//   u32 array[]
//
//   type_len 1..28  data event, payload = type_len * 4 bytes at array[0]
//   type_len 0      data event, array[0] = payload bytes + 4, payload at
//                   array[1]
//   29 PADDING      a discarded event, array[0] = bytes after the 4-byte
//                   header (libtraceevent reads it so whatever time_delta
//                   is); at the end of a page, beyond commit, the rest of
//                   the page
//   30 TIME_EXTEND  delta = (array[0] << 27) | time_delta, 8 bytes
//   31 TIME_STAMP   absolute time = (array[0] << 27) | time_delta, 8 bytes
// ---------------------------------------------------------------------------
inline constexpr uint32_t kTypePadding = 29;
inline constexpr uint32_t kTypeTimeExtend = 30;
inline constexpr uint32_t kTypeTimeStamp = 31;
inline constexpr uint32_t kTypeDataMax = 28;
inline constexpr uint32_t kTsShift = 27;
inline constexpr uint64_t kTsDeltaMask = (1ULL << kTsShift) - 1;
inline constexpr uint32_t kEventAlign = 4;
inline constexpr uint32_t kEventHeaderSize = 4;
inline constexpr uint32_t kTimeEventSize = 8;           // extend or stamp
inline constexpr uint32_t kMaxSmallData = kTypeDataMax * 4;  // 112 bytes

inline constexpr uint32_t event_type_len(uint32_t w) { return w & 31u; }
inline constexpr uint32_t event_time_delta(uint32_t w) { return w >> 5; }
inline constexpr uint32_t make_event_word(uint32_t type_len, uint32_t delta) {
  return (type_len & 31u) | (delta << 5);
}

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_u32(void* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }
inline uint64_t load_u64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_u64(void* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }

// Bytes an event with `payload` bytes of data occupies (header included),
// without any time event in front of it. Payload 0 is stored as 4 bytes, as
// the kernel does.
inline constexpr uint32_t data_event_size(uint32_t payload) {
  uint32_t p = payload == 0 ? 1 : payload;
  uint32_t aligned = (p + kEventAlign - 1) & ~(kEventAlign - 1);
  return aligned > kMaxSmallData ? aligned + 8 : aligned + 4;
}

// ---------------------------------------------------------------------------
// Record: the kernel's trace_entry common header, then the event's fields.
// ---------------------------------------------------------------------------
struct CommonHeader {
  uint16_t common_type;          // registered event type id
  uint8_t common_flags;          // kFlagSignal: written by a signal handler
                                 // (inside a SignalHandlerScope, or one that
                                 // interrupted a write of its thread)
  uint8_t common_preempt_count;  // nesting level: 0 thread, 1.. signals
  int32_t common_pid;            // writer thread id (gettid)
};
static_assert(sizeof(CommonHeader) == 8);

// TRACE_FLAG_HARDIRQ in the kernel; trace-cmd prints it as 'h'.
inline constexpr uint8_t kFlagSignal = 0x08;

// One decoded event of a page, as returned by the page walker.
struct PageEvent {
  const unsigned char* data;  // payload (the record)
  uint32_t length;            // payload bytes (4-byte rounded, as stored)
  uint64_t ts;                // absolute time stamp, clock ticks
  uint32_t offset;            // offset of the event header in data[]
};

// Walks the events of one page in [0, commit). Pure; validates every length
// so a corrupt page gives `error()` rather than an out-of-bounds read.
class PageWalker {
 public:
  // `data` points at DataPage::data, `len` = committed bytes, `ts` = page
  // time stamp.
  PageWalker(const unsigned char* data, uint32_t len, uint64_t ts)
      : data_(data), len_(len), ts_(ts) {}

  // Next data event; false at the end or on corruption (then error() true).
  bool next(PageEvent* out);
  bool error() const { return error_; }
  uint32_t offset() const { return off_; }
  uint64_t time() const { return ts_; }

 private:
  const unsigned char* data_;
  uint32_t len_;
  uint64_t ts_;
  uint32_t off_ = 0;
  bool error_ = false;
};

inline bool PageWalker::next(PageEvent* out) {
  while (off_ < len_) {
    if (len_ - off_ < kEventHeaderSize) {
      error_ = true;
      return false;
    }
    const unsigned char* p = data_ + off_;
    uint32_t w = load_u32(p);
    uint32_t type = event_type_len(w);
    uint32_t delta = event_time_delta(w);
    uint32_t start = off_;
    switch (type) {
      case kTypePadding: {
        // Inside [0, commit) a padding event is always a discarded event
        // whose array[0] holds the bytes after the header (the page-end
        // padding lies beyond commit; see CpuBuffer::real_end).
        if (len_ - off_ < 8) {
          error_ = true;
          return false;
        }
        uint32_t l = load_u32(p + 4);
        if (l > len_ - off_ - 4 || (l & 3u) != 0) {
          error_ = true;
          return false;
        }
        ts_ += delta;  // as libtraceevent does
        off_ += 4 + l;
        continue;
      }
      case kTypeTimeExtend:
      case kTypeTimeStamp: {
        if (len_ - off_ < 8) {
          error_ = true;
          return false;
        }
        uint64_t v = (static_cast<uint64_t>(load_u32(p + 4)) << kTsShift) | delta;
        if (type == kTypeTimeExtend) {
          ts_ += v;
        } else {
          ts_ = (ts_ & ~((1ULL << 59) - 1)) | v;
        }
        off_ += 8;
        continue;
      }
      case 0: {
        if (len_ - off_ < 8) {
          error_ = true;
          return false;
        }
        uint32_t l = load_u32(p + 4);
        if (l < 4 || l - 4 > len_ - off_ - 8 || (l & 3u) != 0) {
          error_ = true;
          return false;
        }
        ts_ += delta;
        out->data = p + 8;
        out->length = l - 4;
        out->ts = ts_;
        out->offset = start;
        off_ += 4 + l;
        return true;
      }
      default: {
        uint32_t l = type * 4;
        if (l > len_ - off_ - 4) {
          error_ = true;
          return false;
        }
        ts_ += delta;
        out->data = p + 4;
        out->length = l;
        out->ts = ts_;
        out->offset = start;
        off_ += 4 + l;
        return true;
      }
    }
  }
  return false;
}

}  // namespace rbtrace
