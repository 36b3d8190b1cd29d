// Unit tests of the on-page format (format.h): event sizes, and PageWalker
// on hand-built pages, including corrupt ones. The pages are built here byte
// by byte, in the kernel's layout, so these tests do not depend on the writer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "rbtrace/format.h"

using namespace rbtrace;

namespace {

TEST(Format, DataEventSizes) {
  EXPECT_EQ(data_event_size(1), 8u);
  EXPECT_EQ(data_event_size(4), 8u);
  EXPECT_EQ(data_event_size(5), 12u);
  EXPECT_EQ(data_event_size(112), 116u);
  EXPECT_EQ(data_event_size(113), 124u);  // type_len 0: 4 + 4 + 116
  EXPECT_EQ(data_event_size(0), 8u);
}

// The event word is the kernel's: type_len in bits 0..4, time_delta in 5..31.
TEST(Format, EventWordBits) {
  const uint32_t w = make_event_word(17, kTsDeltaMask);
  EXPECT_EQ(event_type_len(w), 17u);
  EXPECT_EQ(event_time_delta(w), kTsDeltaMask);
  EXPECT_EQ(w & 31u, 17u);
  EXPECT_EQ(w >> 5, static_cast<uint32_t>(kTsDeltaMask));
  // A delta wider than 27 bits loses its top bits, never the type.
  EXPECT_EQ(event_type_len(make_event_word(3, 0xffffffffu)), 3u);
}

// Builds the data[] area of a page, event by event, as the kernel lays it out.
class PageBuilder {
 public:
  // Data event, type_len = payload/4 (payload 4..112, multiple of 4).
  uint32_t small(uint32_t delta, std::vector<uint8_t> payload) {
    const uint32_t off = size();
    word(make_event_word(static_cast<uint32_t>(payload.size() / 4), delta));
    bytes(payload);
    return off;
  }
  // Data event with type_len 0: array[0] = payload + 4, payload at array[1].
  uint32_t big(uint32_t delta, std::vector<uint8_t> payload) {
    const uint32_t off = size();
    word(make_event_word(0, delta));
    word(static_cast<uint32_t>(payload.size()) + 4);
    bytes(payload);
    return off;
  }
  void extend(uint64_t v) {
    word(make_event_word(kTypeTimeExtend, static_cast<uint32_t>(v & kTsDeltaMask)));
    word(static_cast<uint32_t>(v >> kTsShift));
  }
  void stamp(uint64_t v) {
    word(make_event_word(kTypeTimeStamp, static_cast<uint32_t>(v & kTsDeltaMask)));
    word(static_cast<uint32_t>(v >> kTsShift));
  }
  // A discarded event: array[0] = bytes after the 4-byte header.
  void padding(uint32_t delta, uint32_t after_header) {
    word(make_event_word(kTypePadding, delta));
    word(after_header);
    for (uint32_t i = 4; i < after_header; i++) buf_.push_back(0xee);
  }
  void word(uint32_t w) {
    unsigned char b[4];
    store_u32(b, w);
    buf_.insert(buf_.end(), b, b + 4);
  }
  void bytes(const std::vector<uint8_t>& v) { buf_.insert(buf_.end(), v.begin(), v.end()); }
  uint32_t size() const { return static_cast<uint32_t>(buf_.size()); }

  // A heap copy of exactly `len` bytes (default: everything), so that an
  // out-of-bounds read trips AddressSanitizer.
  std::unique_ptr<unsigned char[]> copy(uint32_t len) const {
    std::unique_ptr<unsigned char[]> p(new unsigned char[len == 0 ? 1 : len]);
    std::memcpy(p.get(), buf_.data(), std::min<size_t>(len, buf_.size()));
    return p;
  }

