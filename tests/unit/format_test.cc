#include <gtest/gtest.h>

#include "rbtrace/format.h"

using namespace rbtrace;

TEST(Format, DataEventSizes) {
  EXPECT_EQ(data_event_size(1), 8u);
  EXPECT_EQ(data_event_size(4), 8u);
  EXPECT_EQ(data_event_size(5), 12u);
  EXPECT_EQ(data_event_size(112), 116u);
  EXPECT_EQ(data_event_size(113), 124u);  // type_len 0: 4 + 4 + 116
  EXPECT_EQ(data_event_size(0), 8u);
}
