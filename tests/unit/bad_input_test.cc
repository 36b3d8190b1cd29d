// Unit tests of bad input: RingBuffer::create refuses bad options with a
// clear Error, and every call taking a CPU, a length or a page refuses a bad
// one with -EINVAL and changes nothing. The valid extremes work.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

// Binds the calling thread for the scope, and gives the slot back after (the
// test thread runs every test: it must not collect bindings).
struct Bound {
  Bound(RingBuffer& r, uint32_t cpu) : rb(r), rc(r.bind_thread(cpu)) {}
  ~Bound() { rb.unbind_thread(); }
  RingBuffer& rb;
  int rc;
};

Options small_options() {
  Options o;
  o.ncpus = 2;
  o.page_size = 4096;
  o.pages_per_cpu = 4;
  return o;
}

// create(o) must fail with EINVAL and a message that names the problem
// (`word`) and shows the bad value (`value`, if any).
void expect_rejected(const Options& o, const std::string& word, const std::string& value) {
  Error err;
  err.code = 12345;
  auto rb = RingBuffer::create(o, &err);
  EXPECT_EQ(rb, nullptr);
  EXPECT_EQ(err.code, EINVAL);
  EXPECT_FALSE(err.message.empty());
  EXPECT_NE(err.message.find(word), std::string::npos) << err.message;
  if (!value.empty()) {
    EXPECT_NE(err.message.find(value), std::string::npos) << err.message;
  }
  // Without an Error to fill, it still just fails.
  EXPECT_EQ(RingBuffer::create(o, nullptr), nullptr);
}

TEST(BadInput, CreateRejectsBadCpuCount) {
  Options o = small_options();
  o.ncpus = 0;
  expect_rejected(o, "ncpus", "0");
  o.ncpus = kMaxCpus + 1;
  expect_rejected(o, "ncpus", std::to_string(kMaxCpus + 1));
  o.ncpus = 0xffffffffu;
  expect_rejected(o, "ncpus", std::to_string(0xffffffffu));
}

TEST(BadInput, CreateRejectsBadPageSize) {
  Options o = small_options();
  o.page_size = 5000;  // not a power of two
  expect_rejected(o, "page_size", "5000");
  o.page_size = 6144;  // between two powers, above the minimum
  expect_rejected(o, "page_size", "6144");
  o.page_size = 2048;  // power of two below kMinPageSize
  expect_rejected(o, "page_size", "2048");
  o.page_size = 0;
  expect_rejected(o, "page_size", "0");
  o.page_size = kMaxPageSize * 2;  // power of two above kMaxPageSize
  expect_rejected(o, "page_size", std::to_string(kMaxPageSize * 2));
  o.page_size = 1u << 31;
  expect_rejected(o, "page_size", std::to_string(1u << 31));
}

TEST(BadInput, CreateRejectsBadPageCount) {
  Options o = small_options();
  for (uint32_t bad : {0u, 1u, kMaxPagesPerCpu + 1, 0xffffffffu}) {
    o.pages_per_cpu = bad;
    SCOPED_TRACE(bad);
    expect_rejected(o, "pages_per_cpu", std::to_string(bad));
  }
}

TEST(BadInput, CreateRejectsTooManyBytes) {
  // Every option is in range on its own; the product is not.
  Options o;
  o.ncpus = kMaxCpus;
  o.page_size = 4096;
  o.pages_per_cpu = kMaxPagesPerCpu;
  const uint64_t bytes = uint64_t{kMaxCpus} * (kMaxPagesPerCpu + 1) * 4096;
  expect_rejected(o, "too many pages", std::to_string(bytes));
  // Just above the limit: 16 CPUs x 4097 pages of 1 MiB.
  o.ncpus = 16;
  o.page_size = kMaxPageSize;
  o.pages_per_cpu = 4096;
  ASSERT_GT(uint64_t{16} * 4097 * kMaxPageSize, kMaxBytesPerBuffer);
  expect_rejected(o, "too many pages", std::to_string(kMaxBytesPerBuffer));
}

TEST(BadInput, CreateRejectsUnknownModeAndClock) {
  Options o = small_options();
  o.mode = static_cast<Mode>(7);
  expect_rejected(o, "mode", "");
  o = small_options();
  o.clock = static_cast<ClockKind>(42);
  expect_rejected(o, "clock", "");
}