 private:
  std::vector<uint8_t> buf_;
};

std::vector<uint8_t> pattern(uint32_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (uint32_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

// Every event a walker returns must lie inside [data, data + len).
void expect_inside(const PageEvent& e, const unsigned char* data, uint32_t len) {
  EXPECT_GE(e.data, data);
  EXPECT_LE(e.data + e.length, data + len);
  EXPECT_LT(e.offset, len);
}

// Small events: payload = type_len * 4 right after the header; each header
// delta adds to the running time, starting from the page time stamp.
TEST(PageWalker, SmallEventsAddDeltasToThePageTime) {
  PageBuilder b;
  const auto p1 = pattern(4, 1), p2 = pattern(8, 2), p3 = pattern(kMaxSmallData, 3);
  const uint32_t o1 = b.small(0, p1);
  const uint32_t o2 = b.small(7, p2);
  const uint32_t o3 = b.small(static_cast<uint32_t>(kTsDeltaMask), p3);
  auto page = b.copy(b.size());
  const uint64_t base = 1'000'000;
  PageWalker w(page.get(), b.size(), base);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o1);
  EXPECT_EQ(e.length, 4u);
  EXPECT_EQ(e.ts, base);
  EXPECT_EQ(0, std::memcmp(e.data, p1.data(), p1.size()));
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o2);
  EXPECT_EQ(e.length, 8u);
  EXPECT_EQ(e.ts, base + 7);
  EXPECT_EQ(0, std::memcmp(e.data, p2.data(), p2.size()));
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o3);
  EXPECT_EQ(e.length, kMaxSmallData);
  EXPECT_EQ(e.ts, base + 7 + kTsDeltaMask);
  EXPECT_EQ(0, std::memcmp(e.data, p3.data(), p3.size()));
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
  EXPECT_EQ(w.offset(), b.size());
  EXPECT_EQ(w.time(), base + 7 + kTsDeltaMask);
}

// type_len 0: array[0] holds payload + 4 and the payload starts at array[1];
// small payloads may use this form too (the kernel allows it).
TEST(PageWalker, TypeLenZeroEvents) {
  PageBuilder b;
  const auto p1 = pattern(116, 9), p2 = pattern(8, 10), p3 = pattern(2000, 11);
  const uint32_t o1 = b.big(3, p1);
  const uint32_t o2 = b.big(4, p2);
  const uint32_t o3 = b.big(5, p3);
  auto page = b.copy(b.size());
  PageWalker w(page.get(), b.size(), 50);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o1);
  EXPECT_EQ(e.length, 116u);
  EXPECT_EQ(e.data, page.get() + o1 + 8);
  EXPECT_EQ(e.ts, 53u);
  EXPECT_EQ(0, std::memcmp(e.data, p1.data(), p1.size()));
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o2);
  EXPECT_EQ(e.length, 8u);
  EXPECT_EQ(e.ts, 57u);
  EXPECT_EQ(0, std::memcmp(e.data, p2.data(), p2.size()));
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o3);
  EXPECT_EQ(e.length, 2000u);
  EXPECT_EQ(e.ts, 62u);
  EXPECT_EQ(0, std::memcmp(e.data, p3.data(), p3.size()));
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
}

// A time extend adds (array[0] << 27) | time_delta to the running time; the
// following event's own delta adds on top. The extend is not an event.
TEST(PageWalker, TimeExtendAddsItsDelta) {
  PageBuilder b;
  const uint64_t ext = (uint64_t{0x12345} << kTsShift) | 0x5a5a5;
  b.small(0, pattern(4, 1));
  b.extend(ext);
  const uint32_t o2 = b.small(9, pattern(4, 2));
  b.extend(kTsDeltaMask + 1);  // the smallest delta that needs an extend
  b.small(0, pattern(4, 3));
  auto page = b.copy(b.size());
  PageWalker w(page.get(), b.size(), 100);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, 100u);
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o2);
  EXPECT_EQ(e.ts, 100 + ext + 9);
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, 100 + ext + 9 + kTsDeltaMask + 1);
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
}

// An absolute time stamp replaces the low 59 bits of the running time and
// keeps the top 5 (libtraceevent: ts = value | (ts & ~((1 << 59) - 1))). It
// may move the time backwards: it is absolute, not a delta.
TEST(PageWalker, AbsoluteTimeStampKeepsTheTopBits) {
  PageBuilder b;
  const uint64_t top = uint64_t{0x15} << 59;
  const uint64_t base = top | 987654321;
  const uint64_t abs1 = (uint64_t{0xabcdef12} << kTsShift) | 0x1234;  // 59 bits
  const uint64_t abs2 = 77;                                            // backwards
  b.small(2, pattern(4, 1));
  b.stamp(abs1);
  b.small(5, pattern(4, 2));
  b.stamp(abs2);
  b.big(1, pattern(200, 3));
  auto page = b.copy(b.size());
  PageWalker w(page.get(), b.size(), base);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, base + 2);
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, (top | abs1) + 5);
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, (top | abs2) + 1);
  EXPECT_EQ(e.length, 200u);
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
}

