// Unit tests of typed events (event.h): the kernel-style format text, the
// registry, and the records emit() writes (common header, fields, the
// __data_loc string), enable/disable, and long strings.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "rbtrace/rbtrace.h"

RBTRACE_EVENT(test, sample, ((uint64_t, seq))((int32_t, value))((rbtrace::str, label))((uint8_t, small)))
RBTRACE_EVENT(test, ints, ((int8_t, a))((int16_t, b))((uint16_t, c))((int64_t, d))((bool, flag))((uint32_t, e)))
RBTRACE_EVENT(other, strings, ((rbtrace::str, first))((uint16_t, mid))((rbtrace::str, second)))
RBTRACE_EVENT(other, three, ((rbtrace::str, s1))((rbtrace::str, s2))((uint8_t, tag))((rbtrace::str, s3)))
// 7 bytes of padding between `a` and `b`; a byte sequence of any length.
RBTRACE_EVENT(test, padded, ((uint8_t, a))((uint64_t, b)))
RBTRACE_EVENT(test, odd, ((rbtrace::bytes, blob)))
// long long is not int64_t on LP64 Linux: its own field type, as s64.
namespace ut2 {
enum class Big : long long { Lo = -5000000000LL, Hi = 5000000000LL };
}
RBTRACE_ENUM(ut2::Big, (Lo)(Hi))
RBTRACE_EVENT(test, llong, ((long long, a))((unsigned long long, b))((ut2::Big, big))
                           ((std::array<long long, 2>, pair)))

// Issue 15, item 2: the richer field types.
namespace ut {
enum class Mode : int16_t { Off = -2, On = 3 };
}
RBTRACE_ENUM(ut::Mode, (Off)(On))
RBTRACE_EVENT(rich, all, ((double, d))((float, f))((ut::Mode, mode))((std::array<uint8_t, 3>, mac))
                         ((std::array<int32_t, 2>, pair))((rbtrace::bytes, blob))((const void*, ptr))
                         ((rbtrace::str, s)))

using namespace rbtrace;
using rbtrace_events::other_strings;
using rbtrace_events::other_three;
using rbtrace_events::test_ints;
using rbtrace_events::test_odd;
using rbtrace_events::test_padded;
using rbtrace_events::test_sample;