// The extremes of each range are accepted and give a working buffer.
TEST(BadInput, CreateAcceptsTheValidExtremes) {
  struct Case {
    uint32_t ncpus, page_size, pages;
  };
  for (Case c : {Case{1, kMinPageSize, 2}, Case{1, kMaxPageSize, 2}, Case{kMaxCpus, kMinPageSize, 2}}) {
    SCOPED_TRACE(std::to_string(c.ncpus) + " cpus, page " + std::to_string(c.page_size));
    Options o;
    o.ncpus = c.ncpus;
    o.page_size = c.page_size;
    o.pages_per_cpu = c.pages;
    Error err;
    auto rb = RingBuffer::create(o, &err);
    ASSERT_NE(rb, nullptr) << err.message;
    EXPECT_EQ(err.code, 0);
    EXPECT_EQ(rb->ncpus(), c.ncpus);
    EXPECT_EQ(rb->page_size(), c.page_size);
    // An event fits, with a time event in front of it, in one page.
    EXPECT_GT(rb->max_payload(), 0u);
    EXPECT_LE(rb->max_payload() + kPageHeaderSize + kTimeEventSize + 8, c.page_size);
    const uint32_t last = c.ncpus - 1;
    Bound b(*rb, last);
    ASSERT_EQ(b.rc, 0);
    const uint64_t v = 0x1122334455667788ULL;
    ASSERT_EQ(rb->write(&v, sizeof v), 0);
    PageEvent ev;
    ASSERT_EQ(rb->consume(last, &ev), 0);
    ASSERT_EQ(ev.length, sizeof v);
    EXPECT_EQ(load_u64(ev.data), v);
  }
}

// reserve() below kMinPayload (the 8-byte common header every record
// starts with, which TraceDatReader and trace-cmd read first) and above
// max_payload() fails with -EINVAL and is not counted anywhere (-EINVAL is
// the one refusal that is not a write attempt). Issue 9: a 3-byte raw event
// used to be accepted and then stopped our own reader of the file.
TEST(BadInput, ReserveRejectsBadLengthsAndCountsNothing) {
  auto rb = RingBuffer::create(small_options());
  ASSERT_TRUE(rb);
  Bound b(*rb, 1);
  ASSERT_EQ(b.rc, 0);
  // Constant lengths take reserve()'s compile-time check.
  EXPECT_EQ(rb->reserve(3).err, -EINVAL);
  EXPECT_EQ(rb->reserve(kMinPayload - 1).err, -EINVAL);
  const unsigned char three[3] = {1, 2, 3};
  EXPECT_EQ(rb->write(three, sizeof three), -EINVAL);
  for (uint32_t len : {0u, 1u, 3u, 4u, 7u, rb->max_payload() + 1, rb->max_payload() + 4,
                       0xffffffffu}) {
    SCOPED_TRACE(len);
    Reservation r = rb->reserve(len);
    EXPECT_FALSE(r);
    EXPECT_EQ(r.data, nullptr);
    EXPECT_EQ(r.err, -EINVAL);
  }
  std::vector<unsigned char> big(rb->max_payload() + 1, 0x5a);
  EXPECT_EQ(rb->write(big.data(), 0), -EINVAL);
  EXPECT_EQ(rb->write(big.data(), static_cast<uint32_t>(big.size())), -EINVAL);
  for (uint32_t c = 0; c < rb->ncpus(); c++) {
    const CpuStats s = rb->stats(c);
    EXPECT_EQ(s.entries, 0u);
    EXPECT_EQ(s.bytes, 0u);
    EXPECT_EQ(s.lost(), 0u);
    EXPECT_EQ(s.disabled, 0u);
    PageEvent ev;
    EXPECT_EQ(rb->consume(c, &ev), -EAGAIN);
  }
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
  // The bounds themselves are accepted.
  volatile uint32_t min = kMinPayload;  // not a constant: the run-time check
  Reservation lo = rb->reserve(min);
  ASSERT_TRUE(lo) << lo.err;
  rb->commit(lo);
  Reservation lo_const = rb->reserve(kMinPayload);
  ASSERT_TRUE(lo_const) << lo_const.err;
  rb->commit(lo_const);
  EXPECT_EQ(rb->stats(1).entries, 2u);
}

// An unbound thread's bad-length reserve does not even claim a CPU slot.
TEST(BadInput, BadLengthDoesNotClaimASlot) {
  auto rb = RingBuffer::create(small_options());
  ASSERT_TRUE(rb);
  std::thread t([&] {
    EXPECT_EQ(rb->reserve(0).err, -EINVAL);
    EXPECT_EQ(rb->current_cpu(), -1);
  });
  t.join();
  EXPECT_EQ(rb->cpu_owner(0), 0);
  EXPECT_EQ(rb->cpu_owner(1), 0);
  EXPECT_EQ(rb->no_cpu_dropped(), 0u);
}

