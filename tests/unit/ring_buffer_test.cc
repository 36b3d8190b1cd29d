#include <gtest/gtest.h>

#include "rbtrace/rbtrace.h"

using namespace rbtrace;

TEST(RingBuffer, WriteAndConsume) {
  Options o;
  o.ncpus = 2;
  auto rb = RingBuffer::create(o);
  ASSERT_TRUE(rb);
  ASSERT_EQ(rb->bind_thread(1), 0);
  for (uint32_t i = 0; i < 1000; i++) ASSERT_EQ(rb->write(&i, sizeof i), 0);
  PageEvent ev;
  uint64_t prev = 0;
  for (uint32_t i = 0; i < 1000; i++) {
    ASSERT_EQ(rb->consume(1, &ev), 0) << i;
    uint32_t v;
    memcpy(&v, ev.data, 4);
    ASSERT_EQ(v, i);
    ASSERT_GE(ev.ts, prev);
    prev = ev.ts;
  }
  EXPECT_EQ(rb->consume(1, &ev), -EAGAIN);
  rb->unbind_thread();
}