namespace {

int32_t my_tid() { return static_cast<int32_t>(syscall(SYS_gettid)); }

struct Bound {
  Bound(RingBuffer& r, uint32_t cpu) : rb(r), rc(r.bind_thread(cpu)) {}
  ~Bound() { rb.unbind_thread(); }
  RingBuffer& rb;
  int rc;
};

std::unique_ptr<RingBuffer> make(uint32_t page_size = 4096) {
  Options o;
  o.ncpus = 1;
  o.page_size = page_size;
  o.pages_per_cpu = 4;
  Error err;
  auto rb = RingBuffer::create(o, &err);
  EXPECT_TRUE(rb) << err.message;
  return rb;
}

// The line the kernel writes for one field of events/<sys>/<name>/format.
std::string field_line(const std::string& decl, size_t offset, size_t size, bool is_signed) {
  return "\tfield:" + decl + ";\toffset:" + std::to_string(offset) + ";\tsize:" +
         std::to_string(size) + ";\tsigned:" + (is_signed ? "1" : "0") + ";\n";
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Decodes a __data_loc field of `rec` (`len` bytes): the string, checking
// that it lies inside the record and ends with its NUL.
std::string data_loc(const unsigned char* rec, uint32_t len, size_t field_off) {
  uint32_t loc;
  std::memcpy(&loc, rec + field_off, 4);
  const uint32_t off = loc & 0xffff, n = loc >> 16;
  EXPECT_GE(n, 1u);
  EXPECT_LE(off + n, len) << "string past the record";
  if (n == 0 || off + n > len) return "<bad>";
  EXPECT_EQ(rec[off + n - 1], 0) << "no NUL";
  return std::string(reinterpret_cast<const char*>(rec + off), n - 1);
}

// Restores an event's enabled state at scope exit.
template <class E>
struct KeepEnabled {
  ~KeepEnabled() { E::enable(); }
};

// The format text is the kernel's: name, ID, the common fields, then one
// line per field with offset/size/signed taken from the record struct, the
// string as "__data_loc char[]" (a 4-byte offset/length word), and a print
// fmt with REC-> for numbers and __get_str() for strings.
TEST(Event, FormatTextIsKernelStyle) {
  using R = test_sample::record;
  const std::string f = test_sample::type().format();
  EXPECT_TRUE(f.starts_with("name: sample\nID: " + std::to_string(test_sample::id()) + "\nformat:\n")) << f;
  EXPECT_TRUE(contains(f, field_line("unsigned short common_type", 0, 2, false)));
  EXPECT_TRUE(contains(f, field_line("unsigned char common_flags", 2, 1, false)));
  EXPECT_TRUE(contains(f, field_line("unsigned char common_preempt_count", 3, 1, false)));
  EXPECT_TRUE(contains(f, field_line("int common_pid", 4, 4, true)));
  EXPECT_TRUE(contains(f, field_line("u64 seq", offsetof(R, seq), sizeof(R::seq), false))) << f;
  EXPECT_TRUE(contains(f, field_line("s32 value", offsetof(R, value), sizeof(R::value), true))) << f;
  EXPECT_TRUE(contains(f, field_line("__data_loc char[] label", offsetof(R, label), 4, false))) << f;
  EXPECT_TRUE(contains(f, field_line("u8 small", offsetof(R, small), sizeof(R::small), false))) << f;
  EXPECT_TRUE(contains(f, "\nprint fmt: \"seq=%llu value=%d label=%s small=%u\", REC->seq, "
                          "REC->value, __get_str(label), REC->small\n"))
      << f;
  // The fields come in declaration order, after the common ones.
  EXPECT_LT(f.find("common_pid"), f.find(" seq;"));
  EXPECT_LT(f.find(" seq;"), f.find(" value;"));
  EXPECT_LT(f.find(" value;"), f.find(" label;"));
  EXPECT_LT(f.find(" label;"), f.find(" small;"));
  EXPECT_EQ(test_sample::type().fixed_size, sizeof(R));

  using I = test_ints::record;
  const std::string g = test_ints::type().format();
  EXPECT_TRUE(contains(g, field_line("s8 a", offsetof(I, a), 1, true))) << g;
  EXPECT_TRUE(contains(g, field_line("s16 b", offsetof(I, b), 2, true))) << g;
  EXPECT_TRUE(contains(g, field_line("u16 c", offsetof(I, c), 2, false))) << g;
  EXPECT_TRUE(contains(g, field_line("s64 d", offsetof(I, d), 8, true))) << g;
  EXPECT_TRUE(contains(g, field_line("bool flag", offsetof(I, flag), 1, false))) << g;
  EXPECT_TRUE(contains(g, field_line("u32 e", offsetof(I, e), 4, false))) << g;
  EXPECT_TRUE(contains(g, "print fmt: \"a=%d b=%d c=%u d=%lld flag=%d e=%u\", REC->a, REC->b, "
                          "REC->c, REC->d, REC->flag, REC->e\n"))
      << g;
}

// Ids are distinct, from 1000 up; the registry finds each type by id and by
// (system, name), and lists it.
TEST(Event, IdsAreDistinctAndFindable) {
  const uint16_t ids[] = {test_sample::id(), test_ints::id(), other_strings::id(),
                          other_three::id()};
  std::set<uint16_t> seen;
  for (uint16_t id : ids) {
    EXPECT_GE(id, 1000);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(find_event(test_sample::id()), &test_sample::type());
  EXPECT_EQ(find_event(test_ints::id()), &test_ints::type());
  EXPECT_EQ(find_event(other_strings::id()), &other_strings::type());
  EXPECT_EQ(find_event("test", "sample"), &test_sample::type());
  EXPECT_EQ(find_event("other", "strings"), &other_strings::type());
  EXPECT_EQ(find_event("test", "strings"), nullptr);
  EXPECT_EQ(find_event("other", "sample"), nullptr);
  EXPECT_EQ(find_event(999), nullptr);
  EXPECT_EQ(find_event(0), nullptr);
  EXPECT_EQ(find_event(65535), nullptr);
  const auto all = registered_events();
  EXPECT_GE(all.size(), 4u);
  for (size_t i = 0; i < all.size(); i++) {
    EXPECT_EQ(all[i]->id, 1000 + i);  // in id order, no holes
    EXPECT_EQ(find_event(all[i]->id), all[i]);
  }
  EXPECT_STREQ(test_sample::type().system, "test");
  EXPECT_STREQ(test_sample::type().name, "sample");
  // Registering again keeps the id.
  EXPECT_EQ(register_event(const_cast<EventType*>(&test_ints::type())), test_ints::id());
}

// emit writes one record: the common header (type id, the writer's tid,
// preempt_count 0 and no flags outside a signal handler), the fields as
// given, and the string after the fixed fields via __data_loc, with its NUL.
TEST(Event, EmitWritesTheRecord) {
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  ASSERT_EQ(test_sample::emit(*rb, 0x1122334455667788ULL, -7, "hello", 200), 0);
  ASSERT_EQ(test_ints::emit(*rb, -5, -300, 65000, INT64_MIN + 3, true, 4000000000u), 0);
  ASSERT_EQ(test_sample::emit(*rb, 2, INT32_MAX, "", 0), 0);
  PageEvent e;
  using R = test_sample::record;
  ASSERT_EQ(rb->consume(0, &e), 0);
  ASSERT_GE(e.length, sizeof(R) + 6);
  EXPECT_EQ(e.length, (sizeof(R) + 6 + 3) & ~3u);
  R r;
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.common.common_type, test_sample::id());
  EXPECT_EQ(r.common.common_pid, my_tid());
  EXPECT_EQ(r.common.common_preempt_count, 0);
  EXPECT_EQ(r.common.common_flags, 0);
  EXPECT_EQ(r.seq, 0x1122334455667788ULL);
  EXPECT_EQ(r.value, -7);
  EXPECT_EQ(r.small, 200);
  uint32_t loc;
  std::memcpy(&loc, e.data + offsetof(R, label), 4);
  EXPECT_EQ(loc & 0xffff, sizeof(R));  // right after the fixed fields
  EXPECT_EQ(loc >> 16, 6u);            // "hello" + NUL
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, label)), "hello");

  using I = test_ints::record;
  ASSERT_EQ(rb->consume(0, &e), 0);
  ASSERT_GE(e.length, sizeof(I));
  I i;
  std::memcpy(&i, e.data, sizeof i);
  EXPECT_EQ(i.common.common_type, test_ints::id());
  EXPECT_EQ(i.common.common_pid, my_tid());
  EXPECT_EQ(i.a, -5);
  EXPECT_EQ(i.b, -300);
  EXPECT_EQ(i.c, 65000);
  EXPECT_EQ(i.d, INT64_MIN + 3);
  EXPECT_EQ(i.flag, true);
  EXPECT_EQ(i.e, 4000000000u);

  ASSERT_EQ(rb->consume(0, &e), 0);
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.seq, 2u);
  EXPECT_EQ(r.value, INT32_MAX);
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, label)), "");
  EXPECT_EQ(rb->consume(0, &e), -EAGAIN);
  EXPECT_EQ(rb->stats(0).entries, 3u);
}