// The largest payload is accepted, on an empty page and after other events
// (then it needs a page of its own), and reads back intact.
void max_payload_round_trip(uint32_t page_size, Mode mode) {
  SCOPED_TRACE("page " + std::to_string(page_size));
  Options o;
  o.ncpus = 1;
  o.page_size = page_size;
  o.pages_per_cpu = 8;  // three pages of big events, and the small ones between
  o.mode = mode;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint32_t max = rb->max_payload();
  ASSERT_EQ(max % 4, 0u);
  // Three big events separated by small ones: each big one crosses a page.
  for (uint32_t i = 0; i < 3; i++) {
    Reservation r = rb->reserve(max);
    ASSERT_TRUE(r) << r.err;
    ASSERT_EQ(r.length, max);
    auto* p = static_cast<unsigned char*>(r.data);
    for (uint32_t k = 0; k < max; k++) p[k] = static_cast<unsigned char>(k * 31 + i);
    rb->commit(r);
    const uint64_t small = i;
    ASSERT_EQ(rb->write(&small, sizeof small), 0);
  }
  PageEvent ev;
  for (uint32_t i = 0; i < 3; i++) {
    ASSERT_EQ(rb->consume(0, &ev), 0);
    ASSERT_EQ(ev.length, max);
    for (uint32_t k = 0; k < max; k++) {
      ASSERT_EQ(ev.data[k], static_cast<unsigned char>(k * 31 + i)) << "byte " << k;
    }
    ASSERT_EQ(rb->consume(0, &ev), 0);
    ASSERT_EQ(ev.length, 8u);
    EXPECT_EQ(load_u64(ev.data), i);
  }
  EXPECT_EQ(rb->consume(0, &ev), -EAGAIN);
  const CpuStats s = rb->stats(0);
  EXPECT_EQ(s.entries, 6u);
  EXPECT_EQ(s.bytes, 3ull * max + 3 * 8);
  EXPECT_EQ(s.read, 6u);
  EXPECT_EQ(s.lost(), 0u);
}

TEST(BadInput, MaxPayloadWorksAt4KiB) { max_payload_round_trip(4096, Mode::kOverwrite); }
TEST(BadInput, MaxPayloadWorksAt64KiB) { max_payload_round_trip(65536, Mode::kProducerConsumer); }
TEST(BadInput, MaxPayloadWorksAt1MiB) { max_payload_round_trip(kMaxPageSize, Mode::kOverwrite); }

// Every call that takes a CPU refuses one that does not exist.
TEST(BadInput, NonexistentCpuIsRefused) {
  auto rb = RingBuffer::create(small_options());
  ASSERT_TRUE(rb);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint64_t v = 7;
  ASSERT_EQ(rb->write(&v, sizeof v), 0);
  DataPage* page = rb->alloc_read_page();
  ASSERT_NE(page, nullptr);
  for (uint32_t cpu : {2u, 3u, 1000u, 0xffffffffu}) {
    SCOPED_TRACE(cpu);
    DataPage* before = page;
    EXPECT_EQ(rb->read_page(&page, cpu, false), -EINVAL);
    EXPECT_EQ(rb->read_page(&page, cpu, true), -EINVAL);
    EXPECT_EQ(page, before);
    PageEvent ev;
    EXPECT_EQ(rb->peek(cpu, &ev), -EINVAL);
    EXPECT_EQ(rb->consume(cpu, &ev), -EINVAL);
    const CpuStats s = rb->stats(cpu);
    EXPECT_EQ(s.entries, 0u);
    EXPECT_EQ(s.bytes, 0u);
    EXPECT_EQ(s.read, 0u);
    EXPECT_EQ(s.disabled, 0u);
    EXPECT_EQ(s.lost(), 0u);
    EXPECT_EQ(rb->record_disable_cpu(cpu), -EINVAL);
    EXPECT_EQ(rb->record_enable_cpu(cpu), -EINVAL);
    EXPECT_EQ(rb->record_off_cpu(cpu), -EINVAL);
    EXPECT_EQ(rb->record_on_cpu(cpu), -EINVAL);
    EXPECT_EQ(rb->reset_cpu(cpu), -EINVAL);
    EXPECT_EQ(rb->cpu_buffer(cpu), nullptr);
    EXPECT_EQ(rb->cpu_owner(cpu), 0);
    RingBuffer::Iterator it(*rb, cpu);
    EXPECT_EQ(it.status(), -EINVAL);
    EXPECT_FALSE(it.next(&ev));
  }
  // None of that touched CPU 0: still writable, its event still there.
  EXPECT_EQ(rb->write(&v, sizeof v), 0);
  EXPECT_EQ(rb->stats(0).entries, 2u);
  PageEvent ev;
  EXPECT_EQ(rb->consume(0, &ev), 0);
  EXPECT_EQ(rb->consume(0, &ev), 0);
  EXPECT_EQ(rb->consume(0, &ev), -EAGAIN);
  rb->free_read_page(page);
}