// A discarded event (padding with a length) is skipped, and its time_delta
// still counts, as libtraceevent does, so the next delta (relative to the
// discarded event's time) gives the right time.
TEST(PageWalker, PaddingIsSkippedButItsDeltaCounts) {
  PageBuilder b;
  const auto p1 = pattern(8, 1), p2 = pattern(12, 2), p3 = pattern(4, 3);
  b.small(0, p1);
  b.padding(10, 8);    // a discarded small event: 4-byte header + 8
  const uint32_t o2 = b.small(4, p2);
  b.padding(3, 124);   // a discarded type_len 0 event: array[0] + 120 bytes
  b.padding(0, 4);     // padding whose array[0] is the only byte after it
  const uint32_t o3 = b.small(1, p3);
  auto page = b.copy(b.size());
  PageWalker w(page.get(), b.size(), 1000);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.ts, 1000u);
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o2);
  EXPECT_EQ(e.ts, 1000u + 10 + 4);
  EXPECT_EQ(0, std::memcmp(e.data, p2.data(), p2.size()));
  ASSERT_TRUE(w.next(&e));
  EXPECT_EQ(e.offset, o3);
  EXPECT_EQ(e.ts, 1000u + 10 + 4 + 3 + 1);
  EXPECT_EQ(0, std::memcmp(e.data, p3.data(), p3.size()));
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
}

// A page holding only padding yields no event, no error, and the time of the
// paddings (the reader uses it as the base for what follows).
TEST(PageWalker, OnlyPaddingYieldsNothing) {
  PageBuilder b;
  b.padding(6, 16);
  b.padding(2, 8);
  auto page = b.copy(b.size());
  PageWalker w(page.get(), b.size(), 40);
  PageEvent e;
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
  EXPECT_EQ(w.time(), 48u);
  EXPECT_EQ(w.offset(), b.size());
}

TEST(PageWalker, EmptyPageIsNotAnError) {
  unsigned char none[1] = {0};
  PageWalker w(none, 0, 5);
  PageEvent e;
  EXPECT_FALSE(w.next(&e));
  EXPECT_FALSE(w.error());
  EXPECT_EQ(w.time(), 5u);
}

// ---------------------------------------------------------------------------
// Corrupt pages. Each page starts with one good event, then the corruption:
// the walker returns the good event, then false with error() set, and stays
// there. The page is a heap block of exactly `len` bytes so that any read
// past it is caught by AddressSanitizer (the asan build runs these too).
// ---------------------------------------------------------------------------

struct Corrupt {
  const char* what;
  PageBuilder page;
  uint32_t len;  // committed length handed to the walker
};

void expect_corrupt(const Corrupt& c) {
  SCOPED_TRACE(c.what);
  auto page = c.page.copy(c.len);
  PageWalker w(page.get(), c.len, 10);
  PageEvent e;
  ASSERT_TRUE(w.next(&e));  // the good event
  expect_inside(e, page.get(), c.len);
  EXPECT_EQ(e.ts, 10u);
  EXPECT_FALSE(w.next(&e));
  EXPECT_TRUE(w.error());
  // Sticky: asking again never walks past the corruption.
  EXPECT_FALSE(w.next(&e));
  EXPECT_TRUE(w.error());
}

Corrupt with_good(const char* what) {
  Corrupt c{what, {}, 0};
  c.page.small(0, pattern(8, 1));
  return c;
}

TEST(PageWalker, SmallEventLongerThanThePageIsAnError) {
  Corrupt c = with_good("type_len 20 with 12 bytes left");
  c.page.word(make_event_word(20, 0));
  c.page.bytes(pattern(8, 2));
  c.len = c.page.size();
  expect_corrupt(c);
}