// Bytes no field covers (padding inside the record, the rounding of the
// length to 4) are zero, not whatever the ring held there before: each
// event is written over a discarded reservation full of 0xAA.
TEST(Event, PaddingAndRoundingBytesAreZeroed) {
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  // A dirty reservation, given back: the next reservation (the event's)
  // lies in the same bytes, which is checked here by taking it twice (the
  // second may start 8 bytes later: the first carried the page's time
  // event), both filled with 0xAA.
  auto dirty = [&] {
    Reservation r = rb->reserve(64);
    ASSERT_TRUE(r);
    std::memset(r.data, 0xAA, 64);
    rb->discard(r);
    Reservation again = rb->reserve(64);
    ASSERT_TRUE(again);
    const auto* first = static_cast<const unsigned char*>(r.data);
    const auto* second = static_cast<const unsigned char*>(again.data);
    ASSERT_TRUE(second >= first && second + 32 <= first + 64) << "a discarded reservation's space was not reused";
    std::memset(again.data, 0xAA, 64);
    rb->discard(again);
  };
  dirty();
  ASSERT_EQ(test_padded::emit(*rb, 0x11, 0x2222222222222222ull), 0);
  const unsigned char blob[5] = {1, 2, 3, 4, 5};
  const size_t sizes[] = {1, 2, 3, 5};
  for (size_t n : sizes) {
    dirty();
    ASSERT_EQ(test_odd::emit(*rb, rbtrace::bytes_view(blob, n)), 0);
  }
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  using P = test_padded::record;
  static_assert(offsetof(P, b) == 16 && sizeof(P) == 24, "7 bytes of padding after a");
  ASSERT_EQ(e.length, sizeof(P));
  for (size_t i = offsetof(P, a) + 1; i < offsetof(P, b); i++)
    EXPECT_EQ(e.data[i], 0) << "padding byte " << i;
  // 8 (header) + 4 (__data_loc) + n bytes, stored rounded up to 4.
  for (size_t n : sizes) {
    ASSERT_EQ(rb->consume(0, &e), 0);
    const uint32_t len = static_cast<uint32_t>(12 + n);
    ASSERT_EQ(e.length, (len + 3) & ~3u);
    EXPECT_EQ(std::memcmp(e.data + 12, blob, n), 0);
    for (uint32_t i = len; i < e.length; i++) EXPECT_EQ(e.data[i], 0) << "n " << n << " byte " << i;
  }
}

