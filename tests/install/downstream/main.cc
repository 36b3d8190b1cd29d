// Built against the *installed* rbtrace: the headers, the library and the
// CMake package are all that a user gets.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <rbtrace/rbtrace.h>

RBTRACE_EVENT(downstream, hello, ((uint32_t, n))((rbtrace::str, who)))

TEST_CASE("an installed rbtrace records and reads back typed events") {
  rbtrace::Options o;
  o.ncpus = 1;
  auto rb = rbtrace::RingBuffer::create(o);
  REQUIRE(rb);
  for (uint32_t i = 0; i < 100; i++)
    REQUIRE(rbtrace_events::downstream_hello::emit(*rb, i, "world") == 0);
  rbtrace::PageEvent ev;
  for (uint32_t i = 0; i < 100; i++) {
    REQUIRE(rb->consume(0, &ev) == 0);
    REQUIRE(rbtrace::describe_record(ev.data, ev.length) ==
            "downstream:hello n=" + std::to_string(i) + " who=world");
  }
  REQUIRE(rb->consume(0, &ev) == -EAGAIN);
  REQUIRE(rb->stats(0).entries == 100);
}
