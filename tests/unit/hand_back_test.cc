// Pages handed back to a recorded ring (RingBuffer::hold_reads, hand_back,
// release_reads; issue 11 part 5): while held, the CPU's reader gets
// nothing, not even the live buffer's full pages; then it gets the pages
// handed back, oldest first, before anything of the live buffer; a reader
// that stops (set_recorded(false)) drops what is still queued.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

namespace {

Options opts() {
  Options o;
  o.ncpus = 1;
  o.page_size = 4096;
  o.pages_per_cpu = 8;
  o.mode = Mode::kProducerConsumer;
  return o;
}

// Writes `n` 16-byte events tagged first, first+1, ... on CPU 0.
void write_tags(RingBuffer& rb, uint32_t first, uint32_t n) {
  for (uint32_t t = first; t < first + n; t++) {
    uint32_t p[4] = {t, 0, 0, 0};
    ASSERT_EQ(rb.write(p, sizeof p), 0);
  }
}

// The first tag of the page read_page hands out, or -errno.
int64_t first_tag(RingBuffer& rb, DataPage** page, bool full = true) {
  const int n = rb.read_page(page, 0, full);
  if (n <= 0) return n;
  PageWalker w((*page)->data, static_cast<uint32_t>((*page)->commit & kCommitMask), (*page)->time_stamp);
  PageEvent e;
  if (!w.next(&e)) return -1;
  uint32_t t;
  std::memcpy(&t, e.data, sizeof t);
  return t;
}

}  // namespace

TEST(HandBack, HeldReadsThenHandedBackPagesFirstThenLive) {
  auto rb = RingBuffer::create(opts());
  ASSERT_TRUE(rb);
  rb->set_recorded(true);
  ASSERT_EQ(rb->bind_thread(0), 0);
  DataPage* page = rb->alloc_read_page();
  ASSERT_NE(page, nullptr);

  // Two pages "handed back" (as a snapshot would: pages read_page produced
  // from another ring, written to a spool), tags 1000.. and 2000..
  auto other = RingBuffer::create(opts());
  ASSERT_TRUE(other);
  std::vector<uint32_t> firsts;
  const int spool = memfd_create("spool", MFD_CLOEXEC);
  ASSERT_GE(spool, 0);
  uint64_t off = 0;
  for (uint32_t base : {1000u, 2000u}) {
    ASSERT_EQ(other->bind_thread(0), 0);
    write_tags(*other, base, 10);
    other->unbind_thread();
    DataPage* p = other->alloc_read_page();
    ASSERT_GT(other->read_page(&p, 0, false), 0);
    ASSERT_EQ(pwrite(spool, p, 4096, static_cast<off_t>(off)), 4096);
    off += 4096;
    other->free_read_page(p);
  }

  // The live buffer has full pages of tags 1.. .
  write_tags(*rb, 1, 600);  // > 2 pages of 16-byte events
  rb->hold_reads(0);
  EXPECT_EQ(first_tag(*rb, &page), -EAGAIN) << "read while held";
  EXPECT_EQ(first_tag(*rb, &page, false), -EAGAIN);
  ASSERT_EQ(rb->hand_back(0, spool, 0, 2), 0);
  close(spool);  // hand_back keeps its own descriptor
  EXPECT_EQ(first_tag(*rb, &page), 1000);  // held, but handed-back pages flow
  EXPECT_EQ(first_tag(*rb, &page), 2000);
  EXPECT_EQ(first_tag(*rb, &page), -EAGAIN) << "live read while still held";
  rb->release_reads(0);
  EXPECT_EQ(first_tag(*rb, &page), 1);  // now the live buffer
  rb->free_read_page(page);
  rb->unbind_thread();
}

TEST(HandBack, StoppingTheRecordingDropsWhatIsQueued) {
  auto rb = RingBuffer::create(opts());
  ASSERT_TRUE(rb);
  rb->set_recorded(true);
  const int spool = memfd_create("spool", MFD_CLOEXEC);
  ASSERT_GE(spool, 0);
  std::vector<unsigned char> junk(4096, 0);
  DataPage* jp = reinterpret_cast<DataPage*>(junk.data());
  jp->commit = 16;
  ASSERT_EQ(pwrite(spool, junk.data(), 4096, 0), 4096);
  ASSERT_EQ(rb->hand_back(0, spool, 0, 1), 0);
  close(spool);
  rb->set_recorded(false);
  EXPECT_FALSE(rb->recorded());
  DataPage* page = rb->alloc_read_page();
  EXPECT_EQ(rb->read_page(&page, 0, false), -EAGAIN);  // nothing queued, nothing live
  rb->free_read_page(page);
  EXPECT_EQ(rb->hand_back(5, 0, 0, 1), -EINVAL);
}