// long long and unsigned long long (and enums and arrays of them) are the
// 64-bit integer fields they hold.
TEST(Event, LongLongFields) {
  using rbtrace_events::test_llong;
  const std::string f = test_llong::type().format();
  EXPECT_NE(f.find("field:s64 a;"), std::string::npos) << f;
  EXPECT_NE(f.find("field:u64 b;"), std::string::npos) << f;
  EXPECT_NE(f.find("field:s64 big;"), std::string::npos) << f;
  EXPECT_NE(f.find("field:s64 pair[2];"), std::string::npos) << f;
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const std::array<long long, 2> pair{-1, 1LL << 40};
  ASSERT_EQ(test_llong::emit(*rb, -(1LL << 50), ~0ULL, ut2::Big::Lo, pair), 0);
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  const std::string d = describe_record(e.data, e.length);
  EXPECT_NE(d.find("a=-1125899906842624"), std::string::npos) << d;
  EXPECT_NE(d.find("b=18446744073709551615"), std::string::npos) << d;
  EXPECT_NE(d.find("big=Lo"), std::string::npos) << d;
}

// float, double, an enum, arrays, bytes and a pointer: the record and the
// format text.
TEST(Event, RichFieldTypes) {
  using rbtrace_events::rich_all;
  using R = rich_all::record;
  const std::string fmt = rich_all::type().format();
  EXPECT_TRUE(contains(fmt, field_line("double d", offsetof(R, d), 8, true))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("float f", offsetof(R, f), 4, true))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("s16 mode", offsetof(R, mode), 2, true))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("u8 mac[3]", offsetof(R, mac), 3, false))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("s32 pair[2]", offsetof(R, pair), 8, true))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("__data_loc u8[] blob", offsetof(R, blob), 4, false))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("unsigned long ptr", offsetof(R, ptr), 8, false))) << fmt;
  EXPECT_TRUE(contains(fmt, field_line("__data_loc char[] s", offsetof(R, s), 4, false))) << fmt;
  EXPECT_TRUE(contains(
      fmt, "print fmt: \"d=%#llx f=%#x mode=%s mac=%s pair=%s blob=%s ptr=0x%lx s=%s\", REC->d, REC->f, "
           "__print_symbolic(REC->mode, { 65534, \"Off\" }, { 3, \"On\" }), __print_hex(REC->mac, 3), "
           "__print_array(REC->pair, 2, 4), __print_hex(__get_dynamic_array(blob), "
           "__get_dynamic_array_len(blob)), REC->ptr, __get_str(s)\n"))
      << fmt;

  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const std::vector<uint8_t> blob = {9, 0, 8};
  int x = 0;
  ASSERT_EQ(rich_all::emit(*rb, -0.5, 3.25f, ut::Mode::Off, {1, 2, 3}, {-4, 5}, blob, &x, "hi"), 0);
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(e.length, (sizeof(R) + 3 + 3 + 3) & ~3u);
  R r;
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.common.common_type, rich_all::id());
  EXPECT_EQ(r.d, -0.5);
  EXPECT_EQ(r.f, 3.25f);
  EXPECT_EQ(r.mode, -2);
  EXPECT_EQ(r.mac, (std::array<uint8_t, 3>{1, 2, 3}));
  EXPECT_EQ(r.pair, (std::array<int32_t, 2>{-4, 5}));
  EXPECT_EQ(r.ptr, reinterpret_cast<uintptr_t>(&x));
  uint32_t loc;
  std::memcpy(&loc, e.data + offsetof(R, blob), 4);
  EXPECT_EQ(loc & 0xffff, sizeof(R));  // the bytes right after the fixed fields, no NUL
  EXPECT_EQ(loc >> 16, 3u);
  EXPECT_EQ(std::memcmp(e.data + sizeof(R), blob.data(), 3), 0);
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, s)), "hi");
  std::memcpy(&loc, e.data + offsetof(R, s), 4);
  EXPECT_EQ(loc & 0xffff, sizeof(R) + 3);
  char ptr[24];
  std::snprintf(ptr, sizeof ptr, "0x%llx", static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(&x)));
  EXPECT_EQ(describe_record(e.data, e.length),
            std::string("rich:all d=-0.5 f=3.25 mode=Off mac={1,2,3} pair={-4,5} blob=090008 ptr=") + ptr + " s=hi");
  // An empty byte sequence and a value without a name.
  ASSERT_EQ(rich_all::emit(*rb, 0, 0, static_cast<ut::Mode>(7), {}, {}, std::string_view(), nullptr, ""), 0);
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(describe_record(e.data, e.length), "rich:all d=0 f=0 mode=7 mac={0,0,0} pair={0,0} blob= ptr=0x0 s=");
}