TEST(PageWalker, TruncatedHeaderIsAnError) {
  for (uint32_t extra = 1; extra < 4; extra++) {
    Corrupt c = with_good("1..3 bytes after the last event");
    c.page.word(make_event_word(1, 0));
    c.len = c.page.size() - 4 + extra;
    expect_corrupt(c);
  }
}

TEST(PageWalker, TypeLenZeroWithBadLengthIsAnError) {
  // array[0] below 4 (no room for itself), not a multiple of 4, past the end,
  // and huge values that would overflow a careless bounds check.
  for (uint32_t bad : {0u, 1u, 3u, 9u, 14u, 60u, 0xfffffffcu, 0xffffffffu, 0x80000000u}) {
    Corrupt c = with_good("type_len 0, bad array[0]");
    c.page.word(make_event_word(0, 0));
    c.page.word(bad);
    c.page.bytes(pattern(48, 3));  // 48 bytes after array[0]: 60 is past the end
    c.len = c.page.size();
    SCOPED_TRACE(bad);
    expect_corrupt(c);
  }
}

TEST(PageWalker, TypeLenZeroWithoutArrayIsAnError) {
  Corrupt c = with_good("type_len 0 header, array[0] missing");
  c.page.word(make_event_word(0, 0));
  c.len = c.page.size();
  expect_corrupt(c);
}

TEST(PageWalker, TruncatedTimeEventsAreAnError) {
  for (uint32_t type : {kTypeTimeExtend, kTypeTimeStamp}) {
    Corrupt c = with_good("time event without array[0]");
    c.page.word(make_event_word(type, 5));
    c.len = c.page.size();
    SCOPED_TRACE(type);
    expect_corrupt(c);
  }
}

TEST(PageWalker, BadPaddingIsAnError) {
  for (uint32_t bad : {100u, 6u, 0xfffffffcu, 0xffffffffu}) {
    Corrupt c = with_good("padding, bad array[0]");
    c.page.word(make_event_word(kTypePadding, 0));
    c.page.word(bad);
    c.page.bytes(pattern(16, 4));
    c.len = c.page.size();
    SCOPED_TRACE(bad);
    expect_corrupt(c);
  }
  Corrupt c = with_good("padding without array[0]");
  c.page.word(make_event_word(kTypePadding, 0));
  c.len = c.page.size();
  expect_corrupt(c);
}

// Pseudo-random pages (fixed seed): whatever the bytes, the walker ends (no
// infinite loop), every event it returns lies inside the page, offsets only
// grow, and it either reaches the end cleanly or reports an error.
TEST(PageWalker, RandomBytesNeverEscapeThePage) {
  std::mt19937 rng(12345);
  uint64_t events = 0, errors = 0, clean = 0;
  for (int iter = 0; iter < 3000; iter++) {
    const uint32_t len = rng() % 256;
    std::unique_ptr<unsigned char[]> page(new unsigned char[len == 0 ? 1 : len]);
    for (uint32_t i = 0; i < len; i++) {
      // Bias towards small type_len and lengths so that walks get somewhere.
      uint32_t r = rng();
      page[i] = static_cast<unsigned char>((i % 4 == 0) ? (r % 3 == 0 ? r & 31 : r & 0x7f) : (r % 4 == 0 ? r : 0));
    }
    PageWalker w(page.get(), len, 0);
    PageEvent e;
    uint32_t last = 0;
    int n = 0;
    bool first = true;
    while (w.next(&e)) {
      expect_inside(e, page.get(), len);
      if (!first) {
        EXPECT_GT(e.offset, last);
      }
      last = e.offset;
      first = false;
      ASSERT_LT(++n, 100) << "more events than fit in 256 bytes";
    }
    events += n;
    (w.error() ? errors : clean)++;
    EXPECT_TRUE(w.error() || w.offset() == len) << iter;
    EXPECT_LE(w.offset(), len);
  }
  // The input mix reaches both outcomes and real events (else the test
  // would prove nothing).
  EXPECT_GT(events, 1000u);
  EXPECT_GT(errors, 100u);
  EXPECT_GT(clean, 20u);
}

}  // namespace