TEST(BadInput, BindThreadToNonexistentCpuIsRefused) {
  Options o = small_options();
  o.max_cpus = 2;  // CPU 2 is beyond the limit (below it, bind makes it)
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  std::thread t([&] {
    EXPECT_EQ(rb->bind_thread(2), -EINVAL);
    EXPECT_EQ(rb->bind_thread(0xffffffffu), -EINVAL);
    EXPECT_EQ(rb->current_cpu(), -1);
  });
  t.join();
  EXPECT_EQ(rb->cpu_owner(0), 0);
  EXPECT_EQ(rb->cpu_owner(1), 0);
}

TEST(BadInput, ReaderRefusesNullPagesAndEvents) {
  auto rb = RingBuffer::create(small_options());
  ASSERT_TRUE(rb);
  Bound b(*rb, 0);
  ASSERT_EQ(b.rc, 0);
  const uint64_t v = 7;
  ASSERT_EQ(rb->write(&v, sizeof v), 0);
  DataPage* null_page = nullptr;
  EXPECT_EQ(rb->read_page(&null_page, 0, false), -EINVAL);
  EXPECT_EQ(null_page, nullptr);
  EXPECT_EQ(rb->read_page(nullptr, 0, false), -EINVAL);
  EXPECT_EQ(rb->peek(0, nullptr), -EINVAL);
  EXPECT_EQ(rb->consume(0, nullptr), -EINVAL);
  // The event is still there.
  EXPECT_EQ(rb->stats(0).read, 0u);
  PageEvent ev;
  EXPECT_EQ(rb->consume(0, &ev), 0);
  EXPECT_EQ(load_u64(ev.data), v);
}

// swap_cpu needs the same geometry (page size, pages, mode, clock), a CPU
// both have, and two different buffers; otherwise -EINVAL and no change.
TEST(BadInput, SwapWithDifferentGeometryIsRefused) {
  const Options base = small_options();
  auto a = RingBuffer::create(base);
  ASSERT_TRUE(a);
  detail::CpuBuffer* a0 = a->cpu_buffer(0);
  std::vector<Options> others;
  Options o = base;
  o.page_size = 8192;
  others.push_back(o);
  o = base;
  o.pages_per_cpu = 5;
  others.push_back(o);
  o = base;
  o.mode = Mode::kProducerConsumer;
  others.push_back(o);
  o = base;
  o.clock = ClockKind::kRealtime;
  others.push_back(o);
  for (size_t i = 0; i < others.size(); i++) {
    SCOPED_TRACE(i);
    auto b = RingBuffer::create(others[i]);
    ASSERT_TRUE(b);
    detail::CpuBuffer* b0 = b->cpu_buffer(0);
    EXPECT_EQ(a->swap_cpu(*b, 0), -EINVAL);
    EXPECT_EQ(b->swap_cpu(*a, 0), -EINVAL);
    EXPECT_EQ(a->cpu_buffer(0), a0);
    EXPECT_EQ(b->cpu_buffer(0), b0);
    EXPECT_EQ(a0->buffer.load(), a.get());
    EXPECT_EQ(b0->buffer.load(), b.get());
    // The refused swap left no record-disable behind.
    EXPECT_EQ(a0->record_disabled.load(), 0u);
    EXPECT_EQ(b0->record_disabled.load(), 0u);
  }
  // Same geometry, but a CPU that one of them lacks; and a swap with itself.
  o = base;
  o.ncpus = 1;
  auto one = RingBuffer::create(o);
  ASSERT_TRUE(one);
  EXPECT_EQ(a->swap_cpu(*one, 1), -EINVAL);
  EXPECT_EQ(one->swap_cpu(*a, 1), -EINVAL);
  EXPECT_EQ(a->swap_cpu(*a, 0), -EINVAL);
  EXPECT_EQ(a->swap_cpu(*one, 5), -EINVAL);
  EXPECT_EQ(a->cpu_buffer(0), a0);
  // The control: same geometry swaps.
  auto twin = RingBuffer::create(base);
  ASSERT_TRUE(twin);
  detail::CpuBuffer* t0 = twin->cpu_buffer(0);
  EXPECT_EQ(a->swap_cpu(*twin, 0), 0);
  EXPECT_EQ(a->cpu_buffer(0), t0);
  EXPECT_EQ(twin->cpu_buffer(0), a0);
}

}  // namespace