// Two strings: each has its own __data_loc, one after the other.
TEST(Event, EmitWithTwoStrings) {
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  ASSERT_EQ(other_strings::emit(*rb, "abc", 77, "defgh"), 0);
  using R = other_strings::record;
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(e.length, (sizeof(R) + 4 + 6 + 3) & ~3u);
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, first)), "abc");
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, second)), "defgh");
  R r;
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.mid, 77);
}

// A disabled event type writes nothing and emit says -ENOENT; nothing is
// counted (the buffer never saw an attempt). enable() restores it. Other
// event types are not affected.
TEST(Event, DisableMakesEmitANoOp) {
  KeepEnabled<test_sample> keep;
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  EXPECT_TRUE(test_sample::enabled());
  test_sample::disable();
  EXPECT_FALSE(test_sample::enabled());
  EXPECT_FALSE(test_sample::type().enabled->load());
  EXPECT_EQ(test_sample::emit(*rb, 1, 2, "x", 3), -ENOENT);
  EXPECT_EQ(test_ints::emit(*rb, 1, 2, 3, 4, false, 5), 0);
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.disabled, 0u);
  test_sample::enable();
  EXPECT_TRUE(test_sample::enabled());
  EXPECT_EQ(test_sample::emit(*rb, 9, 2, "x", 3), 0);
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  CommonHeader h;
  std::memcpy(&h, e.data, sizeof h);
  EXPECT_EQ(h.common_type, test_ints::id());
  ASSERT_EQ(rb->consume(0, &e), 0);
  std::memcpy(&h, e.data, sizeof h);
  EXPECT_EQ(h.common_type, test_sample::id());
  EXPECT_EQ(rb->consume(0, &e), -EAGAIN);
}

// emit passes the buffer's refusals through (here: record_off gives -EPERM).
TEST(Event, EmitReportsTheReserveError) {
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  rb->record_off();
  EXPECT_EQ(test_sample::emit(*rb, 1, 2, "x", 3), -EPERM);
  rb->record_on();
  EXPECT_EQ(rb->stats(0).disabled, 1u);
}

// A string longer than the 16-bit __data_loc length is cut to 65534 chars
// plus the NUL; the record is exactly that long and the next event is
// intact (nothing written past the reservation).
TEST(Event, LongStringIsCut) {
  auto rb = make(128 * 1024);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  std::string big(70000, 'x');
  for (size_t k = 0; k < big.size(); k++) big[k] = static_cast<char>('a' + k % 26);
  ASSERT_EQ(test_sample::emit(*rb, 1, 2, big, 3), 0);
  ASSERT_EQ(test_sample::emit(*rb, 2, 3, "after", 4), 0);
  using R = test_sample::record;
  PageEvent e;
  ASSERT_EQ(rb->consume(0, &e), 0);
  EXPECT_EQ(e.length, (sizeof(R) + 65535 + 3) & ~3u);
  uint32_t loc;
  std::memcpy(&loc, e.data + offsetof(R, label), 4);
  EXPECT_EQ(loc >> 16, 65535u);
  const std::string got = data_loc(e.data, e.length, offsetof(R, label));
  EXPECT_EQ(got.size(), 65534u);
  EXPECT_TRUE(got == big.substr(0, 65534)) << "not the first 65534 characters";
  R r;
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.seq, 1u);
  EXPECT_EQ(r.small, 3);
  ASSERT_EQ(rb->consume(0, &e), 0);
  std::memcpy(&r, e.data, sizeof r);
  EXPECT_EQ(r.seq, 2u);
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(R, label)), "after");
  EXPECT_EQ(rb->stats(0).bytes, sizeof(R) + 65535 + sizeof(R) + 6);

  // On 64 KiB pages the cut record does not fit an event: refused, nothing
  // written.
  auto small = make(64 * 1024);
  Bound b2(*small, 0);
  ASSERT_EQ(b2.rc, 0);
  ASSERT_LT(small->max_payload(), sizeof(R) + 65535);
  EXPECT_EQ(test_sample::emit(*small, 1, 2, big, 3), -EINVAL);
  EXPECT_EQ(small->stats(0).entries, 0u);
  EXPECT_EQ(small->consume(0, &e), -EAGAIN);
}

std::string letters(size_t n, char first) {
  std::string s(n, ' ');
  for (size_t k = 0; k < n; k++) s[k] = static_cast<char>(first + k % 23);
  return s;
}

// Several strings whose total passes 64 KiB: a __data_loc offset has 16
// bits, so every string must still start below 0x10000. The strings before
// the last are cut to make room; the last keeps the 65534-character cut;
// the strings lie one after the other, inside the record, each a prefix of
// its argument with its NUL.
TEST(Event, LongStringsKeepEveryOffsetIn16Bits) {
  auto rb = make(256 * 1024);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const std::string a = letters(70000, 'a'), c = letters(70000, 'A'), d = letters(40000, '0');
  ASSERT_EQ(other_strings::emit(*rb, a, 9, c), 0);
  ASSERT_EQ(other_three::emit(*rb, a, c, 7, d), 0);
  ASSERT_EQ(other_three::emit(*rb, a, "", 8, "xyz"), 0);
  ASSERT_EQ(other_three::emit(*rb, "short", c, 9, d), 0);

  auto check = [](const PageEvent& e, std::initializer_list<size_t> field_offs,
                  std::initializer_list<const std::string*> args, size_t fixed) {
    uint32_t expect_off = static_cast<uint32_t>(fixed);
    size_t i = 0;
    const std::string* const* arg = args.begin();
    for (size_t fo : field_offs) {
      SCOPED_TRACE(i);
      uint32_t loc;
      std::memcpy(&loc, e.data + fo, 4);
      const uint32_t off = loc & 0xffff, n = loc >> 16;
      EXPECT_EQ(off, expect_off) << "strings are not back to back";
      const std::string got = data_loc(e.data, e.length, fo);
      EXPECT_TRUE(got == arg[i]->substr(0, got.size())) << "not a prefix of the argument";
      if (i + 1 == field_offs.size()) {
        EXPECT_EQ(got.size(), std::min<size_t>(arg[i]->size(), 65534));  // the last: usual cut
      }
      expect_off += n;
      i++;
    }
    EXPECT_EQ(e.length, (expect_off + 3) & ~3u);  // nothing after the last
  };
  PageEvent e;
  using S = other_strings::record;
  ASSERT_EQ(rb->consume(0, &e), 0);
  check(e, {offsetof(S, first), offsetof(S, second)}, {&a, &c}, sizeof(S));
  using T = other_three::record;
  const std::string empty, xyz = "xyz", shorts = "short";
  ASSERT_EQ(rb->consume(0, &e), 0);
  check(e, {offsetof(T, s1), offsetof(T, s2), offsetof(T, s3)}, {&a, &c, &d}, sizeof(T));
  ASSERT_EQ(rb->consume(0, &e), 0);
  check(e, {offsetof(T, s1), offsetof(T, s2), offsetof(T, s3)}, {&a, &empty, &xyz}, sizeof(T));
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(T, s3)), "xyz");
  ASSERT_EQ(rb->consume(0, &e), 0);
  check(e, {offsetof(T, s1), offsetof(T, s2), offsetof(T, s3)}, {&shorts, &c, &d}, sizeof(T));
  EXPECT_EQ(data_loc(e.data, e.length, offsetof(T, s1)), "short");
  EXPECT_EQ(rb->consume(0, &e), -EAGAIN);
}

// The header formats trace-cmd stores in a trace.dat, as the kernel writes
// them (events/header_page and events/header_event).
TEST(Event, HeaderFormatsAreTheKernels) {
  const std::string hp = header_page_format();
  EXPECT_TRUE(contains(hp, "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"));
  EXPECT_TRUE(contains(hp, "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"));
  EXPECT_TRUE(contains(hp, "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"));
  EXPECT_TRUE(contains(hp, "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n"));
  // The offsets agree with DataPage.
  EXPECT_EQ(offsetof(DataPage, time_stamp), 0u);
  EXPECT_EQ(offsetof(DataPage, commit), 8u);
  EXPECT_EQ(offsetof(DataPage, data), 16u);
  const std::string he = header_event_format();
  EXPECT_TRUE(contains(he, "# compressed entry header\n"));
  EXPECT_TRUE(contains(he, "\ttype_len    :    5 bits\n"));
  EXPECT_TRUE(contains(he, "\ttime_delta  :   27 bits\n"));
  EXPECT_TRUE(contains(he, "\tarray       :   32 bits\n"));
  EXPECT_TRUE(contains(he, "\tpadding     : type == " + std::to_string(kTypePadding) + "\n"));
  EXPECT_TRUE(contains(he, "\ttime_extend : type == " + std::to_string(kTypeTimeExtend) + "\n"));
  EXPECT_TRUE(contains(he, "\ttime_stamp : type == " + std::to_string(kTypeTimeStamp) + "\n"));
  EXPECT_TRUE(contains(he, "\tdata max type_len  == " + std::to_string(kTypeDataMax) + "\n"));
}

}  // namespace

namespace {

// SIGUSR2's handler for SignalHandlerScopeFlagsHandlerEvents: writes one
// event without a scope, one inside a scope, and one after the scope.
RingBuffer* g_sig_rb = nullptr;
void on_sigusr2(int) {
  test_sample::emit(*g_sig_rb, 10, 0, "bare", 0);
  {
    SignalHandlerScope in_handler;
    test_sample::emit(*g_sig_rb, 11, 0, "scoped", 0);
    {
      SignalHandlerScope nested;  // nests: leaving it keeps the outer one's flag
    }
    test_sample::emit(*g_sig_rb, 12, 0, "scoped", 0);
  }
  test_sample::emit(*g_sig_rb, 13, 0, "bare", 0);
}

// common_flags says "written in a handler" (kFlagSignal, trace-cmd's `h`)
// for every event a handler writes inside a SignalHandlerScope; a handler
// that interrupted no write and declared nothing cannot be told from its
// thread (flags 0, level 0); the thread's events after the handler are the
// thread's again.
TEST(Event, SignalHandlerScopeFlagsHandlerEvents) {
  auto rb = make();
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  g_sig_rb = rb.get();
  struct sigaction sa {}, old {};
  sa.sa_handler = on_sigusr2;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  ASSERT_EQ(test_sample::emit(*rb, 1, 0, "thread", 0), 0);
  ASSERT_EQ(raise(SIGUSR2), 0);  // delivered before raise returns
  ASSERT_EQ(test_sample::emit(*rb, 2, 0, "thread", 0), 0);
  ASSERT_EQ(sigaction(SIGUSR2, &old, nullptr), 0);
  const std::vector<std::pair<uint64_t, uint8_t>> want = {
      {1, 0}, {10, 0}, {11, kFlagSignal}, {12, kFlagSignal}, {13, 0}, {2, 0}};
  for (const auto& [seq, flags] : want) {
    PageEvent e;
    ASSERT_EQ(rb->consume(0, &e), 0) << "seq " << seq;
    test_sample::record r;
    std::memcpy(&r, e.data, sizeof r);
    EXPECT_EQ(r.seq, seq);
    EXPECT_EQ(r.common.common_flags, flags) << "seq " << seq;
    EXPECT_EQ(r.common.common_preempt_count, 0) << "seq " << seq << ": no write was interrupted";
    EXPECT_EQ(r.common.common_pid, my_tid()) << "seq " << seq;
    EXPECT_EQ(r.common.common_type, test_sample::id());
  }
}

}  // namespace
